package httpapi

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/access/accesshttp"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/api/internal/jobs"
)

// submitBatch serves POST /v1/projects/{project}/batches: a JSON array of
// job objects like the single submit's (a "command" or a "prompt" each),
// or NDJSON with content-type application/x-ndjson; ?atomic=true makes it
// all-or-nothing.
func (h *Handlers) submitBatch(c echo.Context) error {
	atomic, err := strconv.ParseBool(cmp.Or(c.QueryParam("atomic"), "false"))
	if err != nil {
		return h.fail(c, reqErr(http.StatusBadRequest, "invalid_atomic", "atomic must be true or false"))
	}
	raws, err := h.batchItems(c)
	if err != nil {
		return h.fail(c, err)
	}
	proj := routeProject(c)
	subs := make([]jobs.Submission, len(raws))
	pre := make([]error, len(raws)) // refused before the jobs service sees them
	for i, raw := range raws {
		var it contracts.BatchItem
		if err := strictDecode(raw, &it); err != nil {
			pre[i] = err
			continue
		}
		sub := jobs.Submission{Kind: contracts.KindExec, Command: it.Command}
		switch {
		case it.Prompt != "" && it.Command != nil:
			pre[i] = reqErr(http.StatusBadRequest, "invalid_item", "an item has either a command or a prompt, not both")
			continue
		case it.Prompt != "":
			sub = jobs.Submission{Kind: contracts.KindClaude, Prompt: it.Prompt, Claude: it.ClaudeOptions}
		case !reflect.ValueOf(it.ClaudeOptions).IsZero():
			pre[i] = reqErr(http.StatusBadRequest, "invalid_item", "Claude options (model, max_turns, …) go with a prompt, not a command")
			continue
		}
		subs[i] = submission(c, proj, sub, it.SubmitOptions)
	}
	// Items refused here are kept out of the service's view; their slots
	// come back with their errors.
	var idx []int
	var valid []jobs.Submission
	for i := range subs {
		if pre[i] == nil {
			idx, valid = append(idx, i), append(valid, subs[i])
		}
	}
	items := make([]contracts.BatchItemResult, len(raws))
	refused := false
	for i, err := range pre {
		items[i].Index = i
		if err != nil {
			items[i].Error, refused = h.itemError(err), true
		}
	}
	if atomic && refused {
		return h.refuseBatch(c, items)
	}
	b, results, err := h.jobs.SubmitBatch(c.Request().Context(), proj.ID, valid, atomic)
	for k, r := range results {
		i := idx[k]
		if r.Err != nil {
			items[i].Error = h.itemError(r.Err)
			continue
		}
		if r.State.JobID != "" {
			items[i].JobID, items[i].StreamID = r.State.JobID, r.State.StreamID
			items[i].EventsURL = h.eventsURL(c, r.State.StreamID, r.State.ProjectIncarnation)
		}
	}
	switch {
	case errors.Is(err, jobs.ErrBatchRefused):
		return h.refuseBatch(c, items)
	case err != nil && (atomic || len(b.JobIDs) == 0):
		return h.fail(c, err)
	case err != nil:
		// The jobs are queued; only the batch record failed.
		h.log.WarnContext(c.Request().Context(), "batch record not stored", "batch_id", b.ID, "err", err)
	}
	resp := contracts.BatchResponse{BatchID: b.ID, Items: items, BatchURL: "/v1/batches/" + b.ID, EventsURL: h.batchEventsURL(c, b.ID, b.ProjectIncarnation)}
	for _, it := range items {
		if it.Error == nil {
			resp.Accepted++
		} else {
			resp.Rejected++
		}
	}
	c.Response().Header().Set(echo.HeaderLocation, resp.BatchURL)
	return c.JSON(http.StatusAccepted, resp)
}

