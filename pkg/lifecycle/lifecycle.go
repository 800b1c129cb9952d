// Package lifecycle runs the components of one process: it starts them in
// order, reports their combined readiness, and shuts them down in reverse
// order, saying what each shutdown still waits for. A second signal ends
// the shutdown at once (see Signals).
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"time"
)

// Component is one long-running part of a process: a service, an HTTP
// server. Its contract, which lifecycletest checks:
//
//   - Start returns once the component serves, or with the reason it
//     cannot. What it starts lives until Shutdown: ctx bounds starting
//     only.
//   - Ready returns nil while the component serves, and otherwise an
//     error saying why not (not started, shutting down, a dependency down).
//   - Shutdown is soft: the component stops taking new work, lets the work
//     in flight finish while ctx lasts (and within its own drain timeout,
//     if it has one), then cancels what is left and returns. When ctx ends
//     first (a forced stop) it returns promptly with ctx's error. It may be
//     called more than once, and before or without Start.
type Component interface {
	Start(ctx context.Context) error
	Ready(ctx context.Context) error
	Shutdown(ctx context.Context) error
}

// Waiter is implemented by a component whose Shutdown waits for work in
// flight: Waiting says for what ("2 running jobs"), "" for nothing.
type Waiter interface {
	Waiting() string
}

// Failer is implemented by a component that can fail after Start (a
// listener closed under it): the channel delivers that error.
type Failer interface {
	Failed() <-chan error
}

// Group is a list of components run as one: started in the order added,
// shut down in reverse. It is itself a Component.
type Group struct {
	log *slog.Logger
	// every is how often Shutdown repeats what it waits for.
	every time.Duration

	mu       sync.Mutex
	parts    []part
	started  int // parts[:started] are started
	stopping bool
}

type part struct {
	name    string
	c       Component
	timeout time.Duration
}

// NewGroup returns an empty group that logs to log.
func NewGroup(log *slog.Logger) *Group { return &Group{log: log, every: 5 * time.Second} }

// Add appends c under name. shutdownTimeout, when positive, bounds c's
// Shutdown (e.g. the HTTP server's); otherwise only the Shutdown's ctx
// and c's own drain timeout do.
func (g *Group) Add(name string, c Component, shutdownTimeout time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.parts = append(g.parts, part{name: name, c: c, timeout: shutdownTimeout})
}

// Start starts the components in order. When one fails, those already
// started are shut down again, in reverse, and its error is returned.
func (g *Group) Start(ctx context.Context) error {
	g.mu.Lock()
	parts := g.parts
	g.mu.Unlock()
	for i, p := range parts {
		if err := p.c.Start(ctx); err != nil {
			err = fmt.Errorf("start %s: %w", p.name, err)
			// The failed one may have started part of its work.
			g.mu.Lock()
			g.started = i + 1
			g.mu.Unlock()
			return errors.Join(err, g.Shutdown(context.WithoutCancel(ctx)))
		}
		g.mu.Lock()
		g.started = i + 1
		g.mu.Unlock()
	}
	return nil
}

// Ready is nil when every component is ready; otherwise it names those
// that are not. A group that is starting or shutting down is not ready.
func (g *Group) Ready(ctx context.Context) error {
	g.mu.Lock()
	parts, started, stopping := g.parts, g.started, g.stopping
	g.mu.Unlock()
	switch {
	case stopping:
		return errors.New("shutting down")
	case started < len(parts):
		return errors.New("starting")
	}
	var errs []error
	for _, p := range parts {
		if err := p.c.Ready(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.name, err))
		}
	}
	return errors.Join(errs...)
}

// Wait blocks until ctx ends (nil) or a started component fails (its
// error).
func (g *Group) Wait(ctx context.Context) error {
	g.mu.Lock()
	parts := g.parts[:g.started]
	g.mu.Unlock()
	failed := make(chan error, len(parts))
	stop := make(chan struct{})
	defer close(stop)
	for _, p := range parts {
		f, ok := p.c.(Failer)
		if !ok {
			continue
		}
		go func() {
			select {
			case err := <-f.Failed():
				failed <- fmt.Errorf("%s stopped: %w", p.name, err)
			case <-stop:
			}
		}()
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-failed:
		return err
	}
}

// Shutdown shuts the started components down in reverse order, each
// within ctx, logging what each still waits for. Once ctx ends (a second
// signal) the rest are told to stop at once and not waited for.
func (g *Group) Shutdown(ctx context.Context) error {
	g.mu.Lock()
	g.stopping = true
	parts := g.parts[:g.started]
	g.started = 0
	g.mu.Unlock()
	var errs []error
	for i := len(parts) - 1; i >= 0; i-- {
		if err := g.stop(ctx, parts[i]); err != nil {
			errs = append(errs, fmt.Errorf("shut down %s: %w", parts[i].name, err))
		}
	}
	return errors.Join(errs...)
}

func (g *Group) stop(ctx context.Context, p part) error {
	if p.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.timeout)
		defer cancel()
	}
	g.log.Info("stopping", "component", p.name)
	done := make(chan error, 1)
	go func() { done <- p.c.Shutdown(ctx) }()
	w, _ := p.c.(Waiter)
	say := func() {
		if w == nil {
			return
		}
		if what := w.Waiting(); what != "" {
			g.log.Info("waiting for work in flight", "component", p.name, "for", what)
		}
	}
	tick := time.NewTicker(g.every)
	defer tick.Stop()
	for first := true; ; first = false {
		var soon <-chan time.Time
		if first {
			// Quick shutdowns do not log; one that holds does, at once.
			soon = time.After(100 * time.Millisecond)
		}
		select {
		case err := <-done:
			if err != nil && ctx.Err() != nil {
				return fmt.Errorf("%w (%w)", err, context.Cause(ctx))
			}
			return err
		case <-soon:
			say()
		case <-tick.C:
			say()
		case <-ctx.Done():
			// The component is told (its ctx ended) but not waited for.
			return fmt.Errorf("abandoned: %w", context.Cause(ctx))
		}
	}
}

// Signals returns two contexts: soft ends at the first of sigs (shut
// down gracefully), forced at the second (stop waiting, exit now). stop
// releases the signals.
func Signals(parent context.Context, sigs ...os.Signal) (soft, forced context.Context, stop func()) {
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, sigs...)
	soft, cancelSoft := context.WithCancelCause(parent)
	forced, cancelForced := context.WithCancelCause(context.WithoutCancel(parent))
	quit := make(chan struct{})
	go func() {
		for n := 1; ; n++ {
			select {
			case s := <-ch:
				if n == 1 {
					cancelSoft(fmt.Errorf("%s: shutting down (again to stop at once)", s))
					continue
				}
				cancelForced(fmt.Errorf("second %s: stopping at once", s))
				return
			case <-quit:
				return
			}
		}
	}()
	var once sync.Once
	return soft, forced, func() {
		once.Do(func() {
			signal.Stop(ch)
			close(quit)
			cancelSoft(context.Canceled)
			cancelForced(context.Canceled)
		})
	}
}
