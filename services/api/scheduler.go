package api

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/rdev-dev/rdev/services/api/internal/schedules"
)

// DefaultSweepInterval is how often each API replica looks for due
// schedule runs.
const DefaultSweepInterval = time.Second

// Scheduler fires the runs of cron schedules: a lifecycle component every
// API replica runs. No replica is special and none holds a lock: each
// sweeps every schedule, and a scheduled time still becomes one job (see
// schedules.Service.Sweep).
type Scheduler struct {
	svc      *schedules.Service
	interval time.Duration
	log      *slog.Logger

	mu      sync.Mutex
	started bool
	stopped bool
	stop    context.CancelFunc
	quit    chan struct{}
	done    chan struct{}
}

// Scheduler returns the API's schedule firing loop, sweeping every
// interval (DefaultSweepInterval when 0).
func (s *Service) Scheduler(interval time.Duration) *Scheduler {
	if interval <= 0 {
		interval = DefaultSweepInterval
	}
	return &Scheduler{svc: s.schedules, interval: interval, log: s.log.With("component", "scheduler")}
}

// Sweep fires what is due now, once; the loop calls it every interval.
func (c *Scheduler) Sweep(ctx context.Context) error { return c.svc.Sweep(ctx) }

// Start begins sweeping until Shutdown.
func (c *Scheduler) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started || c.stopped {
		return nil
	}
	life, stop := context.WithCancel(context.WithoutCancel(ctx))
	c.started, c.stop, c.quit, c.done = true, stop, make(chan struct{}), make(chan struct{})
	go c.loop(life)
	return nil
}

func (c *Scheduler) loop(ctx context.Context) {
	defer close(c.done)
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		select {
		case <-c.quit:
			return
		case <-t.C:
		}
		if err := c.svc.Sweep(ctx); err != nil && !errors.Is(err, context.Canceled) {
			// The times stay due: the next sweep, here or elsewhere, fires them.
			c.log.Warn("schedule sweep incomplete", "err", err)
		}
	}
}

// Ready reports whether the loop runs.
func (c *Scheduler) Ready(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.stopped:
		return errors.New("shutting down")
	case !c.started:
		return errors.New("not started")
	}
	return nil
}

// Shutdown stops the loop, letting a sweep in flight end within ctx
// (then cancelling it: what it did not finish stays due).
func (c *Scheduler) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	first := !c.stopped
	c.stopped = true
	stop, quit, done := c.stop, c.quit, c.done
	c.mu.Unlock()
	if stop == nil {
		return nil
	}
	if first {
		close(quit)
	}
	defer stop()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
