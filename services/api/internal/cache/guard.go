package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/rdev-dev/rdev/services/api/internal/bounded"
)

// Defaults of GuardConfig.
const (
	DefaultTimeout         = 100 * time.Millisecond
	DefaultBreakerFailures = 5
	// DefaultBreakerCooldown is short: after an outage the owed
	// invalidation is the breaker's probe, and until it runs other
	// replicas may still read entries this one could not delete. With the
	// default timeout and retry interval, a revoked key's entry is gone
	// within about 0.7s of Redis answering again.
	DefaultBreakerCooldown = 500 * time.Millisecond
	DefaultRetryInterval   = 100 * time.Millisecond
)

// GuardConfig configures a Guard. Zero fields take the defaults.
type GuardConfig struct {
	// Timeout bounds each backend call (default 100ms).
	Timeout time.Duration
	// OnDegraded, if set, is called with the cause whenever the Guard
	// answers without the backend (a warning metric or log line). It must
	// be fast.
	OnDegraded func(err error)
	// OnBreakerChange, if set, is told each breaker state change
	// ("closed", "open", "half-open"); for metrics. It must be fast.
	OnBreakerChange func(from, to string)
	// BreakerFailures is how many consecutive backend failures open the
	// breaker (default 5). While open, calls do not reach the backend.
	BreakerFailures uint32
	// BreakerCooldown is how long the breaker stays open before one probe
	// call is let through (default 500ms).
	BreakerCooldown time.Duration
	// RetryInterval is how often a pending invalidation is retried
	// (default 100ms).
	RetryInterval time.Duration
}

func (c *GuardConfig) setDefaults() {
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.BreakerFailures == 0 {
		c.BreakerFailures = DefaultBreakerFailures
	}
	if c.BreakerCooldown <= 0 {
		c.BreakerCooldown = DefaultBreakerCooldown
	}
	if c.RetryInterval <= 0 {
		c.RetryInterval = DefaultRetryInterval
	}
}

// ErrInvalidationPending is passed to OnDegraded for calls answered
// without the backend because a whole-cache invalidation is still owed.
var ErrInvalidationPending = errors.New("cache invalidation pending after a backend failure")

// Guard is a Cache in front of a shared backend that may fail. Every call
// is bounded by a timeout (even if the backend ignores its context) and
// goes through a circuit breaker; on failure Get is a miss and Set and
// Delete return nil, so the caller falls through to the system of record.
//
// Staleness rule: after any backend failure (a failed or timed-out call,
// or the breaker opening) the Guard cannot know whether a Delete, its own
// or another replica's in the same outage, was lost, so no entry written
// before can be trusted. It then answers every Get with a miss, skips Set
// and Delete, and retries Invalidate on the backend every RetryInterval
// until it succeeds; only then does it use the backend again. A revoked
// API key therefore never comes back from a stale entry when Redis
// returns. The cost is one whole-cache flush per outage.
//
// Delete and Invalidate are delivered even if the caller's context is
// canceled (within Timeout). A Guard runs one goroutine: call Close.
type Guard struct {
	next    Backend
	cfg     GuardConfig
	breaker *gobreaker.CircuitBreaker[struct{}]

	// dirty counts backend failures; clean is the dirty count covered by
	// the last successful invalidation. They differ while one is owed.
	dirty, clean atomic.Uint64

	wake      chan struct{}
	ctx       context.Context
	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
}

// NewGuard wraps next and starts the goroutine that retries pending
// invalidations; Close stops it.
func NewGuard(next Backend, cfg GuardConfig) *Guard {
	cfg.setDefaults()
	g := &Guard{next: next, cfg: cfg, wake: make(chan struct{}, 1), done: make(chan struct{})}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	g.breaker = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:    "cache",
		Timeout: cfg.BreakerCooldown,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.ConsecutiveFailures >= cfg.BreakerFailures
		},
		IsExcluded: func(err error) bool { return errors.Is(err, bounded.ErrCallerGone) || errors.Is(err, ErrInvalidTTL) },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			if to == gobreaker.StateOpen {
				g.markDirty()
			}
			if cfg.OnBreakerChange != nil {
				cfg.OnBreakerChange(from.String(), to.String())
			}
		},
	})
	go g.retryInvalidations()
	return g
}

