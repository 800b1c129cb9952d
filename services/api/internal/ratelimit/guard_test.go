package ratelimit_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/services/api/internal/ratelimit"
	"github.com/rdev-dev/rdev/services/api/internal/ratelimit/ratelimittest"
)

// faultyLimiter is a fault injector around a real adapter: it fails, or
// hangs ignoring its context, on demand.
type faultyLimiter struct {
	next  ratelimit.Limiter
	fail  atomic.Bool
	hang  chan struct{} // when non-nil and open, calls block until closed
	calls atomic.Int64
}

var errBackend = errors.New("backend down")

func (f *faultyLimiter) Allow(ctx context.Context, checks ...ratelimit.Check) (ratelimit.Decision, error) {
	f.calls.Add(1)
	if f.hang != nil {
		<-f.hang
	}
	if f.fail.Load() {
		return ratelimit.Decision{}, errBackend
	}
	return f.next.Allow(ctx, checks...)
}

type guardBundle struct {
	guard    *ratelimit.Guard
	backend  *faultyLimiter
	degraded atomic.Int64
}

// setupGuard returns a Guard in front of a fault injector. The short
// timeout is for a backend that hangs (hang non-nil); one that answers
// gets a generous timeout, and the breaker a cooldown that a burst of
// calls cannot outlast: on a loaded machine (load 10+ on 2 cores, -race)
// 50ms ran out before the backend's goroutine ran, and a burst of 10
// calls outlasted a cooldown of 100ms, each changing the counts the tests
// check.
func setupGuard(t *testing.T, policy ratelimit.Policy, hang chan struct{}) *guardBundle {
	t.Helper()
	timeout := healthyTimeout
	if hang != nil {
		timeout = 50 * time.Millisecond
	}
	b := &guardBundle{backend: &faultyLimiter{next: ratelimit.NewMemory(), hang: hang}}
	b.guard = ratelimit.NewGuard(b.backend, ratelimit.GuardConfig{
		Policy:          policy,
		Timeout:         timeout,
		OnDegraded:      func(error) { b.degraded.Add(1) },
		BreakerFailures: 3,
		BreakerCooldown: time.Second,
	})
	return b
}

// A healthy backend behind a Guard still keeps the whole contract, and
// the Guard never answers for it.
//
// The timeout is generous: this suite checks the backend's answers passed
// through, not the timeout (TestGuardNeverHangs does). With the default
// 100ms, a loaded CI machine (load 10+ on 2 cores, race detector) let a
// call of the in-memory backend wait past it, and the Guard, as it
// should, admitted that request without the backend: one more than the
// limit allowed.
func TestGuardConformance(t *testing.T) {
	t.Parallel()
	ratelimittest.Run(t, func(t *testing.T) ratelimit.Limiter {
		return ratelimit.NewGuard(ratelimit.NewMemory(), ratelimit.GuardConfig{
			Timeout:    healthyTimeout,
			OnDegraded: func(err error) { t.Errorf("a healthy backend's call answered without it: %v", err) },
		})
	})
}

// healthyTimeout bounds a call of a healthy in-memory backend: far beyond
// any scheduling delay of a loaded machine.
const healthyTimeout = 30 * time.Second

// Fail open: a failing backend admits with a full Remaining and reports
// degradation on every such decision; after enough failures the breaker
// stops calling the backend; once the backend is back, a probe after the
// cooldown closes the breaker and limits apply again.
func TestGuardFailOpen(t *testing.T) {
	t.Parallel()
	b := setupGuard(t, ratelimit.FailOpen, nil)
	lim := ratelimit.Limit{Requests: 1, Window: time.Minute}
	b.backend.fail.Store(true)
	for i := range 10 {
		d, err := b.guard.Allow(t.Context(), ratelimit.Check{Key: "k", Limit: lim})
		if err != nil || d != (ratelimit.Decision{Allowed: true, Limit: 1, Remaining: 1}) {
			t.Fatalf("call %d: %+v, %v; want admitted with Remaining 1", i, d, err)
		}
	}
	if got := b.degraded.Load(); got != 10 {
		t.Fatalf("OnDegraded called %d times, want 10", got)
	}
	if got := b.backend.calls.Load(); got != 3 {
		t.Fatalf("backend called %d times, want 3 (the breaker opens after 3 failures)", got)
	}
	b.backend.fail.Store(false)
	waitLimited(t, b.guard, lim)
}

func waitLimited(t *testing.T, g *ratelimit.Guard, lim ratelimit.Limit) {
	t.Helper()
	await.Within(t, 30*time.Second, "limits applied again after the backend's return", func() bool {
		d, err := g.Allow(t.Context(), ratelimit.Check{Key: "k", Limit: lim})
		return err == nil && !d.Allowed
	})
}

