// Package httpapi is the API's HTTP transport: it decodes and checks
// request bodies, calls the jobs service and turns its errors into status
// codes and the {"error":{"code","message"}} body.
package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/access/accesshttp"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/contracts/openapi"
	"github.com/rdev-dev/rdev/pkg/telemetry/propagate"
	"github.com/rdev-dev/rdev/services/api/internal/admin"
	"github.com/rdev-dev/rdev/services/api/internal/jobs"
	"github.com/rdev-dev/rdev/services/api/internal/ratelimit"
)

// Jobs is what the handlers need from the jobs service.
type Jobs interface {
	Submit(ctx context.Context, sub jobs.Submission) (contracts.JobState, bool, error)
	Job(ctx context.Context, id string) (contracts.JobState, error)
	Cancel(ctx context.Context, id string) (contracts.JobState, error)
	SubmitBatch(ctx context.Context, project string, subs []jobs.Submission, atomic bool) (contracts.Batch, []jobs.BatchItem, error)
	Batch(ctx context.Context, id string) (contracts.Batch, error)
	States(ctx context.Context, ids []string) ([]contracts.JobState, error)
	Resubmit(ctx context.Context, job contracts.Job, actor, clientIP string) (contracts.JobState, error)
	Retry(ctx context.Context, st contracts.JobState, by jobs.Retrier) (contracts.JobState, bool, error)
	CancelProject(ctx context.Context, project string) (int, error)
}

// Deps are the handlers' collaborators.
type Deps struct {
	Jobs     Jobs
	Admin    Admin
	Keys     Keys
	Projects Projects
	Limiter  Limiter
	Audit    Auditor
	Query    AuditQuerier
	Dead     DeadLetters
	// Index lists jobs.
	Index JobIndex
	// Output reads jobs' output.
	Output Output
	// BatchCounts counts batches' jobs by status.
	BatchCounts BatchCounter
	// Pauses keeps the paused priority levels.
	Pauses Pauses
	// Schedules keeps projects' cron schedules.
	Schedules Schedules
	// Secrets keeps project secrets; nil when no secrets key is
	// configured (the secrets endpoints then answer 409 secrets_disabled).
	Secrets Secrets
	// Webhooks manages webhook endpoints; nil when no secrets key is
	// configured (their endpoints then answer 409 webhooks_disabled).
	Webhooks Webhooks
	// NATSCredentials mints NATS credentials; nil when the API serves no
	// auth callout (the endpoint then answers 409
	// nats_credentials_disabled).
	NATSCredentials NATSCredentials
	// Signer signs the stream tokens of events_url, valid for TokenTTL.
	Signer   *access.Signer
	TokenTTL time.Duration
	// KeyLimit applies to keys without a rate limit of their own.
	KeyLimit ratelimit.Limit
	// MaxBodyBytes bounds every request body but a batch's.
	MaxBodyBytes int64
	// MaxBatchBytes bounds a batch body.
	MaxBatchBytes int64
	Log           *slog.Logger
}

// Handlers serves the /v1 endpoints of the API.
type Handlers struct {
	jobs          Jobs
	admin         Admin
	keys          Keys
	projects      Projects
	limiter       Limiter
	audit         Auditor
	query         AuditQuerier
	dead          DeadLetters
	index         JobIndex
	output        Output
	batchCounts   BatchCounter
	pauses        Pauses
	schedules     Schedules
	secrets       Secrets
	webhooks      Webhooks
	natsCreds     NATSCredentials
	signer        *access.Signer
	tokenTTL      time.Duration
	keyLimit      ratelimit.Limit
	maxBodyBytes  int64
	maxBatchBytes int64
	log           *slog.Logger
	observer      Observer
}

// New returns the handlers.
func New(d Deps) *Handlers {
	return &Handlers{jobs: d.Jobs, admin: d.Admin, keys: d.Keys, projects: d.Projects, limiter: d.Limiter,
		audit: d.Audit, query: d.Query, dead: d.Dead, index: d.Index, output: d.Output, batchCounts: d.BatchCounts, pauses: d.Pauses, schedules: d.Schedules, secrets: d.Secrets, webhooks: d.Webhooks, natsCreds: d.NATSCredentials, signer: d.Signer, maxBatchBytes: d.MaxBatchBytes, tokenTTL: d.TokenTTL, keyLimit: d.KeyLimit,
		maxBodyBytes: d.MaxBodyBytes, log: d.Log}
}

