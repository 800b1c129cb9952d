package cache_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/services/api/internal/cache"
	"github.com/rdev-dev/rdev/services/api/internal/cache/cachetest"
)

// faultyCache is a fault injector around a real adapter: each operation
// fails, or hangs ignoring its context, on demand, while the wrapped cache
// keeps its data (like a Redis that is unreachable but not restarted).
type faultyCache struct {
	next                                         cache.Backend
	failGet, failSet, failDelete, failInvalidate atomic.Bool
	hang                                         chan struct{} // non-nil: every call blocks until closed
	calls                                        atomic.Int64
}

var errBackend = errors.New("backend down")

func (f *faultyCache) enter(fail *atomic.Bool) error {
	f.calls.Add(1)
	if f.hang != nil {
		<-f.hang
	}
	if fail.Load() {
		return errBackend
	}
	return nil
}

func (f *faultyCache) Get(ctx context.Context, k string) ([]byte, bool, error) {
	if err := f.enter(&f.failGet); err != nil {
		return nil, false, err
	}
	return f.next.Get(ctx, k)
}

func (f *faultyCache) Set(ctx context.Context, k string, v []byte, ttl time.Duration) error {
	if err := f.enter(&f.failSet); err != nil {
		return err
	}
	return f.next.Set(ctx, k, v, ttl)
}

func (f *faultyCache) Delete(ctx context.Context, keys ...string) error {
	if err := f.enter(&f.failDelete); err != nil {
		return err
	}
	return f.next.Delete(ctx, keys...)
}

func (f *faultyCache) Invalidate(ctx context.Context) error {
	if err := f.enter(&f.failInvalidate); err != nil {
		return err
	}
	return f.next.Invalidate(ctx)
}

func (f *faultyCache) failAll(on bool) {
	f.failGet.Store(on)
	f.failSet.Store(on)
	f.failDelete.Store(on)
	f.failInvalidate.Store(on)
}

type guardBundle struct {
	guard    *cache.Guard
	faulty   *faultyCache
	store    *cache.Memory // the data behind the fault injector
	degraded atomic.Int64
}

// testTimeout bounds a call of a backend that hangs.
const testTimeout = 50 * time.Millisecond

// setupGuard returns a Guard in front of a fault injector. The short
// timeout is for a backend that hangs (hang non-nil); one that answers
// gets a generous timeout, and the breaker a cooldown that a burst of
// calls cannot outlast: on a loaded machine (load 10+ on 2 cores, -race)
// 50ms ran out before the backend's goroutine ran (a Set before the fault
// degraded, a Get before it missed), each changing what the tests check.
func setupGuard(t *testing.T, hang chan struct{}) *guardBundle {
	t.Helper()
	timeout := 30 * time.Second
	if hang != nil {
		timeout = testTimeout
	}
	b := &guardBundle{store: cache.NewMemory(1000)}
	b.faulty = &faultyCache{next: b.store, hang: hang}
	b.guard = cache.NewGuard(b.faulty, cache.GuardConfig{
		Timeout:         timeout,
		OnDegraded:      func(error) { b.degraded.Add(1) },
		BreakerFailures: 3,
		BreakerCooldown: time.Second,
		RetryInterval:   10 * time.Millisecond,
	})
	t.Cleanup(b.guard.Close)
	return b
}

func rawHit(t *testing.T, c cache.Cache, k string) bool {
	t.Helper()
	_, ok, err := c.Get(t.Context(), k)
	if err != nil {
		t.Fatalf("raw Get(%q): %v", k, err)
	}
	return ok
}

// A healthy backend behind a Guard keeps the whole contract, and the
// Guard never answers for it.
//
// The timeout is generous: this suite checks the backend's answers passed
// through, not the timeout (TestGuardNeverHangs does). With the default
// 100ms, a loaded CI machine (load 10+ on 2 cores, race detector) can let
// a call of the in-memory backend wait past it, and the Guard, as it
// should, then answers a miss and distrusts the whole cache.
func TestGuardConformance(t *testing.T) {
	t.Parallel()
	cachetest.Run(t, func(t *testing.T) cache.Backend {
		g := cache.NewGuard(cache.NewMemory(10_000), cache.GuardConfig{
			Timeout:    30 * time.Second,
			OnDegraded: func(err error) { t.Errorf("a healthy backend's call answered without it: %v", err) },
		})
		t.Cleanup(g.Close)
		return g
	})
}

