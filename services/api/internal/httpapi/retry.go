package httpapi

import (
	"fmt"

	"github.com/labstack/echo/v4"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/api/internal/jobs"
)

// retryJob serves POST /v1/jobs/{id}/retry: a job that failed, timed out
// or was cancelled runs again as a new job of its project, submitted by
// the caller (who needs the submit role there), and the new job's submit
// reply is the answer (202). A job still running is 409 job_not_finished.
// With an Idempotency-Key header a repeated retry returns the first one's
// job, marked Idempotent-Replayed, as a repeated submit does.
func (h *Handlers) retryJob(c echo.Context) error {
	ctx := c.Request().Context()
	st, err := h.jobs.Job(ctx, c.Param("id"))
	if err == nil {
		err = h.jobAccess(c, st, access.RoleSubmit)
	}
	if err != nil {
		return h.fail(c, err)
	}
	// The job runs again in the project as it is now; a deleted project
	// runs nothing.
	proj, err := h.projects.Project(ctx, st.Project)
	if isNotFound(err) {
		return h.fail(c, &access.Error{Kind: access.KindNotFound, Code: "project_not_found", Message: fmt.Sprintf("project %q of job %s no longer exists", st.Project, st.JobID)})
	}
	if err != nil {
		return h.fail(c, err)
	}
	sub := submission(c, proj, jobs.Submission{}, contracts.SubmitOptions{})
	again, replayed, err := h.jobs.Retry(ctx, st, jobs.Retrier{Actor: sub.Actor, ClientIP: sub.ClientIP, CanRead: sub.CanRead,
		Incarnation: proj.Incarnation, Trace: sub.Trace, IdempotencyKey: c.Request().Header.Get("Idempotency-Key")})
	if err != nil {
		return h.fail(c, err)
	}
	if replayed {
		c.Response().Header().Set("Idempotent-Replayed", "true")
	} else {
		h.audit.RecordAsync(contracts.AuditRecord{Kind: contracts.AuditJobRetried, Actor: sub.Actor, Project: st.Project,
			ClientIP: sub.ClientIP, JobID: again.JobID, Detail: map[string]any{"retry_of": st.JobID}, ProjectIncarnation: proj.Incarnation})
	}
	h.observeSubmitted(c, again, replayed)
	return h.accepted(c, again)
}
