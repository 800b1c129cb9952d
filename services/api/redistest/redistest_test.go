package redistest_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rdev-dev/rdev/services/api/redistest"
)

// Start gives a working server reachable through URL and Client; Kill
// makes it unreachable, Restart brings it back empty on the same URL, and
// Pause/Resume hang it while keeping its data.
func TestServerLifecycle(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	opt, err := redis.ParseURL(s.URL())
	if err != nil {
		t.Fatalf("ParseURL(%q): %v", s.URL(), err)
	}
	c := s.Client(t)
	ctx := t.Context()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}

	s.Pause()
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	err = c.Get(short, "k").Err()
	cancel()
	if err == nil {
		t.Fatal("GET on a paused server answered")
	}
	s.Resume()
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("GET after Resume = %q, %v; want the data kept", v, err)
	}

	s.Kill()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("PING on a killed server answered")
	}
	s.Restart()
	other := redis.NewClient(opt)
	defer other.Close()
	if err := other.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after Restart on the same URL: %v", err)
	}
	if n, err := other.Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Fatalf("EXISTS after Restart = %d, %v; want an empty server", n, err)
	}
}

// Every Start is its own server.
func TestServersAreSeparate(t *testing.T) {
	t.Parallel()
	a, b := redistest.Start(t), redistest.Start(t)
	if a.URL() == b.URL() {
		t.Skip("both use the server of RDEV_TEST_REDIS_URL")
	}
	if err := a.Client(t).Set(t.Context(), "k", "a", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, _ := b.Client(t).Exists(t.Context(), "k").Result(); n != 0 {
		t.Fatal("a key set on one server is visible on another")
	}
}
