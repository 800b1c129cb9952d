package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/access/accesshttp"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/api/internal/admin"
)

// Admin manages projects and keys (see package admin).
type Admin interface {
	CreateProject(ctx context.Context, by admin.Actor, p access.Project) (access.Project, error)
	Projects(ctx context.Context, ids []string, all bool) ([]access.Project, error)
	UpdateProject(ctx context.Context, by admin.Actor, id string, patch access.ProjectPatch) (access.Project, error)
	DeleteProject(ctx context.Context, by admin.Actor, id string) error
	CreateKey(ctx context.Context, by admin.Actor, req admin.KeyRequest) (access.Key, string, error)
	Keys(ctx context.Context) ([]access.Key, error)
	RevokeKey(ctx context.Context, by admin.Actor, id string) (access.Key, error)
}

// AuditFilter selects audit records; zero fields select everything.
type AuditFilter struct {
	Project, Actor string
	// Incarnation, with Project, skips the records of the project's other
	// incarnations.
	Incarnation  string
	Kind         contracts.AuditKind
	Since, Until time.Time
	After        uint64
	Limit        int
}

// AuditQuerier reads the audit log.
type AuditQuerier interface {
	// Query returns matching records oldest first and the cursor of the
	// next page, 0 when there is none.
	Query(ctx context.Context, f AuditFilter) ([]contracts.AuditRecord, uint64, error)
}

func actor(c echo.Context) admin.Actor {
	return admin.Actor{KeyID: principal(c).Key.ID, ClientIP: accesshttp.ClientIP(c).String()}
}

func (h *Handlers) createProject(c echo.Context) error {
	if err := h.requireAdmin(c); err != nil {
		return h.fail(c, err)
	}
	var req contracts.ProjectRequest
	if err := h.decode(c, &req); err != nil {
		return h.fail(c, err)
	}
	p, err := h.admin.CreateProject(c.Request().Context(), actor(c), access.Project{
		ID: req.ID, Name: req.Name, AllowedIPs: req.AllowedIPs, DefaultPriority: req.DefaultPriority,
		RateLimit: req.RateLimit, MaxConcurrentJobs: req.MaxConcurrentJobs, Pod: req.Pod,
	})
	if err != nil {
		return h.fail(c, err)
	}
	c.Response().Header().Set(echo.HeaderLocation, "/v1/projects/"+p.ID)
	return c.JSON(http.StatusCreated, p)
}

func (h *Handlers) listProjects(c echo.Context) error {
	ids, all := principal(c).Projects()
	ps, err := h.admin.Projects(c.Request().Context(), ids, all)
	if err != nil {
		return h.fail(c, err)
	}
	if ps == nil {
		ps = []access.Project{}
	}
	return c.JSON(http.StatusOK, contracts.ProjectList{Projects: ps})
}

func (h *Handlers) getProject(c echo.Context) error {
	return c.JSON(http.StatusOK, routeProject(c))
}

func (h *Handlers) updateProject(c echo.Context) error {
	if err := h.requireAdmin(c); err != nil {
		return h.fail(c, err)
	}
	var patch contracts.ProjectPatch
	if err := h.decode(c, &patch); err != nil {
		return h.fail(c, err)
	}
	p, err := h.admin.UpdateProject(c.Request().Context(), actor(c), c.Param("project"), access.ProjectPatch{
		Name: patch.Name, AllowedIPs: patch.AllowedIPs, DefaultPriority: patch.DefaultPriority,
		RateLimit: patch.RateLimit, MaxConcurrentJobs: patch.MaxConcurrentJobs, Pod: patch.Pod,
	})
	if err != nil {
		return h.fail(c, err)
	}
	return c.JSON(http.StatusOK, p)
}

