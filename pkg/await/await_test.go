package await_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/await"
)

func TestWithinReturnsOnceTheConditionHolds(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	await.Within(t, time.Minute, "three calls", func() bool { return n.Add(1) == 3 })
	if got := n.Load(); got != 3 {
		t.Fatalf("cond called %d times, want 3", got)
	}
}

// recorder is a testing.TB that records a Fatalf instead of failing.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = format
	panic(r) // Fatalf does not return
}

func TestWithinFailsAfterTheTimeout(t *testing.T) {
	t.Parallel()
	r := &recorder{TB: t}
	start := time.Now()
	func() {
		defer func() {
			if p := recover(); p != r {
				t.Fatalf("Within returned (or panicked with %v) instead of failing", p)
			}
		}()
		await.Within(r, 50*time.Millisecond, "nothing", func() bool { return false })
	}()
	if r.failed == "" || time.Since(start) < 50*time.Millisecond {
		t.Fatalf("failed %q after %s, want a failure after the timeout", r.failed, time.Since(start))
	}
}