// refuseBatch answers an atomic batch with a refused item: 400, nothing
// queued, and the items saying which were wrong.
func (h *Handlers) refuseBatch(c echo.Context, items []contracts.BatchItemResult) error {
	n := 0
	for i, it := range items {
		if it.Error != nil {
			n++
		}
		// Nothing was queued: no item has a job, a stream or a URL.
		items[i].JobID, items[i].StreamID, items[i].EventsURL = "", "", ""
	}
	return c.JSON(http.StatusBadRequest, contracts.BatchRefused{
		Error: contracts.ErrorDetail{Code: "batch_refused", Message: fmt.Sprintf("%d of %d items were refused, so none was queued (atomic batch)", n, len(items))},
		Items: items,
	})
}

// itemError is the error detail of a refused item.
func (h *Handlers) itemError(err error) *contracts.ErrorDetail {
	var re *requestError
	var je *jobs.Error
	switch {
	case errors.As(err, &re):
		return &contracts.ErrorDetail{Code: re.code, Message: re.message}
	case errors.As(err, &je):
		return &contracts.ErrorDetail{Code: je.Code, Message: je.Message}
	}
	return &contracts.ErrorDetail{Code: "unavailable", Message: "the job could not be queued; submit it again (with an idempotency_key to be safe)"}
}

// batchItems reads a batch body: a JSON array, or NDJSON.
func (h *Handlers) batchItems(c echo.Context) ([]json.RawMessage, error) {
	mt := echo.MIMEApplicationJSON
	if ct := c.Request().Header.Get(echo.HeaderContentType); ct != "" {
		var err error
		if mt, _, err = mime.ParseMediaType(ct); err != nil || (mt != echo.MIMEApplicationJSON && mt != "application/x-ndjson") {
			return nil, reqErr(http.StatusUnsupportedMediaType, "unsupported_media_type", "send a batch as application/json (an array) or application/x-ndjson (one object per line)")
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Response(), c.Request().Body, h.maxBatchBytes))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, reqErr(http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("a batch body must be at most %d bytes", h.maxBatchBytes))
	}
	if err != nil {
		return nil, reqErr(http.StatusBadRequest, "unreadable_body", "the request body could not be read")
	}
	if !utf8.Valid(body) {
		return nil, reqErr(http.StatusBadRequest, "invalid_utf8", "the body must be valid UTF-8")
	}
	var raws []json.RawMessage
	if mt == "application/x-ndjson" {
		sc := bufio.NewScanner(bytes.NewReader(body))
		sc.Buffer(make([]byte, 0, 64<<10), len(body)+1)
		for sc.Scan() {
			if line := bytes.TrimSpace(sc.Bytes()); len(line) > 0 {
				raws = append(raws, json.RawMessage(bytes.Clone(line)))
			}
		}
	} else {
		dec := json.NewDecoder(bytes.NewReader(body))
		if err := dec.Decode(&raws); err != nil {
			return nil, reqErr(http.StatusBadRequest, "invalid_json", "a batch must be a JSON array of job objects: "+err.Error())
		}
		if dec.More() {
			return nil, reqErr(http.StatusBadRequest, "invalid_json", "the body must hold exactly one JSON array")
		}
	}
	if len(raws) == 0 {
		return nil, reqErr(http.StatusBadRequest, "empty_batch", "a batch needs at least one job")
	}
	if len(raws) > jobs.MaxBatchItems {
		return nil, reqErr(http.StatusRequestEntityTooLarge, "batch_too_large", fmt.Sprintf("a batch holds at most %d jobs; this one has %d", jobs.MaxBatchItems, len(raws)))
	}
	return raws, nil
}

// batchEventsURL is the batch's event stream URL with a token for it.
func (h *Handlers) batchEventsURL(c echo.Context, batchID, incarnation string) string {
	tok := h.signer.SignFor(access.BatchResource(batchID), access.Grant{KeyID: principal(c).Key.ID, Incarnation: incarnation}, time.Now().Add(h.tokenTTL))
	return "/v1/batches/" + batchID + "/events?token=" + url.QueryEscape(tok)
}

