package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/access/accesshttp"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/api/internal/jobs"
)

// JobIndex lists jobs from the job index.
type JobIndex interface {
	// List returns the jobs q selects, newest first, at most q.Limit, and
	// the cursor of the next page ("" on the last).
	List(ctx context.Context, q jobs.ListQuery) ([]contracts.JobSummary, string, error)
	// Queues counts the jobs of each priority level, highest first, as of
	// now.
	Queues(ctx context.Context, now time.Time) ([]contracts.QueueStats, error)
}

// listProjectJobs answers GET /v1/projects/{project}/jobs: the jobs of
// the project's current incarnation.
func (h *Handlers) listProjectJobs(c echo.Context) error {
	q, err := listQuery(c)
	if err != nil {
		return h.fail(c, err)
	}
	proj := routeProject(c)
	q.Scopes = []jobs.ListScope{{Project: proj.ID, Incarnation: proj.Incarnation}}
	return h.listAnswer(c, q)
}

// listJobs answers GET /v1/jobs: the jobs of ?project, or of every
// project the key may read (and reach from the client's address).
func (h *Handlers) listJobs(c echo.Context) error {
	q, err := listQuery(c)
	if err != nil {
		return h.fail(c, err)
	}
	if id := c.QueryParam("project"); id != "" {
		proj, err := h.project(c, id, access.RoleRead)
		if err != nil {
			return h.fail(c, err)
		}
		q.Scopes = []jobs.ListScope{{Project: proj.ID, Incarnation: proj.Incarnation}}
		return h.listAnswer(c, q)
	}
	p := principal(c)
	ids, all := p.Projects()
	projects, err := h.admin.Projects(c.Request().Context(), ids, all)
	if err != nil {
		return h.fail(c, err)
	}
	for _, proj := range projects {
		if access.Authorize(p, proj, access.RoleRead, accesshttp.ClientIP(c)) == nil {
			q.Scopes = append(q.Scopes, jobs.ListScope{Project: proj.ID, Incarnation: proj.Incarnation})
		}
	}
	return h.listAnswer(c, q)
}

func (h *Handlers) listAnswer(c echo.Context, q jobs.ListQuery) error {
	page := contracts.JobList{Jobs: []contracts.JobSummary{}}
	if len(q.Scopes) > 0 {
		got, next, err := h.index.List(c.Request().Context(), q)
		if err != nil {
			return h.fail(c, err)
		}
		page.Jobs, page.NextCursor = append(page.Jobs, got...), next
	}
	return c.JSON(http.StatusOK, page)
}

// listQuery reads the filters of a job listing: ?status, priority, kind,
// batch, since, until (RFC 3339), cursor (a job id) and limit.
func listQuery(c echo.Context) (jobs.ListQuery, error) {
	q := jobs.ListQuery{
		Status: contracts.Status(c.QueryParam("status")), Priority: contracts.Priority(c.QueryParam("priority")),
		Kind: contracts.Kind(c.QueryParam("kind")), BatchID: c.QueryParam("batch"), Cursor: c.QueryParam("cursor"),
	}
	switch q.Status {
	case "", contracts.StatusScheduled, contracts.StatusQueued, contracts.StatusRunning, contracts.StatusSucceeded,
		contracts.StatusFailed, contracts.StatusCancelled, contracts.StatusTimedOut, contracts.StatusExpired:
	default:
		return q, reqErr(http.StatusBadRequest, "invalid_status", "status must be one of scheduled, queued, running, succeeded, failed, cancelled, timed_out, expired")
	}
	if q.Priority != "" {
		if _, err := contracts.ParsePriority(string(q.Priority)); err != nil {
			return q, reqErr(http.StatusBadRequest, "invalid_priority", "priority must be one of high, normal, low")
		}
	}
	if q.Kind != "" && q.Kind != contracts.KindExec && q.Kind != contracts.KindClaude {
		return q, reqErr(http.StatusBadRequest, "invalid_kind", "kind must be exec or claude")
	}
	if q.BatchID != "" && !contracts.ValidID(q.BatchID) {
		return q, reqErr(http.StatusBadRequest, "invalid_batch", "batch must be a batch id")
	}
	if q.Cursor != "" && !contracts.ValidID(q.Cursor) {
		return q, reqErr(http.StatusBadRequest, "invalid_cursor", "cursor must be the next_cursor of an earlier page")
	}
	var err error
	if q.Since, q.Until, err = timeRange(c); err != nil {
		return q, err
	}
	q.Limit, err = pageLimit(c, contracts.DefaultListLimit)
	return q, err
}
