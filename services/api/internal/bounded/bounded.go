// Package bounded runs a call to a backend that may hang within a time
// limit, telling the caller's own cancellation apart from the backend's
// failure. The guards in front of Redis (ratelimit, cache) use it.
package bounded

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrCallerGone marks an error caused by the caller's context ending, not
// by the backend: breakers must not count it as a backend failure.
var ErrCallerGone = errors.New("caller context done")

// Call runs fn with a context bounded by timeout. fn runs in its own
// goroutine, so a backend that ignores its context cannot hold the caller
// past the timeout; that goroutine ends when fn returns. A failure while
// the caller's ctx has ended wraps ErrCallerGone; a timeout of the
// backend's own is reported as "<what>: context deadline exceeded".
func Call[T any](ctx context.Context, timeout time.Duration, what string, fn func(context.Context) (T, error)) (T, error) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := fn(cctx)
		done <- result{v, err}
	}()
	var zero T
	select {
	case r := <-done:
		if r.err != nil && ctx.Err() != nil {
			return zero, fmt.Errorf("%w: %w", ErrCallerGone, ctx.Err())
		}
		return r.v, r.err
	case <-cctx.Done():
		if ctx.Err() != nil {
			return zero, fmt.Errorf("%w: %w", ErrCallerGone, ctx.Err())
		}
		return zero, fmt.Errorf("%s: %w", what, cctx.Err())
	}
}
