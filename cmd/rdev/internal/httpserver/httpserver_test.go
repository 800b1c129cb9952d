package httpserver_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/rdev-dev/rdev/cmd/rdev/internal/httpserver"
)

func get(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

// Readiness follows its checks and fails for good once draining; a
// panicking handler answers 500 in rdev's error body and the server lives on.
func TestReadinessDrainAndPanics(t *testing.T) {
	t.Parallel()
	s, err := httpserver.New(context.Background(), "127.0.0.1:0", nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var natsDown atomic.Bool
	s.AddReadyCheck("nats", func(context.Context) error {
		if natsDown.Load() {
			return errors.New("not connected")
		}
		return nil
	})
	s.Echo.GET("/boom", func(echo.Context) error { panic("boom") })
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	base := "http://" + s.Addr()

	if code, _ := get(t, base+"/readyz"); code != http.StatusOK {
		t.Fatalf("ready: %d", code)
	}
	natsDown.Store(true)
	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable || body["failed"] == nil {
		t.Fatalf("NATS down: %d %v, want 503 naming the failed check", code, body)
	}
	natsDown.Store(false)
	if code, body := get(t, base+"/boom"); code != http.StatusInternalServerError || body["error"] == nil {
		t.Fatalf("panic: %d %v, want 500 with an error body", code, body)
	}
	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Fatalf("after a panic the server must live on: %d", code)
	}
	s.Drain()
	if code, _ := get(t, base+"/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("draining: %d, want 503", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve after shutdown: %v", err)
	}
}

// X-Forwarded-For is believed only from configured proxies: by default a
// forged header changes nothing, and loopback is not trusted implicitly.
func TestClientAddress(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		trusted []string
		want    string
	}{
		{nil, "127.0.0.1"},
		{[]string{"10.0.0.0/8"}, "127.0.0.1"},
		{[]string{"127.0.0.0/8"}, "203.0.113.7"},
	} {
		s, err := httpserver.New(context.Background(), "127.0.0.1:0", tc.trusted, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		s.Echo.GET("/ip", func(c echo.Context) error { return c.String(http.StatusOK, c.RealIP()) })
		go func() { _ = s.Serve() }()
		req, _ := http.NewRequest(http.MethodGet, "http://"+s.Addr()+"/ip", nil)
		req.Header.Set("X-Forwarded-For", "203.0.113.7")
		req.Header.Set("X-Real-IP", "203.0.113.8")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != tc.want {
			t.Errorf("trusted %v: client %q, want %q", tc.trusted, b, tc.want)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = s.Shutdown(ctx)
		cancel()
	}
	if _, err := httpserver.New(context.Background(), "127.0.0.1:0", []string{"nope"}, slog.New(slog.DiscardHandler)); err == nil {
		t.Error("a bad trusted proxy range was accepted")
	}
}
