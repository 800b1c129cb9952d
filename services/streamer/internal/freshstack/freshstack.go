// Package freshstack runs deep, short work on a goroutine of its own so
// that it does not grow the stack of a goroutine that lives long.
//
// A goroutine's stack grows to fit its deepest call and shrinks only while
// less than a quarter of it is in use. An SSE request goroutine sits for
// hours a few kilobytes deep, yet setting the stream up (NATS requests,
// JSON, replays) needs four times that: run there, setup would leave every
// idle connection holding a stack of 16 KiB instead of 8. Run on a
// short-lived goroutine, the deep stack is freed when the work is done and
// reused by the next connection's setup.
package freshstack

import (
	"fmt"
	"net/http"
	"runtime/debug"
)

// Run calls f on a new goroutine and returns once f has returned; what f
// did happens before Run returns. A panic in f is raised again by Run, on
// the caller's goroutine, where recovery middleware can catch it: with its
// original stack attached, or as is for http.ErrAbortHandler, which
// net/http handles by value.
func Run(f func()) {
	done := make(chan any, 1)
	go func() {
		defer func() {
			p := recover()
			if p != nil && p != http.ErrAbortHandler { //nolint:errorlint // net/http compares by value too
				p = panicked{value: p, stack: debug.Stack()}
			}
			done <- p
		}()
		f()
	}()
	if p := <-done; p != nil {
		panic(p)
	}
}

// panicked is a panic carried over from the goroutine that raised it.
type panicked struct {
	value any
	stack []byte
}

func (p panicked) Error() string {
	return fmt.Sprintf("%v\n\ngoroutine stack where it was raised:\n%s", p.value, p.stack)
}

// Unwrap returns the original value when it was an error.
func (p panicked) Unwrap() error {
	err, _ := p.value.(error)
	return err
}
