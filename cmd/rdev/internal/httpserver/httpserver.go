// Package httpserver runs rdev's HTTP endpoints: an Echo instance with
// rdev's error body for router errors, panic recovery, health and
// readiness, and a graceful shutdown.
package httpserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/rdev-dev/rdev/pkg/access/accesshttp"
)

// ReadyCheck reports whether a dependency is usable; nil means ready.
type ReadyCheck func(ctx context.Context) error

// Server is one HTTP listener serving registered services.
type Server struct {
	Echo     *echo.Echo
	srv      *http.Server
	ln       net.Listener
	checks   map[string]ReadyCheck
	draining atomic.Bool
	log      *slog.Logger
}

// New listens on addr (port 0 picks one) and returns a Server whose Echo
// instance the caller registers routes on before Serve. X-Forwarded-For is
// believed only from the trusted proxy CIDRs; with none, the client
// address is the TCP peer's.
func New(ctx context.Context, addr string, trustedProxies []string, log *slog.Logger) (*Server, error) {
	extract, err := ipExtractor(trustedProxies)
	if err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.IPExtractor = extract
	s := &Server{Echo: e, ln: ln, checks: map[string]ReadyCheck{}, log: log}
	e.HTTPErrorHandler = accesshttp.ErrorHandler(log)
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{
		LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
			log.Error("handler panicked", "path", c.Path(), "err", err, "stack", string(stack))
			return err
		},
	}))
	e.GET("/healthz", func(c echo.Context) error { return c.JSON(http.StatusOK, map[string]string{"status": "ok"}) })
	e.GET("/readyz", s.ready)
	s.srv = &http.Server{
		Handler:           e,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		// No WriteTimeout: SSE responses last as long as their job; the
		// streamer sets per-write deadlines itself.
		IdleTimeout: 120 * time.Second,
		ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// AddReadyCheck makes /readyz depend on check.
func (s *Server) AddReadyCheck(name string, check ReadyCheck) { s.checks[name] = check }

// Serve serves until Shutdown; it returns nil after a clean shutdown.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Drain makes /readyz fail so load balancers stop sending traffic.
func (s *Server) Drain() { s.draining.Store(true) }

// Shutdown stops accepting connections and waits for in-flight requests
// until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.Drain()
	return s.srv.Shutdown(ctx)
}

func (s *Server) ready(c echo.Context) error {
	if s.draining.Load() {
		return accesshttp.WriteError(c, http.StatusServiceUnavailable, "draining", "the server is shutting down")
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	failed := map[string]string{}
	for name, check := range s.checks {
		if err := check(ctx); err != nil {
			failed[name] = err.Error()
		}
	}
	if len(failed) > 0 {
		return c.JSON(http.StatusServiceUnavailable, map[string]any{"status": "unready", "failed": failed})
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}

func ipExtractor(trusted []string) (echo.IPExtractor, error) {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect(), nil
	}
	// Echo trusts loopback, link-local and private ranges by default;
	// only the configured ranges may vouch for a client here.
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, s := range trusted {
		_, n, err := net.ParseCIDR(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("trusted proxy %q: want a CIDR such as 10.0.0.0/8", s)
		}
		opts = append(opts, echo.TrustIPRange(n))
	}
	return echo.ExtractIPFromXFFHeader(opts...), nil
}
