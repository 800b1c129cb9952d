// Package ratelimit is the API's rate-limiter port: sliding-window limits
// per key, an in-process adapter for a single instance, and a Guard that
// keeps the API serving (fail open or fail closed) when a shared backend
// such as Redis is slow or down.
package ratelimit

import (
	"context"
	"errors"
	"time"
)

// Limit allows at most Requests in any Window: a sliding window, so a
// burst at the end of one minute and another at the start of the next
// cannot add up to twice the limit. Requests <= 0 means unlimited.
type Limit struct {
	Requests int
	Window   time.Duration
}

// Unlimited reports whether l places no limit at all.
func (l Limit) Unlimited() bool { return l.Requests <= 0 }

// Decision is the outcome of one Allow call, with what the HTTP edge needs
// for the 429 status and the Retry-After and RateLimit-* headers.
type Decision struct {
	// Allowed is true when the request was admitted (and counted).
	Allowed bool
	// Limit is Limit.Requests of the call.
	Limit int
	// Remaining is how many more requests the window admits after this one.
	Remaining int
	// RetryAfter is, when !Allowed, how long until one request will be
	// admitted; zero when Allowed.
	RetryAfter time.Duration
	// Reset is how long until every counted request has left the window,
	// that is until Remaining is back at Limit.
	Reset time.Duration
}

// ErrInvalidLimit is returned (wrapped) by Allow for a limited Limit
// (Requests > 0) whose Window is not positive: a configuration error, not a
// backend failure.
var ErrInvalidLimit = errors.New("invalid rate limit: window must be positive")

// Limiter counts requests per key against a sliding-window Limit.
//
// Contract, which every adapter passes in ratelimittest:
//   - Allow is atomic per key across all callers sharing the backend: with
//     Limit{Requests: n} exactly n of any number of concurrent calls inside
//     one window are allowed, from any number of processes.
//   - A denied request is not counted: hammering a limited key does not
//     push its next allowed request further away.
//   - A request counts for exactly Window after it was admitted.
//   - Limit.Requests <= 0 is unlimited: always allowed, nothing counted,
//     and the Decision's other fields are zero.
//   - Keys are independent. Callers use one Limit per key; a key seen with
//     a different Limit is judged by the new one against what it counted.
//   - An error means nothing is known about the request; ctx bounds the call.
type Limiter interface {
	Allow(ctx context.Context, key string, l Limit) (Decision, error)
}

func validate(l Limit) error {
	if l.Requests > 0 && l.Window <= 0 {
		return ErrInvalidLimit
	}
	return nil
}
