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
		{"MultiDeniedCountedUnderNone", testMultiDeniedCountedUnderNone},
		{"MultiExactUnderConcurrency", testMultiExactUnderConcurrency},
		{"MultiTightestDecision", testMultiTightestDecision},
		{"MultiDuplicateKeys", testMultiDuplicateKeys},
		{"MultiMixedUnlimited", testMultiMixedUnlimited},
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
	return allowAll(t, l, ratelimit.Check{Key: k, Limit: lim})
}

func allowAll(t *testing.T, l ratelimit.Limiter, checks ...ratelimit.Check) ratelimit.Decision {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	d, err := l.Allow(ctx, checks...)
	if err != nil {
		t.Fatalf("Allow(%+v): %v", checks, err)
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
				d, err := l.Allow(t.Context(), ratelimit.Check{Key: k, Limit: lim})
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

// A limited check without a window fails the whole call, and nothing is
// counted under the call's other keys.
func testInvalidLimit(t *testing.T, l ratelimit.Limiter) {
	_, err := l.Allow(t.Context(), ratelimit.Check{Key: key(t, "k"), Limit: ratelimit.Limit{Requests: 1}})
	if !errors.Is(err, ratelimit.ErrInvalidLimit) {
		t.Fatalf("Allow with zero window: %v, want ErrInvalidLimit", err)
	}
	ok := ratelimit.Check{Key: key(t, "ok"), Limit: ratelimit.Limit{Requests: 1, Window: time.Minute}}
	_, err = l.Allow(t.Context(), ok, ratelimit.Check{Key: key(t, "bad"), Limit: ratelimit.Limit{Requests: 1, Window: -time.Second}})
	if !errors.Is(err, ratelimit.ErrInvalidLimit) {
		t.Fatalf("Allow with a valid and a negative-window check: %v, want ErrInvalidLimit", err)
	}
	allowN(t, l, ok.Key, ok.Limit, 1)
}

// A request denied by one check is counted under none of the others:
// with a limit of 5 on a and 1 on b, after one request on both and any
// number denied by b, a has counted one request.
func testMultiDeniedCountedUnderNone(t *testing.T, l ratelimit.Limiter) {
	a := ratelimit.Check{Key: key(t, "a"), Limit: ratelimit.Limit{Requests: 5, Window: time.Minute}}
	b := ratelimit.Check{Key: key(t, "b"), Limit: ratelimit.Limit{Requests: 1, Window: time.Minute}}
	if d := allowAll(t, l, a, b); !d.Allowed {
		t.Fatalf("first request on a and b denied: %+v", d)
	}
	for i := range 20 {
		checks := []ratelimit.Check{a, b}
		if i%2 == 1 {
			checks = []ratelimit.Check{b, a}
		}
		if d := allowAll(t, l, checks...); d.Allowed {
			t.Fatalf("request %d over b's limit allowed: %+v", i+2, d)
		}
	}
	if d := allow(t, l, a.Key, a.Limit); !d.Allowed || d.Remaining != 3 {
		t.Fatalf("a alone after the denials: %+v, want allowed with Remaining 3 (a counted only the admitted request)", d)
	}
}

// 50 goroutines make 10 calls each, checking key k (limit 100) and
// project p (limit 60), half of them naming p first: exactly 60 are
// allowed, each reports p (the tighter) with every Remaining 0..59 seen
// once, and k counted exactly those 60.
func testMultiExactUnderConcurrency(t *testing.T, l ratelimit.Limiter) {
	const workers, calls, kLimit, pLimit = 50, 10, 100, 60
	k := ratelimit.Check{Key: key(t, "key"), Limit: ratelimit.Limit{Requests: kLimit, Window: time.Minute}}
	p := ratelimit.Check{Key: key(t, "project"), Limit: ratelimit.Limit{Requests: pLimit, Window: time.Minute}}
	var mu sync.Mutex
	remaining := make(map[int]int)
	allowed := 0
	var loose []ratelimit.Decision // allowed, reporting k
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		checks := []ratelimit.Check{k, p}
		if w%2 == 1 {
			checks = []ratelimit.Check{p, k}
		}
		wg.Go(func() {
			for range calls {
				d, err := l.Allow(t.Context(), checks...)
				if err != nil {
					errs <- err
					return
				}
				if d.Allowed {
					mu.Lock()
					allowed++
					if d.Limit != pLimit {
						loose = append(loose, d)
					}
					remaining[d.Remaining]++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if allowed != pLimit {
		t.Fatalf("allowed %d of %d calls, want exactly %d", allowed, workers*calls, pLimit)
	}
	if len(loose) > 0 {
		t.Fatalf("%d allowed decisions report k, not the tighter p: %+v", len(loose), loose)
	}
	for r := range pLimit {
		if remaining[r] != 1 {
			t.Fatalf("Remaining=%d seen %d times, want once (all: %v)", r, remaining[r], remaining)
		}
	}
	if d := allow(t, l, k.Key, k.Limit); !d.Allowed || d.Remaining != kLimit-pLimit-1 {
		t.Fatalf("k alone after the burst: %+v, want allowed with Remaining %d", d, kLimit-pLimit-1)
	}
}

// The Decision of several checks is the tightest: when allowed, the check
// with the fewest Remaining (the first on a tie); when denied, the
// denying check with the largest RetryAfter, whatever the order.
func testMultiTightestDecision(t *testing.T, l ratelimit.Limiter) {
	mk := func(name string, n int, w time.Duration) ratelimit.Check {
		return ratelimit.Check{Key: key(t, name), Limit: ratelimit.Limit{Requests: n, Window: w}}
	}
	// Allowed: a (3/min) is tighter than b (5/2min) until b has counted more.
	a, b := mk("a", 3, time.Minute), mk("b", 5, 2*time.Minute)
	d := allowAll(t, l, b, a)
	if !d.Allowed || d.Limit != 3 || d.Remaining != 2 || d.RetryAfter != 0 || d.Reset > time.Minute || d.Reset < time.Minute-time.Second {
		t.Fatalf("b, a: %+v, want a's: Limit 3, Remaining 2, Reset about 1m", d)
	}
	allowN(t, l, b.Key, b.Limit, 2) // b: 3 counted
	d = allowAll(t, l, a, b)        // a: 2, b: 4
	if !d.Allowed || d.Limit != 3 || d.Remaining != 1 || d.Reset > time.Minute {
		t.Fatalf("a, b on a tie: %+v, want the first (a): Limit 3, Remaining 1", d)
	}
	d = allowAll(t, l, b, a) // a: 3, b: 5
	if !d.Allowed || d.Limit != 5 || d.Remaining != 0 || d.Reset > 2*time.Minute || d.Reset < 2*time.Minute-time.Second {
		t.Fatalf("b, a on a tie: %+v, want the first (b): Limit 5, Remaining 0, Reset about 2m", d)
	}

	// Denied: c (1/min) and e (1/2min) are full, f (5/10min) is not.
	c, e, f := mk("c", 1, time.Minute), mk("e", 1, 2*time.Minute), mk("f", 5, 10*time.Minute)
	allowN(t, l, c.Key, c.Limit, 1)
	allowN(t, l, e.Key, e.Limit, 1)
	for _, checks := range [][]ratelimit.Check{{c, e, f}, {f, e, c}, {e, c}} {
		d := allowAll(t, l, checks...)
		if d.Allowed || d.Limit != 1 || d.Remaining != 0 || d.RetryAfter > 2*time.Minute || d.RetryAfter < 2*time.Minute-time.Second || d.Reset != d.RetryAfter {
			t.Fatalf("%d checks, two denying: %+v, want e's: Limit 1, RetryAfter = Reset about 2m", len(checks), d)
		}
	}
	for _, checks := range [][]ratelimit.Check{{f, c}, {c, f}} {
		d := allowAll(t, l, checks...)
		if d.Allowed || d.Limit != 1 || d.RetryAfter > time.Minute || d.RetryAfter < time.Minute-time.Second {
			t.Fatalf("c denying, f admitting: %+v, want c's: Limit 1, RetryAfter about 1m", d)
		}
	}
	// f counted nothing.
	if d := allow(t, l, f.Key, f.Limit); !d.Allowed || d.Remaining != 4 {
		t.Fatalf("f alone after the denials: %+v, want Remaining 4", d)
	}
}

// Two limited checks with one key are refused, whether their limits are
// equal or not, and count nothing; an unlimited check with the same key
// as a limited one is ignored like every unlimited check.
func testMultiDuplicateKeys(t *testing.T, l ratelimit.Limiter) {
	k := key(t, "k")
	lim := ratelimit.Limit{Requests: 2, Window: time.Minute}
	other := ratelimit.Check{Key: key(t, "other"), Limit: lim}
	for _, checks := range [][]ratelimit.Check{
		{{Key: k, Limit: lim}, {Key: k, Limit: lim}},
		{{Key: k, Limit: lim}, other, {Key: k, Limit: ratelimit.Limit{Requests: 5, Window: time.Hour}}},
	} {
		_, err := l.Allow(t.Context(), checks...)
		if !errors.Is(err, ratelimit.ErrDuplicateKey) || !errors.Is(err, ratelimit.ErrInvalidLimit) {
			t.Fatalf("Allow(%+v): %v, want ErrDuplicateKey and ErrInvalidLimit", checks, err)
		}
	}
	d := allowAll(t, l, ratelimit.Check{Key: k, Limit: lim}, ratelimit.Check{Key: k})
	if !d.Allowed || d.Limit != 2 || d.Remaining != 1 {
		t.Fatalf("k limited and unlimited: %+v, want allowed with Limit 2, Remaining 1 (nothing counted before)", d)
	}
	if d := allow(t, l, other.Key, other.Limit); !d.Allowed || d.Remaining != 1 {
		t.Fatalf("other after the refused calls: %+v, want Remaining 1 (nothing counted before)", d)
	}
}

// Unlimited checks are ignored: with limited ones the Decision is theirs,
// without any it is exactly Decision{Allowed: true}, and nothing is
// counted under an unlimited check's key.
func testMultiMixedUnlimited(t *testing.T, l ratelimit.Limiter) {
	u := ratelimit.Check{Key: key(t, "unlimited"), Limit: ratelimit.Limit{Requests: 0, Window: time.Minute}}
	noWindow := ratelimit.Check{Key: key(t, "unlimited-no-window"), Limit: ratelimit.Limit{Requests: -1}}
	b := ratelimit.Check{Key: key(t, "b"), Limit: ratelimit.Limit{Requests: 2, Window: time.Minute}}
	if d := allowAll(t, l); d != (ratelimit.Decision{Allowed: true}) {
		t.Fatalf("no checks: %+v, want only Allowed", d)
	}
	for range 50 {
		if d := allowAll(t, l, u, noWindow); d != (ratelimit.Decision{Allowed: true}) {
			t.Fatalf("only unlimited checks: %+v, want only Allowed", d)
		}
	}
	for i, want := range []ratelimit.Decision{
		{Allowed: true, Limit: 2, Remaining: 1},
		{Allowed: true, Limit: 2, Remaining: 0},
		{Allowed: false, Limit: 2, Remaining: 0},
	} {
		d := allowAll(t, l, u, b, noWindow)
		if d.Allowed != want.Allowed || d.Limit != want.Limit || d.Remaining != want.Remaining {
			t.Fatalf("call %d with b among unlimited checks: %+v, want %+v", i+1, d, want)
		}
	}
	allowN(t, l, u.Key, ratelimit.Limit{Requests: 1, Window: time.Minute}, 1)
}
