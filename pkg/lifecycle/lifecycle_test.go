package lifecycle_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/lifecycle"
	"github.com/rdev-dev/rdev/pkg/lifecycle/lifecycletest"
)

// part is a component whose work in flight is a count of held jobs, and
// which records its starts and stops in a shared journal.
type part struct {
	name    string
	journal *journal
	failAt  bool // Start fails

	mu      sync.Mutex
	started bool
	stopped bool
	jobs    sync.WaitGroup
	held    atomic.Int64
}

type journal struct {
	mu    sync.Mutex
	lines []string
}

func (j *journal) add(s string) { j.mu.Lock(); j.lines = append(j.lines, s); j.mu.Unlock() }

func (j *journal) String() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return strings.Join(j.lines, " ")
}

func (p *part) Start(context.Context) error {
	if p.failAt {
		return errors.New("boom")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.started = true
	p.journal.add("start:" + p.name)
	return nil
}

func (p *part) Ready(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.started || p.stopped {
		return errors.New("not serving")
	}
	return nil
}

func (p *part) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	first := p.started && !p.stopped
	p.stopped = true
	p.mu.Unlock()
	if first {
		p.journal.add("stop:" + p.name)
	}
	done := make(chan struct{})
	go func() { p.jobs.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *part) Waiting() string {
	if n := p.held.Load(); n > 0 {
		return fmt.Sprintf("%d running jobs", n)
	}
	return ""
}

// hold puts one job in flight until release.
func (p *part) hold() (release func(), done <-chan error) {
	p.jobs.Add(1)
	p.held.Add(1)
	ch := make(chan error, 1)
	var once sync.Once
	return func() {
		once.Do(func() { p.held.Add(-1); p.jobs.Done(); ch <- nil })
	}, ch
}

func TestPartConforms(t *testing.T) {
	t.Parallel()
	lifecycletest.Run(t, lifecycletest.Harness{
		New: func(*testing.T) lifecycle.Component { return &part{name: "p", journal: &journal{}} },
		Busy: func(_ *testing.T, c lifecycle.Component) (func(), <-chan error) {
			return c.(*part).hold()
		},
		Waits: true,
	})
}

// A group is a component too: it passes the same suite.
func TestGroupConforms(t *testing.T) {
	t.Parallel()
	lifecycletest.Run(t, lifecycletest.Harness{
		New: func(t *testing.T) lifecycle.Component {
			g := lifecycle.NewGroup(slog.New(slog.NewTextHandler(t.Output(), nil)))
			j := &journal{}
			g.Add("a", &part{name: "a", journal: j}, 0)
			g.Add("b", &part{name: "b", journal: j}, 0)
			return g
		},
	})
}

// Components start in order and stop in reverse; a failed start stops
// those already started and names the one that failed.
func TestGroupOrder(t *testing.T) {
	t.Parallel()
	j := &journal{}
	g := lifecycle.NewGroup(slog.New(slog.DiscardHandler))
	for _, n := range []string{"a", "b", "c"} {
		g.Add(n, &part{name: n, journal: j}, 0)
	}
	if err := g.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := g.Ready(t.Context()); err != nil {
		t.Fatalf("ready: %v", err)
	}
	if err := g.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, want := j.String(), "start:a start:b start:c stop:c stop:b stop:a"; got != want {
		t.Errorf("journal %q, want %q", got, want)
	}

	j = &journal{}
	g = lifecycle.NewGroup(slog.New(slog.DiscardHandler))
	g.Add("a", &part{name: "a", journal: j}, 0)
	g.Add("b", &part{name: "b", journal: j}, 0)
	g.Add("c", &part{name: "c", journal: j, failAt: true}, 0)
	g.Add("d", &part{name: "d", journal: j}, 0)
	err := g.Start(t.Context())
	if err == nil || !strings.Contains(err.Error(), "start c: boom") {
		t.Fatalf("Start: %v, want the failure of c", err)
	}
	if got, want := j.String(), "start:a start:b stop:b stop:a"; got != want {
		t.Errorf("journal %q, want %q", got, want)
	}
}

// A shutdown held by work in flight says what it waits for; its context
// ending (the second signal) ends it at once.
func TestGroupSaysWhatItWaitsFor(t *testing.T) {
	t.Parallel()
	logs := make(logLines, 64)
	g := lifecycle.NewGroup(slog.New(slog.NewTextHandler(logs, nil)))
	w := &part{name: "worker", journal: &journal{}}
	g.Add("worker", w, 0)
	if err := g.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	release, _ := w.hold()
	defer release()
	w.hold()
	ctx, force := context.WithCancelCause(t.Context())
	stopped := make(chan error, 1)
	go func() { stopped <- g.Shutdown(ctx) }()
	deadline := time.After(lifecycletest.Bound)
	for said := ""; !strings.Contains(said, `msg="waiting for work in flight" component=worker for="2 running jobs"`); {
		select {
		case said = <-logs:
		case err := <-stopped:
			t.Fatalf("Shutdown returned (%v) with jobs running", err)
		case <-deadline:
			t.Fatal("no log of what the shutdown waits for")
		}
	}
	force(errors.New("second interrupt"))
	select {
	case err := <-stopped:
		if err == nil || !strings.Contains(err.Error(), "second interrupt") {
			t.Errorf("forced Shutdown: %v, want the cause", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("forced Shutdown did not return")
	}
}

// logLines receives each log line written to it (dropped when full).
type logLines chan string

func (l logLines) Write(p []byte) (int, error) {
	select {
	case l <- string(p):
	default:
	}
	return len(p), nil
}