func TestGuardFailClosed(t *testing.T) {
	t.Parallel()
	b := setupGuard(t, ratelimit.FailClosed, nil)
	lim := ratelimit.Limit{Requests: 1, Window: time.Minute}
	b.backend.fail.Store(true)
	for i := range 5 {
		d, err := b.guard.Allow(t.Context(), ratelimit.Check{Key: "k", Limit: lim})
		if !errors.Is(err, ratelimit.ErrUnavailable) || d.Allowed {
			t.Fatalf("call %d: %+v, %v; want ErrUnavailable", i, d, err)
		}
	}
	if got := b.degraded.Load(); got != 5 {
		t.Fatalf("OnDegraded called %d times, want 5", got)
	}
	b.backend.fail.Store(false)
	waitLimited(t, b.guard, lim)
}

// A backend that hangs and ignores its context cannot hold the caller:
// each call returns within the timeout plus slack. The backend hangs
// until the test ends, so any bound shows that; the slack is generous
// because 50ms of it was not enough on a loaded machine (load 10+ on 2
// cores, race detector).
func TestGuardNeverHangs(t *testing.T) {
	t.Parallel()
	hang := make(chan struct{})
	b := setupGuard(t, ratelimit.FailClosed, hang)
	t.Cleanup(func() { close(hang) })
	const timeout, bound = 50 * time.Millisecond, 50*time.Millisecond + 5*time.Second
	for i := range 5 {
		start := time.Now()
		_, err := b.guard.Allow(t.Context(), ratelimit.Check{Key: "k", Limit: ratelimit.Limit{Requests: 1, Window: time.Minute}})
		if took := time.Since(start); took > bound {
			t.Fatalf("call %d took %v with a %v timeout", i, took, timeout)
		}
		if !errors.Is(err, ratelimit.ErrUnavailable) {
			t.Fatalf("call %d: %v, want ErrUnavailable", i, err)
		}
	}
}

// The caller giving up is not a backend failure: it is returned as is,
// does not degrade and does not count towards opening the breaker.
func TestGuardCallerCancelIsNotABackendFailure(t *testing.T) {
	t.Parallel()
	b := setupGuard(t, ratelimit.FailOpen, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for range 10 {
		if _, err := b.guard.Allow(ctx, ratelimit.Check{Key: "k", Limit: ratelimit.Limit{Requests: 5, Window: time.Minute}}); !errors.Is(err, context.Canceled) {
			t.Fatalf("Allow with a canceled context: %v, want context.Canceled", err)
		}
	}
	if got := b.degraded.Load(); got != 0 {
		t.Fatalf("OnDegraded called %d times, want 0", got)
	}
	if d, err := b.guard.Allow(t.Context(), ratelimit.Check{Key: "k", Limit: ratelimit.Limit{Requests: 5, Window: time.Minute}}); err != nil || d.Remaining != 4 {
		t.Fatalf("after cancellations: %+v, %v; want the backend's answer (breaker closed)", d, err)
	}
}

// Failing open on several checks reports the one with the fewest
// Requests, with a full Remaining, as for one; unlimited checks are
// ignored, and a call without a limited check never reaches the backend.
func TestGuardFailOpenSeveralChecks(t *testing.T) {
	t.Parallel()
	b := setupGuard(t, ratelimit.FailOpen, nil)
	b.backend.fail.Store(true)
	checks := []ratelimit.Check{
		{Key: "key", Limit: ratelimit.Limit{Requests: 10, Window: time.Minute}},
		{Key: "unlimited"},
		{Key: "project", Limit: ratelimit.Limit{Requests: 3, Window: time.Hour}},
	}
	d, err := b.guard.Allow(t.Context(), checks...)
	if err != nil || d != (ratelimit.Decision{Allowed: true, Limit: 3, Remaining: 3}) {
		t.Fatalf("%+v, %v; want admitted with the project's Limit 3, Remaining 3", d, err)
	}
	if d, err := b.guard.Allow(t.Context(), ratelimit.Check{Key: "u1"}, ratelimit.Check{Key: "u2", Limit: ratelimit.Limit{Requests: -1}}); err != nil || d != (ratelimit.Decision{Allowed: true}) {
		t.Fatalf("only unlimited checks: %+v, %v; want only Allowed", d, err)
	}
	if got := b.backend.calls.Load(); got != 1 {
		t.Fatalf("backend called %d times, want 1", got)
	}
}
