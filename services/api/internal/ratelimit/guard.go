package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/rdev-dev/rdev/services/api/internal/bounded"
)

// Policy says what a Guard answers when its backend cannot.
type Policy int

const (
	// FailOpen admits requests while the backend is unavailable: the API
	// keeps serving, unlimited, and OnDegraded reports it.
	FailOpen Policy = iota
	// FailClosed refuses requests while the backend is unavailable: Allow
	// returns an error wrapping ErrUnavailable.
	FailClosed
)

// ErrUnavailable is returned (wrapped, together with the cause) by a
// FailClosed Guard when its backend failed or timed out, or its breaker is
// open.
var ErrUnavailable = errors.New("rate limiter unavailable")

// Defaults of GuardConfig.
const (
	DefaultTimeout         = 100 * time.Millisecond
	DefaultBreakerFailures = 5
	DefaultBreakerCooldown = time.Second
)

// GuardConfig configures a Guard. Zero fields take the defaults.
type GuardConfig struct {
	// Policy is what Allow answers when the backend fails (default FailOpen).
	Policy Policy
	// Timeout bounds each backend call (default 100ms).
	Timeout time.Duration
	// OnDegraded, if set, is called with the cause on every decision made
	// without the backend (a warning metric or log line). It must be fast.
	OnDegraded func(err error)
	// OnBreakerChange, if set, is told each breaker state change
	// ("closed", "open", "half-open"); for metrics. It must be fast.
	OnBreakerChange func(from, to string)
	// BreakerFailures is how many consecutive backend failures open the
	// breaker (default 5). While open, calls do not reach the backend.
	BreakerFailures uint32
	// BreakerCooldown is how long the breaker stays open before one probe
	// call is let through (default 1s).
	BreakerCooldown time.Duration
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
}

// Guard is a Limiter in front of a shared backend that may fail: it bounds
// every call by a timeout, opens a circuit breaker after repeated failures
// so a dead backend costs nothing per request, and then answers by its
// Policy. Its Allow returns within Timeout (plus scheduling) even if the
// backend ignores its context. Caller cancellation is returned as is and
// does not count as a backend failure.
type Guard struct {
	next    Limiter
	cfg     GuardConfig
	breaker *gobreaker.CircuitBreaker[Decision]
}

// NewGuard wraps next with a timeout, a breaker and a failure policy.
func NewGuard(next Limiter, cfg GuardConfig) *Guard {
	cfg.setDefaults()
	g := &Guard{next: next, cfg: cfg}
	g.breaker = gobreaker.NewCircuitBreaker[Decision](gobreaker.Settings{
		Name:    "ratelimit",
		Timeout: cfg.BreakerCooldown,
		OnStateChange: func(_ string, from, to gobreaker.State) {
			if cfg.OnBreakerChange != nil {
				cfg.OnBreakerChange(from.String(), to.String())
			}
		},
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.ConsecutiveFailures >= cfg.BreakerFailures
		},
		IsExcluded: func(err error) bool { return errors.Is(err, bounded.ErrCallerGone) || errors.Is(err, ErrInvalidLimit) },
	})
	return g
}

// Allow implements Limiter. Without a limited check it answers without
// the backend. Admitted by the FailOpen policy, a request reports the
// limited check with the fewest Requests, with Remaining at Limit.
func (g *Guard) Allow(ctx context.Context, checks ...Check) (Decision, error) {
	if n, _ := limited(checks); n == 0 {
		return Decision{Allowed: true}, nil
	}
	// The backend call may outlive this one (see call): it gets its own copy.
	checks = slices.Clone(checks)
	d, err := g.breaker.Execute(func() (Decision, error) { return g.call(ctx, checks) })
	switch {
	case err == nil:
		return d, nil
	case errors.Is(err, bounded.ErrCallerGone), errors.Is(err, ErrInvalidLimit):
		return Decision{}, err
	}
	if g.cfg.OnDegraded != nil {
		g.cfg.OnDegraded(err)
	}
	if g.cfg.Policy == FailClosed {
		return Decision{}, fmt.Errorf("allow %q: %w: %w", keys(checks), ErrUnavailable, err)
	}
	d = Decision{Allowed: true, Remaining: math.MaxInt}
	for _, c := range checks {
		if !c.Limit.Unlimited() && c.Limit.Requests < d.Remaining {
			d.Limit, d.Remaining = c.Limit.Requests, c.Limit.Requests
		}
	}
	return d, nil
}

func keys(checks []Check) []string {
	ks := make([]string, len(checks))
	for i, c := range checks {
		ks[i] = c.Key
	}
	return ks
}

// call runs one backend call bounded by the timeout.
func (g *Guard) call(ctx context.Context, checks []Check) (Decision, error) {
	return bounded.Call(ctx, g.cfg.Timeout, "rate limiter backend", func(ctx context.Context) (Decision, error) {
		return g.next.Allow(ctx, checks...)
	})
}
