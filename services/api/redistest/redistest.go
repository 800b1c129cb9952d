// Package redistest starts a real redis-server process per test, so the
// Redis adapters and the processes using them (cmd/rdev) are tested
// against the real thing, including it dying or hanging.
package redistest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// EnvURL names the environment variable that points tests at an existing
// Redis instead of starting one (then Kill, Restart, Pause and Resume
// skip the test).
const EnvURL = "RDEV_TEST_REDIS_URL"

const readyTimeout = 10 * time.Second

// Server is one redis-server for one test: on a unix socket in its own
// temporary directory, without persistence, stopped in t.Cleanup.
type Server struct {
	t        testing.TB
	url      string
	external bool
	dir      string
	socket   string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// Start starts a redis-server for t, or uses the one named by
// RDEV_TEST_REDIS_URL. It fails the test if redis-server is not installed.
func Start(t testing.TB) *Server {
	t.Helper()
	if u := os.Getenv(EnvURL); u != "" {
		if _, err := redis.ParseURL(u); err != nil {
			t.Fatalf("%s=%q: %v", EnvURL, u, err)
		}
		return &Server{t: t, url: u, external: true}
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server not found on PATH (apt-get install redis-server, or set %s): %v", EnvURL, err)
	}
	// A short directory of our own: unix socket paths are limited to about
	// 100 bytes, which t.TempDir() with a long test name can exceed.
	dir, err := os.MkdirTemp("", "rdev-redis-")
	if err != nil {
		t.Fatalf("redis temp dir: %v", err)
	}
	s := &Server{t: t, dir: dir, socket: filepath.Join(dir, "redis.sock")}
	s.url = (&url.URL{Scheme: "unix", Path: s.socket}).String()
	t.Cleanup(func() {
		s.stop()
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove redis dir: %v", err)
		}
	})
	s.start()
	return s
}

// URL returns a unix:// (or the configured) URL for redis.ParseURL.
func (s *Server) URL() string { return s.url }

// Client returns a client of the server, closed in t.Cleanup. It honours
// context deadlines (ContextTimeoutEnabled), as production clients should.
func (s *Server) Client(t testing.TB) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(s.url)
	if err != nil {
		t.Fatalf("parse %q: %v", s.url, err)
	}
	opt.ContextTimeoutEnabled = true
	c := redis.NewClient(opt)
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Logf("close redis client: %v", err)
		}
	})
	return c
}

// Kill SIGKILLs the server and waits until it has exited: Redis gone.
func (s *Server) Kill() {
	s.t.Helper()
	s.requireOwn("Kill")
	s.stop()
}

// Restart starts the server again on the same socket (empty: there is no
// persistence) and waits until it answers.
func (s *Server) Restart() {
	s.t.Helper()
	s.requireOwn("Restart")
	s.stop()
	s.start()
}

// Pause SIGSTOPs the server: connections stay open and data stays in
// memory, but nothing answers, like a Redis that hangs or a network
// partition. Resume undoes it.
func (s *Server) Pause() {
	s.t.Helper()
	s.requireOwn("Pause")
	s.signal(syscall.SIGSTOP)
}

// Resume SIGCONTs a paused server.
func (s *Server) Resume() {
	s.t.Helper()
	s.requireOwn("Resume")
	s.signal(syscall.SIGCONT)
}

func (s *Server) requireOwn(op string) {
	s.t.Helper()
	if s.external {
		s.t.Skipf("%s needs a redis-server of its own; %s is set", op, EnvURL)
	}
}

func (s *Server) signal(sig syscall.Signal) {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		s.t.Fatalf("redis-server is not running")
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("signal redis-server: %v", err)
	}
}

func (s *Server) start() {
	s.t.Helper()
	logFile := filepath.Join(s.dir, "redis.log")
	// The test's context ends the server with the test even if a cleanup
	// is skipped.
	cmd := exec.CommandContext(s.t.Context(), "redis-server",
		"--port", "0",
		"--unixsocket", s.socket,
		"--unixsocketperm", "700",
		"--dir", s.dir,
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--logfile", logFile,
	)
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()

	c := redis.NewClient(&redis.Options{Network: "unix", Addr: s.socket, MaxRetries: -1, DialTimeout: time.Second})
	defer func() { _ = c.Close() }() // a readiness probe: nothing to lose
	deadline := time.Now().Add(readyTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(logFile)
			s.t.Fatalf("redis-server exited before answering (%v): %s", waitErr, log)
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logFile)
			s.t.Fatalf("redis-server did not answer PING within %v: %v\n%s", readyTimeout, err, log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop kills the process, if running, and waits for it.
func (s *Server) stop() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	// SIGKILL works on a stopped (paused) process too.
	if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		s.t.Errorf("kill redis-server: %v", err)
	}
	select {
	case <-exited:
	case <-time.After(readyTimeout):
		s.t.Errorf("redis-server (pid %d) did not exit after SIGKILL", cmd.Process.Pid)
	}
}

// String describes the server for test logs.
func (s *Server) String() string { return fmt.Sprintf("redis %s", s.url) }
