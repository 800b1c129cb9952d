// Package retry decides what follows a webhook attempt: success, a final
// failure, a disabled endpoint, or another attempt after a delay on the
// schedule of the Standard Webhooks specification, with jitter, never
// sooner than the receiver's Retry-After and never past the retry bound.
package retry

import (
	"math/rand/v2"
	"net/http"
	"time"
)

// DefaultSchedule is the wait before each retry, the last repeated: the
// specification's 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, …
var DefaultSchedule = []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour}

// Verdict is what an attempt's outcome means.
type Verdict int

// The verdicts.
const (
	// Success: a 2xx.
	Success Verdict = iota
	// Retry: 408, 429, 5xx, a timeout or connection error.
	Retry
	// Fail: final; a 3xx (not followed), another 4xx, a refused target.
	Fail
	// Gone: 410, final, and the endpoint is disabled.
	Gone
)

// Classify judges an attempt by its response status (0: none) and
// whether the target was refused.
func Classify(status int, refused bool) Verdict {
	switch {
	case refused:
		return Fail
	case status == 0:
		return Retry
	case status >= 200 && status < 300:
		return Success
	case status == http.StatusGone:
		return Gone
	case status == http.StatusRequestTimeout || status == http.StatusTooManyRequests || status >= 500:
		return Retry
	}
	return Fail
}

// Policy spaces retries.
type Policy struct {
	// Schedule is the wait before retry n (from 1); past its end, its last
	// wait repeats.
	Schedule []time.Duration
	// Bound is how long after its first attempt a delivery may still be
	// tried.
	Bound time.Duration
	// Jitter spreads each wait by ± this fraction, so deliveries that
	// failed together do not come back together.
	Jitter float64
}

// Next returns when the delivery queued at queued, after its attempt
// number n (from 1) failed at now, is tried again, and false when its
// retries are over.
func (p Policy) Next(queued, now time.Time, n int, retryAfter time.Duration) (time.Time, bool) {
	if len(p.Schedule) == 0 {
		return time.Time{}, false
	}
	wait := p.Schedule[min(n, len(p.Schedule))-1]
	if p.Jitter > 0 {
		wait += time.Duration((rand.Float64()*2 - 1) * p.Jitter * float64(wait)) //nolint:gosec // jitter, not a secret
	}
	wait = max(wait, retryAfter)
	at := now.Add(wait)
	if at.Sub(queued) > p.Bound {
		return time.Time{}, false
	}
	return at, true
}
