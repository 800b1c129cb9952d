package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/rdev-dev/rdev/pkg/access/accesshttp"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// Pauses keeps which priority levels the workers do not dispatch.
type Pauses interface {
	// Set stores p as its level's pause.
	Set(ctx context.Context, p contracts.QueuePause) error
	// Paused returns the paused levels.
	Paused(ctx context.Context) (map[contracts.Priority]bool, error)
}

// listQueues answers GET /v1/queues (admin): each priority level's
// pause, waiting and running jobs, oldest wait and dispatches in the last
// minute.
func (h *Handlers) listQueues(c echo.Context) error {
	if err := h.requireAdmin(c); err != nil {
		return h.fail(c, err)
	}
	ctx := c.Request().Context()
	qs, err := h.index.Queues(ctx, time.Now())
	if err != nil {
		return h.fail(c, err)
	}
	paused, err := h.pauses.Paused(ctx)
	if err != nil {
		return h.fail(c, err)
	}
	for i := range qs {
		qs[i].Paused = paused[qs[i].Priority]
	}
	return c.JSON(http.StatusOK, contracts.QueueList{Queues: qs})
}

// pauseQueue answers POST /v1/queues/{priority}/pause (admin): workers
// stop dispatching the level; its jobs wait.
func (h *Handlers) pauseQueue(c echo.Context) error { return h.setPause(c, true) }

// resumeQueue answers POST /v1/queues/{priority}/resume (admin).
func (h *Handlers) resumeQueue(c echo.Context) error { return h.setPause(c, false) }

func (h *Handlers) setPause(c echo.Context, paused bool) error {
	if err := h.requireAdmin(c); err != nil {
		return h.fail(c, err)
	}
	lvl := contracts.Priority(c.Param("priority"))
	if _, err := contracts.ParsePriority(string(lvl)); err != nil || lvl == "" {
		return h.fail(c, reqErr(http.StatusBadRequest, "invalid_priority", "priority must be one of high, normal, low"))
	}
	p := contracts.QueuePause{V: contracts.Version, Priority: lvl, Paused: paused, Actor: principal(c).Key.ID, Time: time.Now().UTC()}
	if err := h.pauses.Set(c.Request().Context(), p); err != nil {
		return h.fail(c, err)
	}
	kind := contracts.AuditQueueResumed
	if paused {
		kind = contracts.AuditQueuePaused
	}
	h.audit.RecordAsync(contracts.AuditRecord{Kind: kind, Actor: p.Actor, ClientIP: accesshttp.ClientIP(c).String(),
		Detail: map[string]any{"priority": string(lvl)}})
	return c.JSON(http.StatusOK, p)
}