func (h *Handlers) deleteProject(c echo.Context) error {
	if err := h.requireAdmin(c); err != nil {
		return h.fail(c, err)
	}
	ctx, id := c.Request().Context(), c.Param("project")
	if !contracts.ValidProjectID(id) {
		return h.fail(c, reqErr(http.StatusBadRequest, "invalid_project", "project id must be a DNS label: 1-63 lower-case letters, digits or '-', starting and ending with a letter or digit"))
	}
	// The project's jobs end with it: cancelled before it is deleted (a
	// failure leaves the project in place, to delete again), and once more
	// after, for a job submitted in between.
	if _, err := h.jobs.CancelProject(ctx, id); err != nil {
		return h.fail(c, err)
	}
	if err := h.admin.DeleteProject(ctx, actor(c), id); err != nil {
		return h.fail(c, err)
	}
	if _, err := h.jobs.CancelProject(context.WithoutCancel(ctx), id); err != nil {
		h.log.WarnContext(ctx, "a job submitted while its project was deleted was not cancelled", "project", id, "err", err)
	}
	return c.NoContent(http.StatusNoContent)
}

// keyResponse shows a key; the secret only in the reply that created
// it. The hash is never shown.
func keyResponse(k access.Key, secret string) contracts.Key {
	if k.AllowedIPs == nil {
		k.AllowedIPs = []string{}
	}
	return contracts.Key{ID: k.ID, Key: secret, Name: k.Name, Scopes: k.Scopes, AllowedIPs: k.AllowedIPs, RateLimit: k.RateLimit,
		ExpiresAt: k.ExpiresAt, RevokedAt: k.RevokedAt, CreatedAt: k.CreatedAt, LastUsedAt: k.LastUsedAt}
}

func (h *Handlers) createKey(c echo.Context) error {
	if err := h.requireAdmin(c); err != nil {
		return h.fail(c, err)
	}
	var req contracts.KeyRequest
	if err := h.decode(c, &req); err != nil {
		return h.fail(c, err)
	}
	k, secret, err := h.admin.CreateKey(c.Request().Context(), actor(c), admin.KeyRequest{Name: req.Name, Scopes: req.Scopes,
		AllowedIPs: req.AllowedIPs, RateLimit: req.RateLimit, ExpiresAt: req.ExpiresAt})
	if err != nil {
		return h.fail(c, err)
	}
	c.Response().Header().Set(echo.HeaderLocation, "/v1/keys/"+k.ID)
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusCreated, keyResponse(k, secret))
}

func (h *Handlers) listKeys(c echo.Context) error {
	if err := h.requireAdmin(c); err != nil {
		return h.fail(c, err)
	}
	ks, err := h.admin.Keys(c.Request().Context())
	if err != nil {
		return h.fail(c, err)
	}
	out := contracts.KeyList{Keys: make([]contracts.Key, 0, len(ks))}
	for _, k := range ks {
		out.Keys = append(out.Keys, keyResponse(k, ""))
	}
	return c.JSON(http.StatusOK, out)
}

// selfKey answers GET /v1/keys/self, for any key: the calling key as
// stored, so a client (the dashboard) offers what its scopes allow.
func (h *Handlers) selfKey(c echo.Context) error {
	return c.JSON(http.StatusOK, keyResponse(principal(c).Key, ""))
}

func (h *Handlers) getKey(c echo.Context) error {
	if err := h.requireAdmin(c); err != nil {
		return h.fail(c, err)
	}
	k, err := h.keys.Key(c.Request().Context(), c.Param("id"))
	if err != nil {
		return h.fail(c, keyError(c.Param("id"), err))
	}
	return c.JSON(http.StatusOK, keyResponse(k, ""))
}

func (h *Handlers) revokeKey(c echo.Context) error {
	if err := h.requireAdmin(c); err != nil {
		return h.fail(c, err)
	}
	k, err := h.admin.RevokeKey(c.Request().Context(), actor(c), c.Param("id"))
	if err != nil {
		return h.fail(c, err)
	}
	return c.JSON(http.StatusOK, keyResponse(k, ""))
}

