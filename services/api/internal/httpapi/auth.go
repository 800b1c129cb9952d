package httpapi

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/access/accesshttp"
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
	Allow(ctx context.Context, checks ...ratelimit.Check) (ratelimit.Decision, error)
}

// Auditor appends refusals to the audit log without making the request
// wait for it.
type Auditor interface {
	RecordAsync(rec contracts.AuditRecord)
}

// Context keys of what the middleware established.
const (
	principalKey = "rdev.principal"
	projectKey   = "rdev.project"
	// refusedKeyKey holds the id of a key that was verified but refused
	// (revoked, expired, wrong address), for the audit record.
	refusedKeyKey = "rdev.refused_key"
)

// knownKey are the refusals of Authenticate made after the secret matched
// a stored key.
var knownKey = map[string]bool{"revoked_api_key": true, "expired_api_key": true, "ip_not_allowed": true}

// authenticate is the first middleware of every /v1 route: it checks the
// API key and puts the principal in the context. On routes about no
// project (countKey) it also counts the request against the key's rate
// limit; projectAccess counts it on the others, with the project's limit
// in the same atomic call.
func (h *Handlers) authenticate(countKey bool) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			ip := accesshttp.ClientIP(c)
			p, err := access.Authenticate(c.Request().Context(), h.keys, accesshttp.Bearer(c.Request()), ip, time.Now())
			if err != nil {
				var ae *access.Error
				if errors.As(err, &ae) && knownKey[ae.Code] {
					// The secret matched a key: the refusal is that key's.
					c.Set(refusedKeyKey, access.KeyIDOf(accesshttp.Bearer(c.Request())))
				}
				return h.fail(c, err)
			}
			c.Set(principalKey, p)
			h.keys.Used(p.Key.ID)
			if countKey {
				if err := h.limit(c, h.keyCheck(p)); err != nil {
					return h.fail(c, err)
				}
			}
			return next(c)
		}
	}
}

// projectAccess is the second middleware of routes under
// /v1/projects/{project}: it authorizes role on the project, counts the
// request against the key's and the project's limits at once (a request
// one refuses counts under neither), and puts the project in the context.
func (h *Handlers) projectAccess(role access.Role) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			proj, err := h.project(c, c.Param("project"), role)
			if err != nil {
				return h.fail(c, err)
			}
			checks := []ratelimit.Check{h.keyCheck(principal(c))}
			if proj.RateLimit != nil {
				checks = append(checks, ratelimit.Check{Key: "project:" + proj.ID,
					Limit: ratelimit.Limit{Requests: proj.RateLimit.Requests, Window: proj.RateLimit.Window()}})
			}
			if err := h.limit(c, checks...); err != nil {
				return h.fail(c, err)
			}
			c.Set(projectKey, proj)
			return next(c)
		}
	}
}

// keyCheck is the rate limit of p's key: its own, or the default.
func (h *Handlers) keyCheck(p access.Principal) ratelimit.Check {
	lim := h.keyLimit
	if p.Key.RateLimit != nil {
		lim = ratelimit.Limit{Requests: p.Key.RateLimit.Requests, Window: p.Key.RateLimit.Window()}
	}
	return ratelimit.Check{Key: "key:" + p.Key.ID, Limit: lim}
}

// routeProject is the project projectAccess authorized.
func routeProject(c echo.Context) access.Project {
	p, _ := c.Get(projectKey).(access.Project)
	return p
}

func principal(c echo.Context) access.Principal {
	p, _ := c.Get(principalKey).(access.Principal)
	return p
}

// project authorizes role on project id. Scope is checked before the
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
	// Admins pass projects' allowed IPs here as in the streamer: the rule
	// is access.Authorize's.
	if err := access.Authorize(p, proj, role, accesshttp.ClientIP(c)); err != nil {
		return access.Project{}, err
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

// limit counts the request under every check in one atomic call, sets
// the RateLimit-* headers of the tightest limit, and refuses the request
// when a limit is reached.
func (h *Handlers) limit(c echo.Context, checks ...ratelimit.Check) error {
	d, err := h.limiter.Allow(c.Request().Context(), checks...)
	if err != nil {
		return err // fail-closed policy with the limiter down: 503
	}
	if d.Limit > 0 {
		hdr := c.Response().Header()
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
	h.observeDenied(c, status, code)
	project := c.Param("project")
	if !contracts.ValidProjectID(project) {
		project = ""
	}
	actor := principal(c).Key.ID
	if actor == "" {
		actor, _ = c.Get(refusedKeyKey).(string)
	}
	h.audit.RecordAsync(contracts.AuditRecord{
		Kind: contracts.AuditRequestDenied, Actor: actor, Project: project, ClientIP: accesshttp.ClientIP(c).String(),
		Detail: map[string]any{"status": status, "code": code, "method": c.Request().Method, "path": c.Request().URL.Path},
	})
}

func isNotFound(err error) bool { return errors.Is(err, access.ErrNotFound) }