// The revoked-key rule: a Delete the backend did not take leaves the old
// entry in the backend, but the Guard never serves it: Gets miss while the
// backend stays unreachable and while invalidating keeps failing, and once
// the backend answers the whole cache (also keys never deleted) is
// invalidated before the Guard uses it again.
func TestGuardFailedDeleteNeverServesStale(t *testing.T) {
	t.Parallel()
	b := setupGuard(t, nil)
	ctx := t.Context()
	for _, k := range []string{"key:revoked", "key:other"} {
		if err := b.guard.Set(ctx, k, []byte("valid"), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if v, ok, err := b.guard.Get(ctx, "key:revoked"); err != nil || !ok || string(v) != "valid" {
		t.Fatalf("Get before the fault: %q %v %v", v, ok, err)
	}

	b.faulty.failAll(true)
	if err := b.guard.Delete(ctx, "key:revoked"); err != nil {
		t.Fatalf("Delete on a failing backend returned %v, want nil", err)
	}
	if !rawHit(t, b.store, "key:revoked") {
		t.Fatal("test premise: the failed Delete should have left the entry in the backend")
	}
	// Backend reachable again for reads, but invalidation still fails:
	// the stale entry must not be served.
	b.faulty.failGet.Store(false)
	b.faulty.failSet.Store(false)
	b.faulty.failDelete.Store(false)
	for range 20 {
		if _, ok, err := b.guard.Get(ctx, "key:revoked"); ok || err != nil {
			t.Fatalf("stale entry served (ok=%v err=%v) while its invalidation is owed", ok, err)
		}
		if err := b.guard.Set(ctx, "key:new", []byte("v"), time.Minute); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !b.guard.Pending() || !rawHit(t, b.store, "key:revoked") {
		t.Fatal("test premise: the invalidation should still be owed")
	}
	if rawHit(t, b.store, "key:new") {
		t.Fatal("Set while an invalidation is owed reached the backend")
	}

	b.faulty.failInvalidate.Store(false)
	await.Within(t, 30*time.Second, "the owed invalidation", func() bool { return !b.guard.Pending() })
	for _, k := range []string{"key:revoked", "key:other"} {
		if rawHit(t, b.store, k) {
			t.Fatalf("%q still in the backend after the invalidation", k)
		}
	}
	if err := b.guard.Set(ctx, "key:fresh", []byte("v2"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if v, ok, _ := b.guard.Get(ctx, "key:fresh"); !ok || string(v) != "v2" {
		t.Fatalf("Get after recovery: %q %v, want a hit", v, ok)
	}
	if b.degraded.Load() == 0 {
		t.Fatal("OnDegraded never called")
	}
}

// A failed Get is a miss, reported as degraded, and (the backend having
// been unreachable) owes an invalidation too: another replica's Delete may
// have been lost in the same outage.
func TestGuardFailedGetIsMissAndInvalidates(t *testing.T) {
	t.Parallel()
	b := setupGuard(t, nil)
	if err := b.guard.Set(t.Context(), "k", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	b.faulty.failGet.Store(true)
	v, ok, err := b.guard.Get(t.Context(), "k")
	if v != nil || ok || err != nil {
		t.Fatalf("Get on a failing backend = %q, %v, %v; want a miss", v, ok, err)
	}
	if b.degraded.Load() != 1 {
		t.Fatalf("OnDegraded called %d times, want 1", b.degraded.Load())
	}
	await.Within(t, 30*time.Second, "the invalidation", func() bool { return !rawHit(t, b.store, "k") })
}

// After BreakerFailures failures the backend is not called at all; the
// breaker's probe is the owed invalidation, and after it the Guard works.
func TestGuardBreakerOpensAndRecovers(t *testing.T) {
	t.Parallel()
	b := setupGuard(t, nil)
	b.faulty.failAll(true)
	for range 50 {
		_, _, _ = b.guard.Get(t.Context(), "k")
	}
	calls := b.faulty.calls.Load()
	if calls > 10 {
		t.Fatalf("backend called %d times for 50 Gets with a breaker of 3 failures", calls)
	}
	b.faulty.failAll(false)
	await.Within(t, 30*time.Second, "recovery", func() bool { return !b.guard.Pending() })
	if err := b.guard.Set(t.Context(), "k", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := b.guard.Get(t.Context(), "k"); !ok {
		t.Fatal("Get after recovery missed")
	}
}

// A backend that hangs ignoring its context cannot hold the caller: each
// operation, on a fresh Guard (so it really reaches the backend), returns
// nil within the timeout plus slack. The backend hangs until the test
// ends, so any bound shows that; the slack is generous because 50ms of it
// was not enough on a loaded machine (load 10+ on 2 cores, race
// detector).
func TestGuardNeverHangs(t *testing.T) {
	t.Parallel()
	ops := map[string]func(g *cache.Guard) error{
		"Get":        func(g *cache.Guard) error { _, _, err := g.Get(t.Context(), "k"); return err },
		"Set":        func(g *cache.Guard) error { return g.Set(t.Context(), "k", []byte("v"), time.Minute) },
		"Delete":     func(g *cache.Guard) error { return g.Delete(t.Context(), "k") },
		"Invalidate": func(g *cache.Guard) error { return g.Invalidate(t.Context()) },
	}
	bound := testTimeout + 5*time.Second
	for name, op := range ops {
		hang := make(chan struct{})
		b := setupGuard(t, hang)
		t.Cleanup(func() { close(hang) }) // runs before the Guard's Close (LIFO)
		start := time.Now()
		if err := op(b.guard); err != nil {
			t.Fatalf("%s: %v, want nil", name, err)
		}
		if took := time.Since(start); took > bound {
			t.Fatalf("%s took %v with a %v timeout", name, took, testTimeout)
		}
		if b.faulty.calls.Load() == 0 {
			t.Fatalf("%s did not reach the backend", name)
		}
	}
}

// A Delete is delivered even when the caller's context is already
// canceled: an HTTP client hanging up must not abandon a revocation.
func TestGuardDeleteSurvivesCallerCancel(t *testing.T) {
	t.Parallel()
	b := setupGuard(t, nil)
	if err := b.guard.Set(t.Context(), "k", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := b.guard.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if rawHit(t, b.store, "k") {
		t.Fatal("Delete with a canceled context was not delivered")
	}
	if b.guard.Pending() {
		t.Fatal("a delivered Delete made the Guard owe an invalidation")
	}
	b.guard.Close()
	b.guard.Close() // a second Close is harmless
}