func keyError(id string, err error) error {
	if contracts.ValidID(id) && !isNotFound(err) {
		return err
	}
	return &access.Error{Kind: access.KindNotFound, Code: "key_not_found", Message: "no key " + strconv.Quote(id)}
}

func (h *Handlers) auditLog(c echo.Context) error {
	if err := h.requireAdmin(c); err != nil {
		return h.fail(c, err)
	}
	f, err := auditFilter(c)
	if err != nil {
		return h.fail(c, err)
	}
	if p := c.QueryParam("project"); p != "" {
		if !contracts.ValidProjectID(p) {
			return h.fail(c, reqErr(http.StatusBadRequest, "invalid_project", "project must be a project id"))
		}
		f.Project = p
	}
	return h.auditAnswer(c, f)
}

func (h *Handlers) projectAuditLog(c echo.Context) error {
	f, err := auditFilter(c)
	if err != nil {
		return h.fail(c, err)
	}
	// Only this incarnation's records: those that name it, and of those
	// that name none (written before incarnations, or by the system),
	// the ones since it was created.
	proj := routeProject(c)
	f.Project, f.Incarnation = proj.ID, proj.Incarnation
	if proj.Incarnation != "" && f.Since.Before(proj.CreatedAt) {
		f.Since = proj.CreatedAt
	}
	return h.auditAnswer(c, f)
}

func (h *Handlers) auditAnswer(c echo.Context, f AuditFilter) error {
	recs, next, err := h.query.Query(c.Request().Context(), f)
	if err != nil {
		return h.fail(c, err)
	}
	page := contracts.AuditPage{Records: recs}
	if page.Records == nil {
		page.Records = []contracts.AuditRecord{}
	}
	if next > 0 {
		page.NextCursor = strconv.FormatUint(next, 10)
	}
	return c.JSON(http.StatusOK, page)
}

// auditFilter reads ?actor, kind, since, until (RFC 3339), cursor and limit
// (1 to 1000, default 100).
func auditFilter(c echo.Context) (AuditFilter, error) {
	f := AuditFilter{Actor: c.QueryParam("actor"), Kind: contracts.AuditKind(c.QueryParam("kind")), Limit: 100}
	if f.Kind != "" {
		ok := false
		for _, k := range contracts.AuditKinds() {
			ok = ok || k == f.Kind
		}
		if !ok {
			return f, reqErr(http.StatusBadRequest, "invalid_kind", "kind must be one of the audit kinds, e.g. job_submitted, key_revoked, request_denied")
		}
	}
	var err error
	if f.Since, f.Until, err = timeRange(c); err != nil {
		return f, err
	}
	if v := c.QueryParam("cursor"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return f, reqErr(http.StatusBadRequest, "invalid_cursor", "cursor must be the next_cursor of an earlier page")
		}
		f.After = n
	}
	f.Limit, err = pageLimit(c, f.Limit)
	return f, err
}

// timeRange reads ?since and ?until, RFC 3339 times.
func timeRange(c echo.Context) (since, until time.Time, err error) {
	for name, dst := range map[string]*time.Time{"since": &since, "until": &until} {
		if v := c.QueryParam(name); v != "" {
			t, perr := time.Parse(time.RFC3339, v)
			if perr != nil {
				return since, until, reqErr(http.StatusBadRequest, "invalid_"+name, name+" must be an RFC 3339 time, e.g. 2026-11-27T12:00:00Z")
			}
			*dst = t
		}
	}
	return since, until, nil
}

// pageLimit reads ?limit, 1 to 1000, def when absent.
func pageLimit(c echo.Context, def int) (int, error) {
	v := c.QueryParam("limit")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > contracts.MaxListLimit {
		return def, reqErr(http.StatusBadRequest, "invalid_limit", fmt.Sprintf("limit must be between 1 and %d", contracts.MaxListLimit))
	}
	return n, nil
}
