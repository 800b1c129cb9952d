// Package ratelimittest is the conformance suite of the ratelimit.Limiter
// port: every adapter (in-memory, Redis) runs Run and so keeps the same
// contract. Windows are real time (a Redis script reads the server clock),
// short, and the assertions are chosen so that a fixed-window limiter or
// one that counts denied requests fails them.
package ratelimittest

import (
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/services/api/internal/ratelimit"
)

// Run runs the conformance suite. newLimiter is called once per subtest;
// limiters may share a backend: every subtest uses its own keys.
func Run(t *testing.T, newLimiter func(t *testing.T) ratelimit.Limiter) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, l ratelimit.Limiter)
	}{
		{"ExactUnderConcurrency", testExactUnderConcurrency},
		{"RemainingAndRetryAfter", testRemainingAndRetryAfter},
		{"SlidingNotFixedWindow", testSlidingWindow},
		{"DeniedNotCounted", testDeniedNotCounted},
		{"KeysIndependent", testKeysIndependent},
		{"Unlimited", testUnlimited},
		{"InvalidLimit", testInvalidLimit},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newLimiter(t))
		})
	}
}

func key(t *testing.T, name string) string { return t.Name() + "/" + rand.Text()[:8] + "/" + name }

func allow(t *testing.T, l ratelimit.Limiter, k string, lim ratelimit.Limit) ratelimit.Decision {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	d, err := l.Allow(ctx, k, lim)
	if err != nil {
		t.Fatalf("Allow(%q): %v", k, err)
	}
	return d
}

