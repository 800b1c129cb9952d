// Package lifecycletest is the conformance suite of lifecycle.Component:
// every component of rdev runs it, so each starts, reports readiness,
// drains its work in flight and stops on a forced stop the same way.
package lifecycletest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/lifecycle"
)

// Harness builds the component under test and puts work in flight on it.
type Harness struct {
	// New returns a new, unstarted component; t cleans up what it needs.
	New func(t *testing.T) lifecycle.Component
	// Busy puts work in flight on a started, ready component. The work
	// ends when release is called, or when Shutdown ends it (see Waits);
	// done then delivers its outcome (nil: it ended well, e.g. a job
	// succeeded or a client was told to reconnect). Nil: the component
	// has no work of its own in flight (its requests belong to the HTTP
	// server, which drains them before it).
	Busy func(t *testing.T, c lifecycle.Component) (release func(), done <-chan error)
	// Waits says that Shutdown waits for released work (a running job);
	// otherwise Shutdown itself ends the work (an SSE stream is told to
	// reconnect elsewhere).
	Waits bool
}

// Bound is how long any one step may take.
const Bound = 20 * time.Second

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	t.Run("StartReadyShutdown", func(t *testing.T) {
		t.Parallel()
		c := h.New(t)
		if err := c.Ready(t.Context()); err == nil {
			t.Error("ready before Start")
		}
		start(t, c)
		shutdown(t, c)
		if err := c.Ready(t.Context()); err == nil {
			t.Error("still ready after Shutdown")
		}
	})
	t.Run("ShutdownWithoutStart", func(t *testing.T) {
		t.Parallel()
		c := h.New(t)
		shutdown(t, c)
		shutdown(t, c)
	})
	t.Run("DoubleShutdown", func(t *testing.T) {
		t.Parallel()
		c := h.New(t)
		start(t, c)
		shutdown(t, c)
		shutdown(t, c)
	})
	if h.Busy == nil {
		return
	}
	t.Run("ShutdownWithWorkInFlight", func(t *testing.T) {
		t.Parallel()
		c := h.New(t)
		start(t, c)
		release, done := h.Busy(t, c)
		stopped := make(chan error, 1)
		go func() { stopped <- c.Shutdown(t.Context()) }()
		if h.Waits {
			waitingFor(t, c, stopped)
			select {
			case err := <-stopped:
				t.Fatalf("Shutdown returned (%v) while work was in flight", err)
			default:
			}
		}
		release()
		select {
		case err := <-stopped:
			if err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
		case <-time.After(Bound):
			t.Fatalf("Shutdown did not return within %s of the work's end", Bound)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("work in flight: %v", err)
			}
		case <-time.After(Bound):
			t.Fatal("the work in flight never ended")
		}
	})
	t.Run("ForcedStop", func(t *testing.T) {
		t.Parallel()
		c := h.New(t)
		start(t, c)
		release, _ := h.Busy(t, c)
		t.Cleanup(release)
		ctx, force := context.WithCancel(t.Context())
		stopped := make(chan error, 1)
		go func() { stopped <- c.Shutdown(ctx) }()
		if h.Waits {
			waitingFor(t, c, stopped)
		}
		force() // the second signal
		select {
		case err := <-stopped:
			if h.Waits && !errors.Is(err, context.Canceled) {
				t.Errorf("Shutdown after a forced stop: %v, want context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Shutdown still waits 5s after its context ended")
		}
	})
}

func start(t *testing.T, c lifecycle.Component) {
	t.Helper()
	step(t, "Start", c.Start)
	t.Cleanup(func() { _ = c.Shutdown(context.Background()) })
	var err error
	if e := poll(func() bool { err = c.Ready(t.Context()); return err == nil }, nil); e != nil {
		t.Fatalf("not ready: %v (%v)", err, e)
	}
}

func shutdown(t *testing.T, c lifecycle.Component) {
	t.Helper()
	step(t, "Shutdown", c.Shutdown)
}

// step runs one call of the lifecycle within Bound.
func step(t *testing.T, name string, call func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), Bound)
	defer cancel()
	if err := call(ctx); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

// waitingFor waits until the component's Shutdown says it waits for the
// work in flight.
func waitingFor(t *testing.T, c lifecycle.Component, stopped <-chan error) {
	t.Helper()
	w, ok := c.(lifecycle.Waiter)
	if !ok {
		t.Fatal("a component whose Shutdown waits for work must say for what (lifecycle.Waiter)")
	}
	if err := poll(func() bool { return w.Waiting() != "" }, stopped); err != nil {
		t.Fatalf("Shutdown never said what it waits for: %v", err)
	}
}

// poll checks cond every 10ms until it holds; it gives up after Bound,
// or when stopped delivers (the Shutdown under test returned).
func poll(cond func() bool, stopped <-chan error) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(Bound)
	for !cond() {
		select {
		case err := <-stopped:
			if err == nil {
				return errors.New("shutdown returned")
			}
			return fmt.Errorf("shutdown returned: %w", err)
		case <-deadline:
			return fmt.Errorf("not within %s", Bound)
		case <-tick.C:
		}
	}
	return nil
}
