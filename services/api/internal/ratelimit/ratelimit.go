// Package ratelimit is the API's rate-limiter port: sliding-window limits
// per key, several of which one request can be checked against at once,
// an in-process adapter for a single instance, and a Guard that
// keeps the API serving (fail open or fail closed) when a shared backend
// such as Redis is slow or down.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
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

// Check is one limit a request counts against: the request is counted
// under Key against Limit.
type Check struct {
	Key   string
	Limit Limit
}

// Decision is the outcome of one Allow call, with what the HTTP edge needs
// for the 429 status and the Retry-After and RateLimit-* headers. With
// several limited checks it describes the tightest of them (see Limiter).
type Decision struct {
	// Allowed is true when the request was admitted (and counted).
	Allowed bool
	// Limit is Limit.Requests of the reported check.
	Limit int
	// Remaining is how many more requests the reported check's window
	// admits after this one.
	Remaining int
	// RetryAfter is, when !Allowed, how long until the reported check will
	// admit one request; zero when Allowed.
	RetryAfter time.Duration
	// Reset is how long until every request counted under the reported
	// check's key has left the window, that is until Remaining is back at
	// Limit.
	Reset time.Duration
}

// ErrInvalidLimit is returned (wrapped) by Allow for a call no backend
// could answer: a limited Limit (Requests > 0) whose Window is not
// positive, or ErrDuplicateKey. It is a configuration or programming
// error, not a backend failure.
var ErrInvalidLimit = errors.New("invalid rate limit")

// errWindow is the ErrInvalidLimit of a limited Limit with no window.
var errWindow = fmt.Errorf("%w: window must be positive", ErrInvalidLimit)

// ErrDuplicateKey is returned (wrapped) by Allow when two limited checks
// of one call share a key: whether such a request should count once or
// twice under the key has no good answer, so it is refused. It wraps
// ErrInvalidLimit.
var ErrDuplicateKey = fmt.Errorf("%w: duplicate key in one call", ErrInvalidLimit)

// Limiter counts requests against sliding-window limits, one per key.
//
// Contract, which every adapter passes in ratelimittest:
//   - One call checks all its checks atomically, across all callers
//     sharing the backend: the request is admitted only if every check
//     admits it, and then counted under every key; a request denied by
//     any check is counted under none.
//   - Hence exactness: with Limit{Requests: n} exactly n of any number of
//     concurrent calls counting under a key inside one window are
//     allowed, from any number of processes.
//   - A denied request is not counted: hammering a limited key does not
//     push its next allowed request further away.
//   - A request counts for exactly Window after it was admitted.
//   - A check with Limit.Requests <= 0 is unlimited and ignored: it admits
//     and counts nothing. With no limited check at all the Decision is
//     exactly Decision{Allowed: true}.
//   - The Decision reports one check. When allowed, the one with the
//     fewest Remaining after this request; when denied, the denying check
//     with the largest RetryAfter (Remaining 0). Ties go to the check
//     that comes first in the call.
//   - A limited check whose Window is not positive, or two limited checks
//     with one key, make the call fail with ErrInvalidLimit (the latter
//     also ErrDuplicateKey), before anything is counted.
//   - Keys are independent. Callers use one Limit per key; a key seen with
//     a different Limit is judged by the new one against what it counted.
//   - An error means nothing is known about the request; ctx bounds the
//     call. Allow does not keep checks after it returns.
type Limiter interface {
	Allow(ctx context.Context, checks ...Check) (Decision, error)
}

// limited returns how many checks are limited and the first of them.
func limited(checks []Check) (int, Check) {
	n, first := 0, Check{}
	for _, c := range checks {
		if !c.Limit.Unlimited() {
			if n == 0 {
				first = c
			}
			n++
		}
	}
	return n, first
}

// Validate returns a wrapped ErrInvalidLimit if no backend may answer
// checks: a limited check with no window, or two limited checks with one
// key. Unlimited checks are ignored. It is for adapters, which call it
// before doing anything.
func Validate(checks ...Check) error {
	for i, c := range checks {
		if c.Limit.Unlimited() {
			continue
		}
		if c.Limit.Window <= 0 {
			return fmt.Errorf("key %q: %w", c.Key, errWindow)
		}
		// Calls carry a handful of checks: quadratic is cheapest.
		for _, prev := range checks[:i] {
			if !prev.Limit.Unlimited() && prev.Key == c.Key {
				return fmt.Errorf("key %q: %w", c.Key, ErrDuplicateKey)
			}
		}
	}
	return nil
}