// batchFor loads a batch the caller may act on in role.
func (h *Handlers) batchFor(c echo.Context, role access.Role) (contracts.Batch, error) {
	b, err := h.jobs.Batch(c.Request().Context(), c.Param("id"))
	if err != nil {
		return b, err
	}
	missing := &jobs.Error{Kind: jobs.KindNotFound, Code: "batch_not_found", Message: fmt.Sprintf("no batch %q (unknown, or expired)", b.ID)}
	return b, h.resourceAccess(c, b.Project, b.ProjectIncarnation, role, missing)
}

// jobAccess checks that the caller may act in role on a job.
func (h *Handlers) jobAccess(c echo.Context, st contracts.JobState, role access.Role) error {
	missing := &jobs.Error{Kind: jobs.KindNotFound, Code: "job_not_found", Message: fmt.Sprintf("no job %q (unknown, or its state expired)", st.JobID)}
	return h.resourceAccess(c, st.Project, st.ProjectIncarnation, role, missing)
}

// resourceAccess checks role on the project of something named by id,
// made in the project's given incarnation. A caller who cannot even read
// the project gets missing: the thing's existence is not its business;
// so does everyone when the project now is another incarnation (deleted
// and created again). A deleted project's things stay reachable to those
// its scopes allowed.
func (h *Handlers) resourceAccess(c echo.Context, project, incarnation string, role access.Role, missing error) error {
	p := principal(c)
	if !p.Can(project, access.RoleRead) && !p.Can(project, role) {
		return missing
	}
	proj, err := h.project(c, project, role)
	var ae *access.Error
	if errors.As(err, &ae) && ae.Kind == access.KindNotFound {
		return nil
	}
	if err == nil && proj.Incarnation != incarnation {
		return missing
	}
	return err
}

// BatchCounter counts a batch's jobs by status without reading every
// job's state.
type BatchCounter interface {
	// Counts returns b's jobs by status, leaving out jobs whose state
	// expired.
	Counts(ctx context.Context, b contracts.Batch) (map[contracts.Status]int, error)
}

// getBatch serves GET /v1/batches/{id}?cursor=&limit= (limit 1..1000,
// default 100; cursor = the next_cursor of the previous page). The
// counts come from the batch counter, and only the page's states are
// read (in one request per 256), beside the counts: the call costs the
// same for 10 jobs or 10,000.
func (h *Handlers) getBatch(c echo.Context) error {
	b, err := h.batchFor(c, access.RoleRead)
	if err != nil {
		return h.fail(c, err)
	}
	from, limit, err := page(c)
	if err != nil {
		return h.fail(c, err)
	}
	ctx := c.Request().Context()
	var ids []string
	if from < len(b.JobIDs) {
		ids = b.JobIDs[from:min(from+limit, len(b.JobIDs))]
	}
	var states []contracts.JobState
	var serr error
	read := make(chan struct{})
	go func() {
		defer close(read)
		states, serr = h.jobs.States(ctx, ids)
	}()
	counts, err := h.batchCounts.Counts(ctx, b)
	<-read
	if err != nil {
		return h.fail(c, fmt.Errorf("count batch %s: %w: %w", b.ID, jobs.ErrUnavailable, err))
	}
	if serr != nil {
		return h.fail(c, serr)
	}
	resp := contracts.BatchStatus{Batch: b, Counts: counts, Jobs: states, EventsURL: h.batchEventsURL(c, b.ID, b.ProjectIncarnation)}
	resp.JobIDs = make([]string, 0, len(states)) // the page's, never null
	for _, st := range states {
		resp.JobIDs = append(resp.JobIDs, st.JobID)
	}
	if from+len(ids) < len(b.JobIDs) {
		resp.NextCursor = strconv.Itoa(from + len(ids))
	}
	return c.JSON(http.StatusOK, resp)
}

