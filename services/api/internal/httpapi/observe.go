package httpapi

import (
	"context"

	"github.com/labstack/echo/v4"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// Observer is told of the outcomes that metrics count. Its methods are
// called on the request's goroutine: they must be fast and safe for
// concurrent use.
type Observer interface {
	// Submitted: a submit was answered 202 with st; replayed when an
	// earlier job was returned for the same idempotency key.
	Submitted(ctx context.Context, st contracts.JobState, replayed bool)
	// Denied: a request was refused with status 401, 403 or 429 and the
	// error code (missing_api_key, forbidden, rate_limited, …).
	Denied(ctx context.Context, status int, code string)
}

// SetObserver makes o see every submit and refusal. Call it before
// serving requests.
func (h *Handlers) SetObserver(o Observer) { h.observer = o }

func (h *Handlers) observeSubmitted(c echo.Context, st contracts.JobState, replayed bool) {
	if h.observer != nil {
		h.observer.Submitted(c.Request().Context(), st, replayed)
	}
}

func (h *Handlers) observeDenied(c echo.Context, status int, code string) {
	if h.observer != nil {
		h.observer.Denied(c.Request().Context(), status, code)
	}
}
