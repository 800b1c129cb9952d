package httpapi

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/access/accesshttp"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/api/internal/jobs"
)

// DeadLetters reads the dead-letter stream and records what is done
// with its letters.
type DeadLetters interface {
	// List returns dead letters of project ("" for all) after a cursor,
	// and the next cursor (0 at the end).
	List(ctx context.Context, project string, after uint64, limit int) ([]contracts.DeadLetter, uint64, error)
	// Find returns the dead letter with id.
	Find(ctx context.Context, id string) (contracts.DeadLetter, bool, error)
	// ClaimRetry records a retry of id by actor; without force only the
	// first claim of a dead letter succeeds, and later ones get the
	// record that stands and false.
	ClaimRetry(ctx context.Context, id, actor string, force bool) (*contracts.DeadLetterRetry, bool, error)
	// RetryQueued stores the claim completed with the job it queued.
	RetryQueued(ctx context.Context, id string, r contracts.DeadLetterRetry) error
	// ReleaseRetry undoes a claim whose job could not be queued.
	ReleaseRetry(ctx context.Context, id string, r contracts.DeadLetterRetry) error
	// Delete removes dead letter id; false when there was none.
	Delete(ctx context.Context, id string) (bool, error)
	// Purge removes every dead letter of project and says how many.
	Purge(ctx context.Context, project string) (int, error)
}

// deadLetters serves GET /v1/dead-letters?project=&cursor=&limit= (admin).
func (h *Handlers) deadLetters(c echo.Context) error {
	if err := h.requireAdmin(c); err != nil {
		return h.fail(c, err)
	}
	project := c.QueryParam("project")
	if project != "" && !contracts.ValidProjectID(project) {
		return h.fail(c, reqErr(http.StatusBadRequest, "invalid_project", "project must be a project id"))
	}
	var after uint64
	if v := c.QueryParam("cursor"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return h.fail(c, reqErr(http.StatusBadRequest, "invalid_cursor", "cursor must be the next_cursor of an earlier page"))
		}
		after = n
	}
	_, limit, err := page(c)
	if err != nil {
		return h.fail(c, err)
	}
	dls, next, err := h.dead.List(c.Request().Context(), project, after, limit)
	if err != nil {
		return h.fail(c, err)
	}
	resp := contracts.DeadLetterPage{DeadLetters: append([]contracts.DeadLetter{}, dls...)}
	if next > 0 {
		resp.NextCursor = strconv.FormatUint(next, 10)
	}
	return c.JSON(http.StatusOK, resp)
}

// retryDeadLetter serves POST /v1/dead-letters/{id}/retry?force= (admin):
// the dead job runs again as a new job, whose submit reply this returns.
// A dead letter already retried answers 409 dead_letter_retried unless
// force=true, so a repeated click does not run the job twice.
func (h *Handlers) retryDeadLetter(c echo.Context) error {
	if err := h.requireAdmin(c); err != nil {
		return h.fail(c, err)
	}
	force, err := strconv.ParseBool(cmp.Or(c.QueryParam("force"), "false"))
	if err != nil {
		return h.fail(c, reqErr(http.StatusBadRequest, "invalid_force", "force must be true or false"))
	}
	id := c.Param("id")
	dl, ok, err := h.dead.Find(c.Request().Context(), id)
	if err != nil {
		return h.fail(c, err)
	}
	if !ok {
		return h.fail(c, &jobs.Error{Kind: jobs.KindNotFound, Code: "dead_letter_not_found", Message: fmt.Sprintf("no dead letter %q", id)})
	}
	st, err := h.retryOne(c, dl, force)
	if err != nil {
		return h.fail(c, err)
	}
	return h.accepted(c, st)
}

