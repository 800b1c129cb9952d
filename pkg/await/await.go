// Package await waits, in tests, for a condition that another goroutine,
// process or server makes true: a bounded poll, for state that offers no
// signal to wait on (a server's view, a file, a counter), instead of a
// sleep that guesses how long it takes.
package await

import (
	"testing"
	"time"
)

// Timeout is how long Until waits.
const Timeout = 10 * time.Second

// Until is Within Timeout.
func Until(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	Within(tb, Timeout, what, cond)
}

// Within calls cond, at first every millisecond and then less often, until
// it returns true. If it has not within timeout, tb fails at once
// (Fatalf) saying it timed out waiting for what; so, like Fatal, Within
// must be called from the test's goroutine.
func Within(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for pause := time.Millisecond; !cond(); pause = min(2*pause, 20*time.Millisecond) {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(pause)
	}
}
