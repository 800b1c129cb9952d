package ui_test

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
	"go.uber.org/goleak"

	"github.com/rdev-dev/rdev/services/api/ui"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func serve(t *testing.T, cfg ui.Config) string {
	t.Helper()
	e := echo.New()
	ui.Register(e, cfg)
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return srv.URL
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// Every answer under /ui carries the strict policy; the page, its
// scripts and styles are served with their types; /ui redirects
// relatively, so a proxy's path prefix survives.
func TestServes(t *testing.T) {
	t.Parallel()
	base := serve(t, ui.Config{TraceURL: "https://traces.example/t/{trace_id}"})
	for path, wantType := range map[string]string{
		"/ui/": "text/html", "/ui/app.css": "text/css", "/ui/js/app.js": "text/javascript",
		"/ui/config.json": "application/json", "/ui/favicon.svg": "image/svg+xml",
	} {
		resp, body := get(t, base+path)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), wantType) {
			t.Errorf("%s: %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		csp := resp.Header.Get("Content-Security-Policy")
		for _, d := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, d) {
				t.Errorf("%s: policy %q lacks %q", path, csp, d)
			}
		}
		if strings.Contains(csp, "unsafe") {
			t.Errorf("%s: policy %q allows unsafe sources", path, csp)
		}
		if path == "/ui/config.json" && body != `{"trace_url":"https://traces.example/t/{trace_id}"}` {
			t.Errorf("config %s", body)
		}
	}
	resp, _ := get(t, base+"/ui")
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "ui/" {
		t.Errorf("/ui: %d to %q, want a relative redirect to ui/", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := get(t, base+"/ui/nope.js"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("a missing file: %d", resp.StatusCode)
	}
}

// The assets need nothing the policy forbids, nothing from another host,
// and write no markup from strings (job output is text, never HTML).
func TestAssetsFollowThePolicy(t *testing.T) {
	t.Parallel()
	forbidden := map[string]*regexp.Regexp{
		"inline script":    regexp.MustCompile(`<script(?:\s+type="module")?>`),
		"style attribute":  regexp.MustCompile(`\sstyle=`),
		"event attribute":  regexp.MustCompile(`\son[a-z]+=`),
		"another host":     regexp.MustCompile(`(?:src|href)="(?:https?:)?//`),
		"markup from text": regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write`),
		"eval":             regexp.MustCompile(`\beval\(|new Function\(`),
		"absolute path":    regexp.MustCompile(`(?:src|href)="/|fetch\('/`),
	}
	n := 0
	err := filepath.WalkDir("assets", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		n++
		for what, re := range forbidden {
			if loc := re.FindIndex(b); loc != nil {
				t.Errorf("%s: %s: %q", path, what, b[loc[0]:loc[1]])
			}
		}
		return nil
	})
	if err != nil || n < 10 {
		t.Fatalf("walked %d assets: %v", n, err)
	}
}
