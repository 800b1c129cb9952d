// Package ui serves rdev's web dashboard: hand-written HTML, CSS and
// JavaScript modules embedded in the binary, under /ui/. The page talks to
// the same origin's /v1 API with the API key the user signs in with (kept
// in session storage), so it needs no server state of its own. Every URL
// it uses is relative, which lets a proxy serve it under a path prefix.
package ui

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// Path is where the dashboard is served.
const Path = "/ui/"

// assets are the dashboard's files; there is no build step.
//
//go:embed assets
var assets embed.FS

// contentSecurityPolicy lets the page load only its own files and talk
// only to its own origin: no inline scripts or style attributes, no
// third-party hosts, no framing.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Config is what the page learns from the server at /ui/config.json.
type Config struct {
	// TraceURL links a job's trace id to a tracing UI: "{trace_id}" in
	// it is replaced by the id (e.g.
	// "https://jaeger.example/trace/{trace_id}"). Empty shows the id
	// without a link.
	TraceURL string `json:"trace_url,omitempty"`
}

// Register serves the dashboard on e under Path.
func Register(e *echo.Echo, cfg Config) {
	files, _ := fs.Sub(assets, "assets") // cannot fail: the directory is embedded
	static := http.StripPrefix(strings.TrimSuffix(Path, "/"), http.FileServerFS(files))
	conf, _ := json.Marshal(cfg) // cannot fail: strings
	secure := func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			h := c.Response().Header()
			h.Set("Content-Security-Policy", contentSecurityPolicy)
			h.Set("X-Content-Type-Options", "nosniff")
			h.Set("Referrer-Policy", "no-referrer")
			h.Set("X-Frame-Options", "DENY")
			// Assets change with the binary; revalidating is cheap (the
			// embedded files carry no modification time, so every request
			// is answered in full, which is a few kilobytes).
			h.Set("Cache-Control", "no-cache")
			return next(c)
		}
	}
	// A relative redirect keeps a proxy's path prefix.
	e.GET(strings.TrimSuffix(Path, "/"), func(c echo.Context) error {
		return c.Redirect(http.StatusMovedPermanently, "ui/")
	}, secure)
	e.GET(Path+"config.json", func(c echo.Context) error {
		return c.JSONBlob(http.StatusOK, conf)
	}, secure)
	e.GET(Path+"*", echo.WrapHandler(static), secure)
}
