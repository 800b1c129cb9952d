package redisstore_test

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/services/api/internal/cache"
	"github.com/rdev-dev/rdev/services/api/internal/ratelimit"
	"github.com/rdev-dev/rdev/services/api/internal/redisstore"
	"github.com/rdev-dev/rdev/services/api/redistest"
)

// guardTimeout bounds a Redis call. A call to a healthy Redis must not
// time out, or the Guard answers without it (admits or misses) where a
// test expects Redis's answer: 100ms was not always enough on a loaded
// machine (load 10+ on 2 cores, race detector). Calls to a dead or
// paused Redis wait it out only until the breaker opens.
const guardTimeout = time.Second

// callBound is how long one guarded call may take: twice the timeout plus
// generous scheduling slack. A paused Redis would hold a call that is not
// bounded until it resumes, long after this.
const callBound = 2*guardTimeout + 2*time.Second

// Redis dies (SIGKILL) or hangs (SIGSTOP) in the middle of a test. A
// FailOpen guard keeps admitting, a FailClosed guard returns
// ErrUnavailable, both report each such decision through OnDegraded, and
// no call takes longer than callBound. Once Redis is back, limits apply
// again: at once after a pause (the counts survived), after the counted
// requests again after a restart (an empty Redis).
func TestGuardLimiterRedisOutage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		policy ratelimit.Policy
		pause  bool
	}{
		{"KilledFailOpen", ratelimit.FailOpen, false},
		{"KilledFailClosed", ratelimit.FailClosed, false},
		{"PausedFailOpen", ratelimit.FailOpen, true},
		{"PausedFailClosed", ratelimit.FailClosed, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			var degraded atomic.Int64
			g := ratelimit.NewGuard(redisstore.NewLimiter(pipelined(t, srv.Client(t)), prefix(t)), ratelimit.GuardConfig{
				Policy:          tc.policy,
				Timeout:         guardTimeout,
				OnDegraded:      func(error) { degraded.Add(1) },
				BreakerFailures: 3,
				BreakerCooldown: 200 * time.Millisecond,
			})
			lim := ratelimit.Limit{Requests: 2, Window: time.Minute}
			allow := func() (ratelimit.Decision, error) {
				t.Helper()
				start := time.Now()
				d, err := g.Allow(t.Context(), ratelimit.Check{Key: "k", Limit: lim})
				if took := time.Since(start); took > callBound {
					t.Fatalf("Allow took %v with a %v timeout", took, guardTimeout)
				}
				return d, err
			}
			for i, want := range []bool{true, true, false} {
				if d, err := allow(); err != nil || d.Allowed != want {
					t.Fatalf("call %d with Redis up: %+v, %v", i+1, d, err)
				}
			}

			if tc.pause {
				srv.Pause()
			} else {
				srv.Kill()
			}
			const calls = 20
			for i := range calls {
				d, err := allow()
				switch tc.policy {
				case ratelimit.FailOpen:
					if err != nil || d != (ratelimit.Decision{Allowed: true, Limit: 2, Remaining: 2}) {
						t.Fatalf("call %d with Redis down: %+v, %v; want admitted", i+1, d, err)
					}
				case ratelimit.FailClosed:
					if !errors.Is(err, ratelimit.ErrUnavailable) {
						t.Fatalf("call %d with Redis down: %+v, %v; want ErrUnavailable", i+1, d, err)
					}
				}
			}
			if got := degraded.Load(); got != calls {
				t.Fatalf("OnDegraded called %d times for %d calls", got, calls)
			}

			if tc.pause {
				srv.Resume()
			} else {
				srv.Restart()
			}
			// Admitted while degraded, then by Redis until the limit of 2,
			// then denied: bounded by the breaker cooldown.
			await.Within(t, 30*time.Second, "limits applied after Redis came back", func() bool {
				d, err := allow()
				return err == nil && !d.Allowed
			})
		})
	}
}

// The revoked-key rule against a real Redis that hangs but keeps its data
// (SIGSTOP): replica A's Delete of a revoked key is lost during the
// outage (its breaker is open, the command is never sent), so the stale
// entry is still in Redis when it resumes. (A breaker of one failure: a
// command sent to the paused server, such as a first invalidation
// attempt, waits in the socket and runs on resume, which would hide the
// loss.) A never serves it, invalidates
// the whole cache as soon as its breaker lets a probe through, and from
// then on no replica sees the entry (nor any other written before).
func TestGuardCacheRedisPausedDeleteLost(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	p := prefix(t)
	const cooldown = 700 * time.Millisecond
	var degradedA atomic.Int64
	a := cache.NewGuard(redisstore.NewCache(srv.Client(t), p), cache.GuardConfig{
		Timeout:         guardTimeout,
		OnDegraded:      func(error) { degradedA.Add(1) },
		BreakerFailures: 1,
		BreakerCooldown: cooldown,
		RetryInterval:   20 * time.Millisecond,
	})
	t.Cleanup(a.Close)
	b := cache.NewGuard(redisstore.NewCache(srv.Client(t), p), cache.GuardConfig{Timeout: guardTimeout})
	t.Cleanup(b.Close)
	raw := redisstore.NewCache(srv.Client(t), p)
	ctx := t.Context()

	for _, k := range []string{"key:revoked", "key:other"} {
		if err := a.Set(ctx, k, []byte("valid"), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok, _ := b.Get(ctx, "key:revoked"); !ok {
		t.Fatal("replica B does not see replica A's entry")
	}

	srv.Pause()
	for i := range 2 {
		start := time.Now()
		if _, ok, err := a.Get(ctx, "key:revoked"); ok || err != nil {
			t.Fatalf("Get %d on a paused Redis: ok=%v err=%v; want a miss", i, ok, err)
		}
		if took := time.Since(start); took > callBound {
			t.Fatalf("Get took %v with a %v timeout", took, guardTimeout)
		}
	}
	start := time.Now()
	if err := a.Delete(ctx, "key:revoked"); err != nil {
		t.Fatalf("Delete on a paused Redis: %v, want nil", err)
	}
	if took := time.Since(start); took > callBound {
		t.Fatalf("Delete took %v", took)
	}
	srv.Resume()
	resumed := time.Now()

	// The Delete was lost: the entry is still in Redis...
	if _, ok, err := raw.Get(ctx, "key:revoked"); err != nil || !ok {
		if time.Since(resumed) < cooldown/2 {
			t.Fatalf("test premise: the revoked entry should still be in Redis right after Resume (ok=%v err=%v)", ok, err)
		}
	}
	// ...but A does not serve it.
	if _, ok, err := a.Get(ctx, "key:revoked"); ok || err != nil {
		t.Fatalf("replica A served the stale entry after Resume: ok=%v err=%v", ok, err)
	}
	await.Within(t, 30*time.Second, "replica A's invalidation after Redis resumed", func() bool { return !a.Pending() })
	t.Logf("invalidated %v after Resume (breaker cooldown %v)", time.Since(resumed), cooldown)
	for _, k := range []string{"key:revoked", "key:other"} {
		for name, c := range map[string]cache.Cache{"raw": raw, "replica A": a, "replica B": b} {
			if _, ok, err := c.Get(ctx, k); ok || err != nil {
				t.Fatalf("%s Get(%q) after the invalidation: ok=%v err=%v; want a miss", name, k, ok, err)
			}
		}
	}
	if err := a.Set(ctx, "key:fresh", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := b.Get(ctx, "key:fresh"); !ok {
		t.Fatal("replica B does not see a fresh entry after recovery")
	}
	if degradedA.Load() == 0 {
		t.Fatal("OnDegraded never called on replica A")
	}
}
