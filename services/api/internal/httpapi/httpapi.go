// Package httpapi is the API's HTTP transport: it decodes and checks
// request bodies, calls the jobs service and turns its errors into status
// codes and the {"error":{"code","message"}} body.
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/api/internal/jobs"
)

// Jobs is what the handlers need from the jobs service.
type Jobs interface {
	Submit(ctx context.Context, sub jobs.Submission) (contracts.JobState, bool, error)
	Job(ctx context.Context, id string) (contracts.JobState, error)
}

// Handlers serves the job endpoints.
type Handlers struct {
	jobs         Jobs
	maxBodyBytes int64
	log          *slog.Logger
}

// New returns the handlers. maxBodyBytes bounds every request body.
func New(j Jobs, maxBodyBytes int64, log *slog.Logger) *Handlers {
	return &Handlers{jobs: j, maxBodyBytes: maxBodyBytes, log: log}
}

// Register adds the routes to e.
func (h *Handlers) Register(e *echo.Echo) {
	e.POST("/v1/projects/:project/commands", h.submitCommand)
	e.POST("/v1/projects/:project/claude", h.submitClaude)
	e.GET("/v1/jobs/:id", h.getJob)
}

// commonFields are accepted by every submit endpoint.
type commonFields struct {
	Env            map[string]string `json:"env"`
	WorkDir        string            `json:"work_dir"`
	Priority       string            `json:"priority"`
	TimeoutSeconds int               `json:"timeout_seconds"`
	IdempotencyKey string            `json:"idempotency_key"`
}

type commandRequest struct {
	Command []string `json:"command"`
	commonFields
}

type claudeRequest struct {
	Prompt string `json:"prompt"`
	commonFields
}

// SubmitResponse is the 202 body of a submit.
type SubmitResponse struct {
	JobID       string           `json:"job_id"`
	StreamID    string           `json:"stream_id"`
	Status      contracts.Status `json:"status"`
	EventsURL   string           `json:"events_url"`
	JobURL      string           `json:"job_url"`
	SubmittedAt string           `json:"submitted_at"`
}

// JobResponse is the body of GET /v1/jobs/{id}.
type JobResponse struct {
	contracts.JobState
	EventsURL string `json:"events_url"`
}

func (h *Handlers) submitCommand(c echo.Context) error {
	var req commandRequest
	if err := h.decode(c, &req); err != nil {
		return h.fail(c, err)
	}
	return h.submit(c, jobs.Submission{Kind: contracts.KindExec, Command: req.Command}, req.commonFields)
}

func (h *Handlers) submitClaude(c echo.Context) error {
	var req claudeRequest
	if err := h.decode(c, &req); err != nil {
		return h.fail(c, err)
	}
	return h.submit(c, jobs.Submission{Kind: contracts.KindClaude, Prompt: req.Prompt}, req.commonFields)
}

func (h *Handlers) submit(c echo.Context, sub jobs.Submission, f commonFields) error {
	sub.Project = c.Param("project")
	sub.Env, sub.WorkDir, sub.Priority, sub.TimeoutSeconds = f.Env, f.WorkDir, f.Priority, f.TimeoutSeconds
	sub.IdempotencyKey = f.IdempotencyKey
	if sub.IdempotencyKey == "" {
		sub.IdempotencyKey = c.Request().Header.Get("Idempotency-Key")
	}
	if tp := c.Request().Header.Get("traceparent"); tp != "" {
		sub.Trace = map[string]string{"traceparent": tp, "tracestate": c.Request().Header.Get("tracestate")}
	}
	st, replayed, err := h.jobs.Submit(c.Request().Context(), sub)
	if err != nil {
		return h.fail(c, err)
	}
	if replayed {
		c.Response().Header().Set("Idempotent-Replayed", "true")
	}
	jobURL := "/v1/jobs/" + st.JobID
	c.Response().Header().Set(echo.HeaderLocation, jobURL)
	return c.JSON(http.StatusAccepted, SubmitResponse{
		JobID: st.JobID, StreamID: st.StreamID, Status: st.Status,
		EventsURL: eventsURL(st.StreamID), JobURL: jobURL,
		SubmittedAt: st.SubmittedAt.Format("2006-01-02T15:04:05.000000000Z07:00"),
	})
}