// Close stops the invalidation retries; calls after Close still work but
// an invalidation owed is no longer retried (Get keeps missing). Safe to
// call more than once.
func (g *Guard) Close() {
	g.closeOnce.Do(func() {
		g.cancel()
		<-g.done
	})
}

// Get implements Cache: a miss on any backend failure or while an
// invalidation is owed; an error only when ctx is done.
func (g *Guard) Get(ctx context.Context, key string) ([]byte, bool, error) {
	before := g.dirty.Load()
	if before != g.clean.Load() {
		g.degraded(ErrInvalidationPending)
		return nil, false, nil
	}
	var value []byte
	var ok bool
	err := g.do(ctx, func(ctx context.Context) error {
		var err error
		value, ok, err = g.next.Get(ctx, key)
		return err
	})
	switch {
	case errors.Is(err, bounded.ErrCallerGone):
		return nil, false, fmt.Errorf("cache get %q: %w", key, err)
	case err != nil:
		g.failed(err)
		return nil, false, nil
	case g.dirty.Load() != before:
		// A failure overlapped this read: do not trust what it read.
		return nil, false, nil
	}
	return value, ok, nil
}

// Set implements Cache. It returns nil when the backend fails (the value
// simply is not cached) and ErrInvalidTTL for a ttl that is not positive.
func (g *Guard) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("cache set %q: %w", key, ErrInvalidTTL)
	}
	if g.pending() {
		g.degraded(ErrInvalidationPending)
		return nil
	}
	err := g.do(ctx, func(ctx context.Context) error { return g.next.Set(ctx, key, value, ttl) })
	if err != nil && !errors.Is(err, bounded.ErrCallerGone) {
		g.failed(err)
	}
	return nil
}

// Delete implements Cache. It always returns nil: a Delete the backend did
// not confirm makes the Guard owe a whole-cache invalidation instead.
func (g *Guard) Delete(ctx context.Context, keys ...string) error {
	if g.pending() {
		g.degraded(ErrInvalidationPending)
		return nil
	}
	err := g.do(context.WithoutCancel(ctx), func(ctx context.Context) error { return g.next.Delete(ctx, keys...) })
	if err != nil {
		g.failed(err)
	}
	return nil
}

// Invalidate implements Invalidator: it owes an invalidation at once (Gets
// miss from now on) and tries to deliver it; if that fails it is retried
// in the background. It always returns nil.
func (g *Guard) Invalidate(ctx context.Context) error {
	g.markDirty()
	g.tryInvalidate(context.WithoutCancel(ctx))
	return nil
}

// Pending reports whether an invalidation is owed (for health reporting).
func (g *Guard) Pending() bool { return g.pending() }

func (g *Guard) pending() bool { return g.dirty.Load() != g.clean.Load() }

func (g *Guard) markDirty() {
	g.dirty.Add(1)
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

func (g *Guard) failed(err error) {
	g.markDirty()
	g.degraded(err)
}

func (g *Guard) degraded(err error) {
	if g.cfg.OnDegraded != nil {
		g.cfg.OnDegraded(err)
	}
}

func (g *Guard) retryInvalidations() {
	defer close(g.done)
	tick := time.NewTicker(g.cfg.RetryInterval)
	defer tick.Stop()
	for {
		select {
		case <-g.ctx.Done():
			return
		case <-g.wake:
		case <-tick.C:
		}
		if g.pending() {
			g.tryInvalidate(g.ctx)
		}
	}
}

// tryInvalidate invalidates the backend once; on success it covers every
// failure counted before the attempt began (a failure during it owes
// another one).
func (g *Guard) tryInvalidate(ctx context.Context) {
	owed := g.dirty.Load()
	if err := g.do(ctx, g.next.Invalidate); err != nil {
		return
	}
	for {
		c := g.clean.Load()
		if c >= owed || g.clean.CompareAndSwap(c, owed) {
			return
		}
	}
}

// do runs fn through the breaker, bounded by the timeout.
func (g *Guard) do(ctx context.Context, fn func(context.Context) error) error {
	_, err := g.breaker.Execute(func() (struct{}, error) {
		return bounded.Call(ctx, g.cfg.Timeout, "cache backend", func(ctx context.Context) (struct{}, error) {
			return struct{}{}, fn(ctx)
		})
	})
	return err
}