// Register adds the routes to e, behind mw and then authentication. Every
// route needs an API key but GET /v1/openapi.json. Unless the
// server says otherwise, the client address is the TCP peer's: proxy
// headers are not believed by default.
func (h *Handlers) Register(e *echo.Echo, mw ...echo.MiddlewareFunc) {
	if e.IPExtractor == nil {
		e.IPExtractor = echo.ExtractIPDirect()
	}
	// Route-level middleware, not group-level: a group with middleware
	// answers 404 for every unknown method under it, hiding 405s. Routes
	// with a role are about the project in their path.
	for _, r := range []struct {
		method, path string
		handler      echo.HandlerFunc
		role         access.Role
	}{
		{http.MethodPost, "/projects/:project/commands", h.submitCommand, access.RoleSubmit},
		{http.MethodPost, "/projects/:project/claude", h.submitClaude, access.RoleSubmit},
		{http.MethodGet, "/jobs", h.listJobs, ""},
		{http.MethodGet, "/projects/:project/jobs", h.listProjectJobs, access.RoleRead},
		{http.MethodPost, "/projects/:project/nats-credentials", h.createNATSCredentials, access.RoleRead},
		{http.MethodGet, "/jobs/:id", h.getJob, ""},
		{http.MethodGet, "/jobs/:id/logs", h.getLogs, ""},
		{http.MethodPost, "/jobs/:id/cancel", h.cancelJob, ""},
		{http.MethodPost, "/jobs/:id/retry", h.retryJob, ""},
		{http.MethodPost, "/projects/:project/batches", h.submitBatch, access.RoleSubmit},
		{http.MethodGet, "/batches/:id", h.getBatch, ""},
		{http.MethodPost, "/batches/:id/cancel", h.cancelBatch, ""},
		{http.MethodGet, "/dead-letters", h.deadLetters, ""},
		{http.MethodPost, "/dead-letters/:id/retry", h.retryDeadLetter, ""},
		{http.MethodDelete, "/dead-letters/:id", h.deleteDeadLetter, ""},
		{http.MethodPost, "/projects/:project/dead-letters/retry", h.retryProjectDeadLetters, ""},
		{http.MethodDelete, "/projects/:project/dead-letters", h.purgeProjectDeadLetters, ""},

		{http.MethodPost, "/projects", h.createProject, ""},
		{http.MethodGet, "/projects", h.listProjects, ""},
		{http.MethodGet, "/projects/:project", h.getProject, access.RoleRead},
		// Admin only, and not behind the project's allowed IPs: an admin
		// must be able to fix a project that shuts everyone out.
		{http.MethodPatch, "/projects/:project", h.updateProject, ""},
		{http.MethodDelete, "/projects/:project", h.deleteProject, ""},

		{http.MethodPost, "/keys", h.createKey, ""},
		{http.MethodGet, "/keys", h.listKeys, ""},
		{http.MethodGet, "/keys/self", h.selfKey, ""},
		{http.MethodGet, "/keys/:id", h.getKey, ""},
		{http.MethodDelete, "/keys/:id", h.revokeKey, ""},

		// Admin only: whoever sets a project's secrets decides what its
		// jobs may reach.
		{http.MethodPut, "/projects/:project/secrets/:name", h.putSecret, ""},
		{http.MethodGet, "/projects/:project/secrets", h.listSecrets, ""},
		{http.MethodDelete, "/projects/:project/secrets/:name", h.deleteSecret, ""},

		// Admin only (see webhookProject).
		{http.MethodPost, "/projects/:project/webhooks", h.createWebhook, ""},
		{http.MethodGet, "/projects/:project/webhooks", h.listWebhooks, ""},
		{http.MethodGet, "/projects/:project/webhooks/:id", h.getWebhook, ""},
		{http.MethodPatch, "/projects/:project/webhooks/:id", h.patchWebhook, ""},
		{http.MethodDelete, "/projects/:project/webhooks/:id", h.deleteWebhook, ""},
		{http.MethodPost, "/projects/:project/webhooks/:id/rotate-secret", h.rotateWebhookSecret, ""},
		{http.MethodPost, "/projects/:project/webhooks/:id/test", h.testWebhook, ""},
		{http.MethodGet, "/projects/:project/webhooks/:id/deliveries", h.listDeliveries, ""},
		{http.MethodGet, "/projects/:project/webhooks/:id/deliveries/:delivery", h.getDelivery, ""},
		{http.MethodPost, "/projects/:project/webhooks/:id/deliveries/:delivery/redeliver", h.redeliver, ""},

		{http.MethodGet, "/queues", h.listQueues, ""},
		{http.MethodPost, "/queues/:priority/pause", h.pauseQueue, ""},
		{http.MethodPost, "/queues/:priority/resume", h.resumeQueue, ""},
		{http.MethodGet, "/audit", h.auditLog, ""},
		{http.MethodGet, "/projects/:project/audit", h.projectAuditLog, access.RoleRead},

		{http.MethodPost, "/projects/:project/schedules", h.createSchedule, access.RoleSubmit},
		{http.MethodGet, "/projects/:project/schedules", h.listSchedules, access.RoleRead},
		{http.MethodGet, "/projects/:project/schedules/:schedule", h.getSchedule, access.RoleRead},
		{http.MethodPatch, "/projects/:project/schedules/:schedule", h.updateSchedule, access.RoleSubmit},
		{http.MethodDelete, "/projects/:project/schedules/:schedule", h.deleteSchedule, access.RoleSubmit},
		{http.MethodPost, "/projects/:project/schedules/:schedule/trigger", h.triggerSchedule, access.RoleSubmit},
		{http.MethodPost, "/projects/:project/schedules/:schedule/pause", h.pauseSchedule, access.RoleSubmit},
		{http.MethodPost, "/projects/:project/schedules/:schedule/resume", h.resumeSchedule, access.RoleSubmit},
	} {
		chain := append(append([]echo.MiddlewareFunc{}, mw...), h.authenticate(r.role == ""))
		if r.role != "" {
			chain = append(chain, h.projectAccess(r.role))
		}
		e.Add(r.method, "/v1"+r.path, r.handler, chain...)
	}
	// Open: a client reads the contract before it has a key.
	e.GET("/v1/openapi.json", func(c echo.Context) error {
		return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, openapi.JSON())
	}, mw...)
}