func page(c echo.Context) (from, limit int, err error) {
	limit = 100
	if v := c.QueryParam("cursor"); v != "" {
		if from, err = strconv.Atoi(v); err != nil || from < 0 {
			return 0, 0, reqErr(http.StatusBadRequest, "invalid_cursor", "cursor must be the next_cursor of an earlier page")
		}
	}
	if v := c.QueryParam("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > 1000 {
			return 0, 0, reqErr(http.StatusBadRequest, "invalid_limit", "limit must be between 1 and 1000")
		}
	}
	return from, limit, nil
}

// cancelJob serves POST /v1/jobs/{id}/cancel: 200 with the cancelled state
// for a queued job, 202 while a running job is being stopped, 409 for a
// job that already ended.
func (h *Handlers) cancelJob(c echo.Context) error {
	st, err := h.jobs.Job(c.Request().Context(), c.Param("id"))
	if err == nil {
		err = h.jobAccess(c, st, access.RoleSubmit)
	}
	if err == nil {
		var now contracts.JobState
		now, err = h.jobs.Cancel(c.Request().Context(), st.JobID)
		h.cancelAudited(c, contracts.AuditJobCancelRequested, st.Project, st.JobID, map[string]any{"outcome": cancelOutcome(now, err)})
		st = now
	}
	if err != nil {
		return h.fail(c, err)
	}
	status := http.StatusOK
	if !st.Status.Final() {
		status = http.StatusAccepted
	}
	return c.JSON(status, contracts.JobResponse{JobState: st, EventsURL: h.eventsURL(c, st.StreamID, st.ProjectIncarnation)})
}

// cancelOutcome names what a cancel did, for the audit record.
func cancelOutcome(st contracts.JobState, err error) string {
	switch {
	case err != nil:
		return "refused"
	case st.Status.Final():
		return "cancelled"
	}
	return "stopping"
}

// cancelAudited records who asked for a cancel (the job_finished record
// that follows it is the system's).
func (h *Handlers) cancelAudited(c echo.Context, kind contracts.AuditKind, project, jobID string, detail map[string]any) {
	h.audit.RecordAsync(contracts.AuditRecord{Kind: kind, Actor: principal(c).Key.ID, Project: project,
		ClientIP: accesshttp.ClientIP(c).String(), JobID: jobID, Detail: detail})
}

// cancelBatch serves POST /v1/batches/{id}/cancel: every job of the batch
// that has not ended is cancelled (202 with counts). As for one job, a
// batch whose every job had already ended answers 409 batch_finished.
func (h *Handlers) cancelBatch(c echo.Context) error {
	b, err := h.batchFor(c, access.RoleSubmit)
	if err != nil {
		return h.fail(c, err)
	}
	var counts contracts.BatchCancelCounts
	for _, id := range b.JobIDs {
		st, err := h.jobs.Cancel(c.Request().Context(), id)
		var je *jobs.Error
		switch {
		case errors.As(err, &je):
			counts.AlreadyEnded++
		case err != nil:
			return h.fail(c, err)
		case st.Status.Final():
			counts.Cancelled++
		default:
			counts.Stopping++
		}
	}
	h.cancelAudited(c, contracts.AuditBatchCancelRequested, b.Project, "", map[string]any{"batch_id": b.ID,
		"jobs": map[string]int{"cancelled": counts.Cancelled, "stopping": counts.Stopping, "already_ended": counts.AlreadyEnded}})
	if counts.AlreadyEnded == len(b.JobIDs) {
		return c.JSON(http.StatusConflict, contracts.BatchCancelResponse{
			Error:   &contracts.ErrorDetail{Code: "batch_finished", Message: fmt.Sprintf("every job of batch %q had already ended; nothing was cancelled", b.ID)},
			BatchID: b.ID, Jobs: counts,
		})
	}
	return c.JSON(http.StatusAccepted, contracts.BatchCancelResponse{BatchID: b.ID, Jobs: counts})
}