// 50 goroutines make 10 calls each against a limit of 100: exactly 100
// are allowed, and every allowed Remaining value 0..99 is seen once.
func testExactUnderConcurrency(t *testing.T, l ratelimit.Limiter) {
	const workers, calls, limit = 50, 10, 100
	k := key(t, "burst")
	lim := ratelimit.Limit{Requests: limit, Window: time.Minute}
	var allowed atomic.Int64
	var mu sync.Mutex
	remaining := make(map[int]int)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for range calls {
				d, err := l.Allow(t.Context(), k, lim)
				if err != nil {
					errs <- err
					return
				}
				if d.Allowed {
					allowed.Add(1)
					mu.Lock()
					remaining[d.Remaining]++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Allow: %v", err)
	}
	if got := allowed.Load(); got != limit {
		t.Fatalf("allowed %d of %d calls, want exactly %d", got, workers*calls, limit)
	}
	for r := range limit {
		if remaining[r] != 1 {
			t.Fatalf("Remaining=%d seen %d times, want once (all: %v)", r, remaining[r], remaining)
		}
	}
}

// Remaining counts down, a denial says when the oldest request leaves the
// window, and Reset says when the last one does.
func testRemainingAndRetryAfter(t *testing.T, l ratelimit.Limiter) {
	const window = time.Minute
	k := key(t, "k")
	lim := ratelimit.Limit{Requests: 3, Window: window}
	start := time.Now()
	for i, want := range []int{2, 1, 0} {
		d := allow(t, l, k, lim)
		if !d.Allowed || d.Remaining != want || d.Limit != 3 || d.RetryAfter != 0 {
			t.Fatalf("call %d: %+v, want allowed, Limit 3, Remaining %d, RetryAfter 0", i+1, d, want)
		}
		if d.Reset > window || d.Reset < window-time.Since(start)-time.Millisecond {
			t.Fatalf("call %d: Reset %v, want about %v", i+1, d.Reset, window)
		}
	}
	d := allow(t, l, k, lim)
	elapsed := time.Since(start)
	if d.Allowed || d.Remaining != 0 || d.Limit != 3 {
		t.Fatalf("4th call: %+v, want denied with Limit 3, Remaining 0", d)
	}
	// The first request was admitted within [start, start+elapsed].
	if d.RetryAfter > window || d.RetryAfter < window-elapsed-time.Millisecond {
		t.Fatalf("RetryAfter %v, want in [%v, %v]", d.RetryAfter, window-elapsed, window)
	}
	if d.Reset < d.RetryAfter || d.Reset > window {
		t.Fatalf("Reset %v, want in [RetryAfter %v, %v]", d.Reset, d.RetryAfter, window)
	}
}

// Two requests at t0 and two at t0+W/2 fill a limit of 4. Just after
// t0+W only the first two have left the window: exactly two more are
// allowed. A fixed-window limiter fails either the denial at t0+W/2 (a
// window boundary fell between the pairs) or the "exactly two" (a boundary
// fell after the second pair, starting a fresh window of four).
func testSlidingWindow(t *testing.T, l ratelimit.Limiter) {
	const window = time.Second
	k := key(t, "k")
	lim := ratelimit.Limit{Requests: 4, Window: window}

	first := time.Now()
	allowN(t, l, k, lim, 2)
	firstDone := time.Now()
	time.Sleep(window / 2)
	second := time.Now()
	allowN(t, l, k, lim, 2)
	secondDone := time.Now()

	before := time.Now()
	d := allow(t, l, k, lim)
	after := time.Now()
	if d.Allowed {
		t.Fatalf("5th request within one window allowed: %+v (a fixed window?)", d)
	}
	// RetryAfter points at the first pair leaving, Reset at the second.
	if lo, hi := first.Add(window).Sub(after), firstDone.Add(window).Sub(before); d.RetryAfter < lo-time.Millisecond || d.RetryAfter > hi {
		t.Fatalf("RetryAfter %v, want in [%v, %v]", d.RetryAfter, lo, hi)
	}
	if lo, hi := second.Add(window).Sub(after), secondDone.Add(window).Sub(before); d.Reset < lo-time.Millisecond || d.Reset > hi {
		t.Fatalf("Reset %v, want in [%v, %v]", d.Reset, lo, hi)
	}

	time.Sleep(time.Until(firstDone.Add(window + 50*time.Millisecond)))
	allowN(t, l, k, lim, 2)
	d = allow(t, l, k, lim)
	if time.Now().After(second.Add(window)) {
		t.Fatalf("test premise broken: the machine stalled %v past the second pair's window", time.Since(second.Add(window)))
	}
	if d.Allowed {
		t.Fatalf("3rd request after the first pair left the window allowed: %+v (a fixed window?)", d)
	}
}

func allowN(t *testing.T, l ratelimit.Limiter, k string, lim ratelimit.Limit, n int) {
	t.Helper()
	for i := range n {
		if d := allow(t, l, k, lim); !d.Allowed {
			t.Fatalf("request %d of %d denied: %+v", i+1, n, d)
		}
	}
}

// Denied requests leave no trace: once the admitted ones leave the window
// the key is fully available again, however many were denied meanwhile.
func testDeniedNotCounted(t *testing.T, l ratelimit.Limiter) {
	const window = time.Second
	k := key(t, "k")
	lim := ratelimit.Limit{Requests: 2, Window: window}
	allowN(t, l, k, lim, 2)
	admitted := time.Now()
	time.Sleep(window / 4)
	for range 20 {
		if d := allow(t, l, k, lim); d.Allowed {
			t.Fatalf("request over the limit allowed: %+v", d)
		}
	}
	denied := time.Now()
	time.Sleep(time.Until(admitted.Add(window + 50*time.Millisecond)))
	allowN(t, l, k, lim, 2)
	if time.Since(denied) >= window {
		t.Fatalf("test premise broken: the machine stalled %v", time.Since(denied))
	}
}

func testKeysIndependent(t *testing.T, l ratelimit.Limiter) {
	lim := ratelimit.Limit{Requests: 1, Window: time.Minute}
	a, b := key(t, "a"), key(t, "b")
	allowN(t, l, a, lim, 1)
	if d := allow(t, l, a, lim); d.Allowed {
		t.Fatalf("second request on %q allowed: %+v", a, d)
	}
	if d := allow(t, l, b, lim); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("first request on %q: %+v, want allowed with Remaining 0", b, d)
	}
}

func testUnlimited(t *testing.T, l ratelimit.Limiter) {
	k := key(t, "k")
	for _, lim := range []ratelimit.Limit{{Requests: 0, Window: time.Minute}, {Requests: -1}, {}} {
		for range 200 {
			if d := allow(t, l, k, lim); d != (ratelimit.Decision{Allowed: true}) {
				t.Fatalf("unlimited %+v: %+v, want only Allowed", lim, d)
			}
		}
	}
	// Nothing was counted: a limit of 1 still admits one.
	allowN(t, l, k, ratelimit.Limit{Requests: 1, Window: time.Minute}, 1)
}

func testInvalidLimit(t *testing.T, l ratelimit.Limiter) {
	_, err := l.Allow(t.Context(), key(t, "k"), ratelimit.Limit{Requests: 1})
	if err == nil || !errors.Is(err, ratelimit.ErrInvalidLimit) {
		t.Fatalf("Allow with zero window: %v, want ErrInvalidLimit", err)
	}
}