func (h *Handlers) getJob(c echo.Context) error {
	st, err := h.jobs.Job(c.Request().Context(), c.Param("id"))
	if err != nil {
		return h.fail(c, err)
	}
	return c.JSON(http.StatusOK, JobResponse{JobState: st, EventsURL: eventsURL(st.StreamID)})
}

func eventsURL(streamID string) string { return "/v1/streams/" + streamID + "/events" }

// decode reads one JSON object into v, refusing what the jobs service
// cannot judge: wrong media type, oversize or non-UTF-8 bodies, unknown
// fields and trailing data.
func (h *Handlers) decode(c echo.Context, v any) error {
	if ct := c.Request().Header.Get(echo.HeaderContentType); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != echo.MIMEApplicationJSON {
			return reqErr(http.StatusUnsupportedMediaType, "unsupported_media_type", "send the body as application/json")
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Response(), c.Request().Body, h.maxBodyBytes))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return reqErr(http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("the body must be at most %d bytes", h.maxBodyBytes))
	}
	if err != nil {
		return reqErr(http.StatusBadRequest, "unreadable_body", "the request body could not be read")
	}
	if !utf8.Valid(body) {
		// encoding/json would silently turn bad bytes into U+FFFD.
		return reqErr(http.StatusBadRequest, "invalid_utf8", "the body must be valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if dec.More() {
		return reqErr(http.StatusBadRequest, "invalid_json", "the body must hold exactly one JSON object")
	}
	return nil
}

func decodeError(err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return reqErr(http.StatusBadRequest, "invalid_json", "the body is empty; send a JSON object")
	case errors.As(err, &syntax), errors.Is(err, io.ErrUnexpectedEOF):
		return reqErr(http.StatusBadRequest, "invalid_json", "the body is not valid JSON: "+err.Error())
	case errors.As(err, &typ):
		field := strings.TrimPrefix(typ.Field, "commonFields.")
		if field == "" {
			return reqErr(http.StatusBadRequest, "invalid_json", "the body must be a JSON object")
		}
		return reqErr(http.StatusBadRequest, "invalid_field", fmt.Sprintf("field %q must be %s, not %s", field, typ.Type, typ.Value))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return reqErr(http.StatusBadRequest, "unknown_field", strings.TrimPrefix(err.Error(), "json: ")+" (check the spelling; unknown fields are refused)")
	}
	return reqErr(http.StatusBadRequest, "invalid_json", err.Error())
}

// requestError is a request the handlers refuse before the jobs service
// sees it.
type requestError struct {
	status        int
	code, message string
}

func (e *requestError) Error() string { return e.code + ": " + e.message }

func reqErr(status int, code, msg string) error {
	return &requestError{status: status, code: code, message: msg}
}

func (h *Handlers) fail(c echo.Context, err error) error {
	var re *requestError
	if errors.As(err, &re) {
		return WriteError(c, re.status, re.code, re.message)
	}
	var je *jobs.Error
	if errors.As(err, &je) {
		status := http.StatusBadRequest
		if je.Kind == jobs.KindNotFound {
			status = http.StatusNotFound
		}
		return WriteError(c, status, je.Code, je.Message)
	}
	h.log.ErrorContext(c.Request().Context(), "request failed", "path", c.Path(), "err", err)
	c.Response().Header().Set("Retry-After", "1")
	return WriteError(c, http.StatusServiceUnavailable, "unavailable", "the job queue is unavailable; retry shortly (with the same idempotency_key to be safe)")
}

// WriteError answers with rdev's error body.
func WriteError(c echo.Context, status int, code, msg string) error {
	return c.JSON(status, contracts.ErrorBody{Error: contracts.ErrorDetail{Code: code, Message: msg}})
}