// retryOne claims dl's retry, queues its job again and records it.
func (h *Handlers) retryOne(c echo.Context, dl contracts.DeadLetter, force bool) (contracts.JobState, error) {
	ctx := c.Request().Context()
	if dl.Job == nil {
		return contracts.JobState{}, &jobs.Error{Kind: jobs.KindConflict, Code: "dead_letter_undecodable", Message: "this dead letter holds a message that could not be decoded; there is no job to run"}
	}
	for _, v := range dl.Job.Env {
		if v == contracts.Redacted {
			return contracts.JobState{}, &jobs.Error{Kind: jobs.KindConflict, Code: "dead_letter_env_redacted",
				Message: "this dead letter's env values were redacted when it was stored, so it cannot run as it was; submit the job again " +
					`with its env (keep secrets in project secrets, referenced as {"secret":"<name>"}: those are kept and retried)`}
		}
	}
	// The job runs again in the project as it is now (its current
	// incarnation); a deleted project runs nothing.
	proj, err := h.projects.Project(ctx, dl.Job.Project)
	if isNotFound(err) {
		return contracts.JobState{}, &access.Error{Kind: access.KindNotFound, Code: "project_not_found", Message: fmt.Sprintf("project %q of this dead letter no longer exists", dl.Job.Project)}
	}
	if err != nil {
		return contracts.JobState{}, err
	}
	actor := principal(c).Key.ID
	claim, ok, err := h.dead.ClaimRetry(ctx, dl.ID, actor, force)
	if err != nil {
		return contracts.JobState{}, err
	}
	if !ok {
		return contracts.JobState{}, &jobs.Error{Kind: jobs.KindConflict, Code: "dead_letter_retried",
			Message: fmt.Sprintf("dead letter %q was retried at %s as job %q; retry with ?force=true to run it again", dl.ID, claim.RetriedAt.Format("2006-01-02T15:04:05Z07:00"), claim.JobID)}
	}
	job := *dl.Job
	job.ProjectIncarnation = proj.Incarnation
	// The retry is this request's act: its trace, as for a submit.
	job.Trace = submission(c, routeProject(c), jobs.Submission{}, contracts.SubmitOptions{}).Trace
	st, err := h.jobs.Resubmit(ctx, job, actor, accesshttp.ClientIP(c).String())
	if err != nil {
		_ = h.dead.ReleaseRetry(context.WithoutCancel(ctx), dl.ID, *claim)
		return contracts.JobState{}, err
	}
	claim.JobID = st.JobID
	if err := h.dead.RetryQueued(ctx, dl.ID, *claim); err != nil {
		h.log.WarnContext(ctx, "dead letter retried but not marked", "dead_letter", dl.ID, "job_id", st.JobID, "err", err)
	}
	h.audit.RecordAsync(contracts.AuditRecord{Kind: contracts.AuditDeadLetterRetried, Actor: actor, Project: dl.Job.Project,
		ClientIP: accesshttp.ClientIP(c).String(), JobID: st.JobID, Detail: map[string]any{"dead_letter": dl.ID, "force": force, "retries": claim.Retries}})
	return st, nil
}

// deleteDeadLetter serves DELETE /v1/dead-letters/{id} (admin): 204.
func (h *Handlers) deleteDeadLetter(c echo.Context) error {
	if err := h.requireAdmin(c); err != nil {
		return h.fail(c, err)
	}
	id := c.Param("id")
	dl, ok, err := h.dead.Find(c.Request().Context(), id)
	if err == nil && ok {
		ok, err = h.dead.Delete(c.Request().Context(), id)
	}
	if err != nil {
		return h.fail(c, err)
	}
	if !ok {
		return h.fail(c, &jobs.Error{Kind: jobs.KindNotFound, Code: "dead_letter_not_found", Message: fmt.Sprintf("no dead letter %q", id)})
	}
	project := ""
	if dl.Job != nil {
		project = dl.Job.Project
	}
	h.audit.RecordAsync(contracts.AuditRecord{Kind: contracts.AuditDeadLetterDeleted, Actor: principal(c).Key.ID, Project: project,
		ClientIP: accesshttp.ClientIP(c).String(), Detail: map[string]any{"dead_letter": id}})
	return c.NoContent(http.StatusNoContent)
}

// retryProjectDeadLetters serves POST /v1/projects/{p}/dead-letters/retry
// (admin): every dead letter of the project not retried yet runs again.
func (h *Handlers) retryProjectDeadLetters(c echo.Context) error {
	project, err := h.adminProject(c)
	if err != nil {
		return h.fail(c, err)
	}
	items := []contracts.DeadLetterRetryItem{}
	retried, skipped := 0, 0
	var after uint64
	for {
		dls, next, err := h.dead.List(c.Request().Context(), project, after, 1000)
		if err != nil {
			return h.fail(c, err)
		}
		for _, dl := range dls {
			if dl.Retried != nil || dl.Job == nil {
				skipped++
				continue
			}
			st, err := h.retryOne(c, dl, false)
			if err != nil {
				items = append(items, contracts.DeadLetterRetryItem{DeadLetter: dl.ID, Error: h.itemError(err)})
				continue
			}
			retried++
			items = append(items, contracts.DeadLetterRetryItem{DeadLetter: dl.ID, JobID: st.JobID})
		}
		if next == 0 {
			break
		}
		after = next
	}
	return c.JSON(http.StatusOK, contracts.DeadLetterRetryAll{Project: project, Retried: retried, Skipped: skipped, Items: items})
}

// purgeProjectDeadLetters serves DELETE /v1/projects/{p}/dead-letters
// (admin): every dead letter of the project is removed.
func (h *Handlers) purgeProjectDeadLetters(c echo.Context) error {
	project, err := h.adminProject(c)
	if err != nil {
		return h.fail(c, err)
	}
	n, err := h.dead.Purge(c.Request().Context(), project)
	if err != nil {
		return h.fail(c, err)
	}
	h.audit.RecordAsync(contracts.AuditRecord{Kind: contracts.AuditDeadLettersPurged, Actor: principal(c).Key.ID, Project: project,
		ClientIP: accesshttp.ClientIP(c).String(), Detail: map[string]any{"purged": n}})
	return c.JSON(http.StatusOK, contracts.DeadLetterPurge{Project: project, Purged: n})
}

// adminProject checks an admin-only route about the project in its path.
// The project may be deleted: its dead letters remain to be handled.
func (h *Handlers) adminProject(c echo.Context) (string, error) {
	if err := h.requireAdmin(c); err != nil {
		return "", err
	}
	project := c.Param("project")
	if !contracts.ValidProjectID(project) {
		return "", reqErr(http.StatusBadRequest, "invalid_project", "project id must be a DNS label")
	}
	return project, nil
}
