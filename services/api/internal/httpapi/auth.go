package httpapi

import (
	"context"
	"errors"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/api/internal/ratelimit"
)

// Keys authenticates callers: it looks keys up (through a cache) and
// notes their use.
type Keys interface {
	access.Keys
	// Used notes that a key authenticated a request now; implementations
	// write it at most once a minute, in the background.
	Used(id string)
}

// Projects looks projects up (through a cache).
type Projects interface {
	Project(ctx context.Context, id string) (access.Project, error)
}

// Limiter counts requests against sliding-window limits.
type Limiter interface {
	Allow(ctx context.Context, key string, l ratelimit.Limit) (ratelimit.Decision, error)
}

// Auditor appends refusals to the audit log without making the request
// wait for it.
type Auditor interface {
	RecordAsync(rec contracts.AuditRecord)
}

const principalKey = "rdev.principal"

// authenticate is the middleware of every /v1 route: it checks the API
// key and the key's own rate limit, and puts the principal in the context.
func (h *Handlers) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		ip := clientIP(c)
		p, err := access.Authenticate(c.Request().Context(), h.keys, bearer(c.Request()), ip, time.Now())
		if err != nil {
			return h.fail(c, err)
		}
		c.Set(principalKey, p)
		h.keys.Used(p.Key.ID)
		lim := h.keyLimit
		if p.Key.RateLimit != nil {
			lim = ratelimit.Limit{Requests: p.Key.RateLimit.Requests, Window: p.Key.RateLimit.Window()}
		}
		if err := h.limit(c, "key:"+p.Key.ID, lim); err != nil {
			return h.fail(c, err)
		}
		return next(c)
	}
}

func bearer(r *http.Request) string { return access.BearerToken(r.Header.Get(echo.HeaderAuthorization)) }

// clientIP is the address access rules judge. Echo's IPExtractor decides
// whether proxy headers are believed (Register makes sure one is set).
func clientIP(c echo.Context) netip.Addr { return access.ClientAddr(c.RealIP()) }

func principal(c echo.Context) access.Principal {
	p, _ := c.Get(principalKey).(access.Principal)
	return p
}

// project authorizes role on the project named in the path and counts the
// request against the project's rate limit. Scope is checked before the
// project is looked up, so a key learns nothing of projects it cannot use.
func (h *Handlers) project(c echo.Context, id string, role access.Role) (access.Project, error) {
	if !contracts.ValidProjectID(id) {
		return access.Project{}, reqErr(http.StatusBadRequest, "invalid_project", "project id must be a DNS label: 1-63 lower-case letters, digits or '-', starting and ending with a letter or digit")
	}
	p := principal(c)
	if !p.Can(id, role) {
		return access.Project{}, access.Forbidden(id, role)
	}
	proj, err := h.projects.Project(c.Request().Context(), id)
	if errors.Is(err, access.ErrNotFound) {
		return access.Project{}, &access.Error{Kind: access.KindNotFound, Code: "project_not_found", Message: "no project " + strconv.Quote(id) + "; create it with POST /v1/projects"}
	}
	if err != nil {
		return access.Project{}, err
	}
	if err := access.Authorize(p, proj, role, clientIP(c)); err != nil {
		return access.Project{}, err
	}
	if proj.RateLimit != nil {
		lim := ratelimit.Limit{Requests: proj.RateLimit.Requests, Window: proj.RateLimit.Window()}
		if err := h.limit(c, "project:"+id, lim); err != nil {
			return access.Project{}, err
		}
	}
	return proj, nil
}

func (h *Handlers) requireAdmin(c echo.Context) error {
	if !principal(c).Admin() {
		return access.AdminOnly()
	}
	return nil
}

// rateLimited is a request refused by a rate limit.
type rateLimited struct{ d ratelimit.Decision }

func (e *rateLimited) Error() string { return "rate limited" }

// limit counts the request under key, sets the RateLimit-* headers of the
// tightest limit seen so far, and refuses it when over the limit.
func (h *Handlers) limit(c echo.Context, key string, l ratelimit.Limit) error {
	if l.Unlimited() {
		return nil
	}
	d, err := h.limiter.Allow(c.Request().Context(), key, l)
	if err != nil {
		return err // fail-closed policy with the limiter down: 503
	}
	hdr := c.Response().Header()
	if cur, err := strconv.Atoi(hdr.Get("RateLimit-Remaining")); err != nil || d.Remaining < cur || !d.Allowed {
		hdr.Set("RateLimit-Limit", strconv.Itoa(d.Limit))
		hdr.Set("RateLimit-Remaining", strconv.Itoa(d.Remaining))
		hdr.Set("RateLimit-Reset", strconv.Itoa(ceilSeconds(d.Reset)))
	}
	if !d.Allowed {
		return &rateLimited{d: d}
	}
	return nil
}

func ceilSeconds(d time.Duration) int { return max(1, int(math.Ceil(d.Seconds()))) }

// denied records a refused request in the audit log.
func (h *Handlers) denied(c echo.Context, status int, code string) {
	project := c.Param("project")
	if !contracts.ValidProjectID(project) {
		project = ""
	}
	h.audit.RecordAsync(contracts.AuditRecord{
		Kind: contracts.AuditRequestDenied, Actor: principal(c).Key.ID, Project: project, ClientIP: clientIP(c).String(),
		Detail: map[string]any{"status": status, "code": code, "method": c.Request().Method, "path": c.Request().URL.Path},
	})
}

func isNotFound(err error) bool { return errors.Is(err, access.ErrNotFound) }