// claudeFieldsHint lists what a Claude submit accepts, for the error that
// refuses anything else.
const claudeFieldsHint = "a Claude job takes prompt, the options model, max_turns, allowed_tools, disallowed_tools, " +
	"permission_mode, append_system_prompt, output_format, resume, continue_job, and env, work_dir, priority, " +
	"timeout_seconds, idempotency_key, max_attempts, retry_on_exit_codes, stderr"

func (h *Handlers) submitCommand(c echo.Context) error {
	var req contracts.CommandRequest
	if err := h.decode(c, &req); err != nil {
		return h.fail(c, err)
	}
	return h.submit(c, routeProject(c), jobs.Submission{Kind: contracts.KindExec, Command: req.Command}, req.SubmitOptions)
}

func (h *Handlers) submitClaude(c echo.Context) error {
	var req contracts.ClaudeRequest
	if err := h.decode(c, &req); err != nil {
		var re *requestError
		if errors.As(err, &re) && re.code == "unknown_field" {
			re.message += "; " + claudeFieldsHint
		}
		return h.fail(c, err)
	}
	return h.submit(c, routeProject(c), jobs.Submission{Kind: contracts.KindClaude, Prompt: req.Prompt, Claude: req.ClaudeOptions}, req.SubmitOptions)
}

// submission completes sub with the request's fields, the project's
// defaults, who asks and the caller's trace context.
func submission(c echo.Context, proj access.Project, sub jobs.Submission, f contracts.SubmitOptions) jobs.Submission {
	sub.Project = proj.ID
	if f.Priority == "" {
		f.Priority = string(proj.DefaultPriority)
	}
	sub.Actor, sub.ClientIP = principal(c).Key.ID, accesshttp.ClientIP(c).String()
	sub.CanRead, sub.ProjectIncarnation = principal(c).Can(proj.ID, access.RoleRead), proj.Incarnation
	sub.Env, sub.SecretEnv = splitEnv(f.Env)
	sub.WorkDir, sub.Priority, sub.TimeoutSeconds = f.WorkDir, f.Priority, f.TimeoutSeconds
	sub.IdempotencyKey = f.IdempotencyKey
	sub.MaxAttempts, sub.RetryOnExitCodes = f.MaxAttempts, f.RetryOnExitCodes
	sub.Stderr = f.Stderr
	sub.RunAt, sub.RunInSeconds, sub.Deadline = f.RunAt, f.RunInSeconds, f.Deadline
	if tp := c.Request().Header.Get("traceparent"); tp != "" {
		sub.Trace = map[string]string{"traceparent": tp, "tracestate": c.Request().Header.Get("tracestate")}
	}
	if tc := propagate.InjectMap(c.Request().Context()); tc != nil {
		sub.Trace = tc // the request's span: a child of the caller's, if any
	}
	return sub
}

