package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/access/accesshttp"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/api/internal/jobs"
)

// Secrets keeps project secrets, sealed at rest. A secret set in another
// incarnation of its project counts as absent.
type Secrets interface {
	// Put stores value as the project's secret name and reports whether
	// it is new.
	Put(ctx context.Context, project, incarnation, name, value string) (created bool, err error)
	// List returns the project's secrets by name, without values.
	List(ctx context.Context, project, incarnation string) ([]contracts.SecretInfo, error)
	// Delete removes a secret and reports whether there was one.
	Delete(ctx context.Context, project, incarnation, name string) (bool, error)
}

// secretsDisabled is the refusal of every secrets request, and of jobs
// that reference a secret, when no secrets key is configured.
func secretsDisabled() error {
	return &jobs.Error{Kind: jobs.KindConflict, Code: "secrets_disabled",
		Message: "project secrets are disabled: the API was started without a secrets key (--secrets-key-file or --secrets-key)"}
}

// secretProject authorizes a secrets request (admin only; secrets are
// write-only, and whoever may set them may run any job) and returns the
// project of its path.
func (h *Handlers) secretProject(c echo.Context) (access.Project, error) {
	if err := h.requireAdmin(c); err != nil {
		return access.Project{}, err
	}
	if h.secrets == nil {
		return access.Project{}, secretsDisabled()
	}
	return h.project(c, c.Param("project"), access.RoleRead)
}

func secretName(c echo.Context) (string, error) {
	name := c.Param("name")
	if !contracts.ValidSecretName(name) {
		return "", reqErr(http.StatusBadRequest, "invalid_secret_name", "a secret name is 1 to 64 letters, digits, '_' or '-'")
	}
	return name, nil
}

// putSecret serves PUT /v1/projects/{p}/secrets/{name} (admin): 201 for a
// new secret, 204 for a new value. The value is never answered back.
func (h *Handlers) putSecret(c echo.Context) error {
	proj, err := h.secretProject(c)
	if err != nil {
		return h.fail(c, err)
	}
	name, err := secretName(c)
	if err != nil {
		return h.fail(c, err)
	}
	var req contracts.SecretRequest
	if err := h.decode(c, &req); err != nil {
		return h.fail(c, err)
	}
	switch {
	case req.Value == nil || *req.Value == "":
		return h.fail(c, reqErr(http.StatusBadRequest, "invalid_secret_value", `send the secret as {"value":"…"}, a non-empty string`))
	case len(*req.Value) > contracts.MaxSecretBytes:
		return h.fail(c, reqErr(http.StatusBadRequest, "invalid_secret_value", fmt.Sprintf("a secret's value may be at most %d bytes", contracts.MaxSecretBytes)))
	case strings.IndexByte(*req.Value, 0) >= 0:
		return h.fail(c, reqErr(http.StatusBadRequest, "invalid_secret_value", "a secret's value must not contain a NUL byte (it goes into an environment variable)"))
	}
	created, err := h.secrets.Put(c.Request().Context(), proj.ID, proj.Incarnation, name, *req.Value)
	if err != nil {
		return h.fail(c, err)
	}
	h.audit.RecordAsync(contracts.AuditRecord{Kind: contracts.AuditSecretSet, Actor: principal(c).Key.ID, Project: proj.ID,
		ClientIP: accesshttp.ClientIP(c).String(), ProjectIncarnation: proj.Incarnation, Detail: map[string]any{"secret": name, "created": created}})
	if !created {
		return c.NoContent(http.StatusNoContent)
	}
	c.Response().Header().Set(echo.HeaderLocation, "/v1/projects/"+proj.ID+"/secrets/"+name)
	return c.NoContent(http.StatusCreated)
}

// listSecrets serves GET /v1/projects/{p}/secrets (admin): names and
// update times only.
func (h *Handlers) listSecrets(c echo.Context) error {
	proj, err := h.secretProject(c)
	if err != nil {
		return h.fail(c, err)
	}
	list, err := h.secrets.List(c.Request().Context(), proj.ID, proj.Incarnation)
	if err != nil {
		return h.fail(c, err)
	}
	if list == nil {
		list = []contracts.SecretInfo{}
	}
	return c.JSON(http.StatusOK, contracts.SecretList{Secrets: list})
}

// deleteSecret serves DELETE /v1/projects/{p}/secrets/{name} (admin): 204,
// or 404 secret_not_found. Jobs queued with a reference to it fail to
// start.
func (h *Handlers) deleteSecret(c echo.Context) error {
	proj, err := h.secretProject(c)
	if err != nil {
		return h.fail(c, err)
	}
	name, err := secretName(c)
	if err != nil {
		return h.fail(c, err)
	}
	found, err := h.secrets.Delete(c.Request().Context(), proj.ID, proj.Incarnation, name)
	if err != nil {
		return h.fail(c, err)
	}
	if !found {
		return h.fail(c, &jobs.Error{Kind: jobs.KindNotFound, Code: "secret_not_found", Message: "project " + strconv.Quote(proj.ID) + " has no secret " + strconv.Quote(name)})
	}
	h.audit.RecordAsync(contracts.AuditRecord{Kind: contracts.AuditSecretDeleted, Actor: principal(c).Key.ID, Project: proj.ID,
		ClientIP: accesshttp.ClientIP(c).String(), ProjectIncarnation: proj.Incarnation, Detail: map[string]any{"secret": name}})
	return c.NoContent(http.StatusNoContent)
}