func (h *Handlers) submit(c echo.Context, proj access.Project, sub jobs.Submission, f contracts.SubmitOptions) error {
	sub = submission(c, proj, sub, f)
	if sub.IdempotencyKey == "" {
		sub.IdempotencyKey = c.Request().Header.Get("Idempotency-Key")
	}
	st, replayed, err := h.jobs.Submit(c.Request().Context(), sub)
	if err != nil {
		return h.fail(c, err)
	}
	if replayed {
		c.Response().Header().Set("Idempotent-Replayed", "true")
	}
	h.observeSubmitted(c, st, replayed)
	return h.accepted(c, st)
}

// accepted answers a request that queued job st: 202, its submit reply,
// and its URL in Location.
func (h *Handlers) accepted(c echo.Context, st contracts.JobState) error {
	jobURL := "/v1/jobs/" + st.JobID
	c.Response().Header().Set(echo.HeaderLocation, jobURL)
	return c.JSON(http.StatusAccepted, contracts.SubmitResponse{
		JobID: st.JobID, StreamID: st.StreamID, Status: st.Status,
		EventsURL: h.eventsURL(c, st.StreamID, st.ProjectIncarnation), JobURL: jobURL,
		SubmittedAt: st.SubmittedAt.Format("2006-01-02T15:04:05.000000000Z07:00"),
		TraceID:     st.TraceID,
	})
}

func (h *Handlers) getJob(c echo.Context) error {
	st, err := h.jobs.Job(c.Request().Context(), c.Param("id"))
	if err == nil {
		err = h.jobAccess(c, st, access.RoleRead)
	}
	if err != nil {
		return h.fail(c, err)
	}
	return c.JSON(http.StatusOK, contracts.JobResponse{JobState: st, EventsURL: h.eventsURL(c, st.StreamID, st.ProjectIncarnation)})
}

// eventsURL is the job's stream URL with a token that opens that stream
// alone for TokenTTL, for clients that cannot send headers. The token is
// bound to the caller's key and the project's incarnation: it stops
// working when the key is revoked or the project deleted.
func (h *Handlers) eventsURL(c echo.Context, streamID, incarnation string) string {
	tok := h.signer.SignFor(access.StreamResource(streamID), access.Grant{KeyID: principal(c).Key.ID, Incarnation: incarnation}, time.Now().Add(h.tokenTTL))
	return "/v1/streams/" + streamID + "/events?token=" + url.QueryEscape(tok)
}

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
	return strictDecode(body, v)
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
		return accesshttp.WriteError(c, re.status, re.code, re.message)
	}
	// Refusals of access rules and of the jobs service alike.
	if ae, status, ok := accesshttp.Refusal(err); ok {
		if status == http.StatusUnauthorized || status == http.StatusForbidden {
			h.denied(c, status, ae.Code)
		}
		return accesshttp.Refuse(c, ae)
	}
	var rl *rateLimited
	if errors.As(err, &rl) {
		h.denied(c, http.StatusTooManyRequests, "rate_limited")
		c.Response().Header().Set("Retry-After", strconv.Itoa(ceilSeconds(rl.d.RetryAfter)))
		return accesshttp.WriteError(c, http.StatusTooManyRequests, "rate_limited",
			fmt.Sprintf("rate limit of %d requests exceeded; retry after %s", rl.d.Limit, rl.d.RetryAfter.Round(time.Millisecond)))
	}
	if errors.Is(err, admin.ErrUnavailable) {
		h.log.ErrorContext(c.Request().Context(), "request failed", "path", c.Path(), "err", err)
		c.Response().Header().Set("Retry-After", "1")
		return accesshttp.WriteError(c, http.StatusServiceUnavailable, "unavailable", "the access store is unavailable; retry shortly")
	}
	h.log.ErrorContext(c.Request().Context(), "request failed", "path", c.Path(), "err", err)
	c.Response().Header().Set("Retry-After", "1")
	if errors.Is(err, ratelimit.ErrUnavailable) {
		return accesshttp.WriteError(c, http.StatusServiceUnavailable, "unavailable", "the rate limiter is unavailable and the server is set to refuse requests then; retry shortly")
	}
	return accesshttp.WriteError(c, http.StatusServiceUnavailable, "unavailable", "the service is unavailable; retry shortly (a submit with the same idempotency_key to be safe)")
}
