package httpapi

import (
	"context"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/access/accesshttp"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/api/internal/webhooks"
)

// Webhooks manages a project's webhook endpoints and reads their
// deliveries; an endpoint of another incarnation of its project counts
// as absent. Refusals are *access.Errors.
type Webhooks interface {
	Create(ctx context.Context, project, incarnation string, req contracts.WebhookRequest) (contracts.WebhookCreated, error)
	List(ctx context.Context, project, incarnation string) ([]contracts.Webhook, error)
	Get(ctx context.Context, project, incarnation, id string) (contracts.Webhook, error)
	Patch(ctx context.Context, project, incarnation, id string, p contracts.WebhookPatch) (contracts.Webhook, []string, error)
	Delete(ctx context.Context, project, incarnation, id string) error
	Rotate(ctx context.Context, project, incarnation, id string) (contracts.WebhookRotated, error)
	Ping(ctx context.Context, project, incarnation, id string) (contracts.WebhookDelivery, error)
	Deliveries(ctx context.Context, project, incarnation, id string, q webhooks.DeliveryQuery) (contracts.WebhookDeliveryPage, error)
	Delivery(ctx context.Context, project, incarnation, id, delivery string) (contracts.WebhookDeliveryRecord, error)
	Redeliver(ctx context.Context, project, incarnation, id, delivery string) (contracts.WebhookDelivery, error)
}

// webhookProject authorizes a webhooks request and returns the project of
// its path. Admin only, like secrets: a webhook sends what a project's
// jobs do (exit codes, reasons) to an address of the caller's choosing,
// and its secret is shown to whoever creates or rotates it.
func (h *Handlers) webhookProject(c echo.Context) (access.Project, error) {
	if err := h.requireAdmin(c); err != nil {
		return access.Project{}, err
	}
	if h.webhooks == nil {
		return access.Project{}, &access.Error{Kind: access.KindConflict, Code: "webhooks_disabled",
			Message: "webhooks are disabled: the API was started without a secrets key (--secrets-key-file or --secrets-key), which seals their signing secrets"}
	}
	return h.project(c, c.Param("project"), access.RoleRead)
}

// webhookAudit records an act on an endpoint.
func (h *Handlers) webhookAudit(c echo.Context, proj access.Project, kind contracts.AuditKind, detail map[string]any) {
	h.audit.RecordAsync(contracts.AuditRecord{Kind: kind, Actor: principal(c).Key.ID, Project: proj.ID,
		ClientIP: accesshttp.ClientIP(c).String(), ProjectIncarnation: proj.Incarnation, Detail: detail})
}

func (h *Handlers) createWebhook(c echo.Context) error {
	proj, err := h.webhookProject(c)
	if err != nil {
		return h.fail(c, err)
	}
	var req contracts.WebhookRequest
	if err := h.decode(c, &req); err != nil {
		return h.fail(c, err)
	}
	created, err := h.webhooks.Create(c.Request().Context(), proj.ID, proj.Incarnation, req)
	if err != nil {
		return h.fail(c, err)
	}
	h.webhookAudit(c, proj, contracts.AuditWebhookCreated, map[string]any{"webhook": created.ID, "url": created.URL, "events": created.Events})
	c.Response().Header().Set(echo.HeaderLocation, "/v1/projects/"+proj.ID+"/webhooks/"+created.ID)
	return c.JSON(http.StatusCreated, created)
}

func (h *Handlers) listWebhooks(c echo.Context) error {
	proj, err := h.webhookProject(c)
	if err != nil {
		return h.fail(c, err)
	}
	list, err := h.webhooks.List(c.Request().Context(), proj.ID, proj.Incarnation)
	if err != nil {
		return h.fail(c, err)
	}
	return c.JSON(http.StatusOK, contracts.WebhookList{Webhooks: list})
}

func (h *Handlers) getWebhook(c echo.Context) error {
	proj, err := h.webhookProject(c)
	if err != nil {
		return h.fail(c, err)
	}
	wh, err := h.webhooks.Get(c.Request().Context(), proj.ID, proj.Incarnation, c.Param("id"))
	if err != nil {
		return h.fail(c, err)
	}
	return c.JSON(http.StatusOK, wh)
}

func (h *Handlers) patchWebhook(c echo.Context) error {
	proj, err := h.webhookProject(c)
	if err != nil {
		return h.fail(c, err)
	}
	var p contracts.WebhookPatch
	if err := h.decode(c, &p); err != nil {
		return h.fail(c, err)
	}
	wh, fields, err := h.webhooks.Patch(c.Request().Context(), proj.ID, proj.Incarnation, c.Param("id"), p)
	if err != nil {
		return h.fail(c, err)
	}
	h.webhookAudit(c, proj, contracts.AuditWebhookUpdated, map[string]any{"webhook": wh.ID, "fields": fields})
	return c.JSON(http.StatusOK, wh)
}

func (h *Handlers) deleteWebhook(c echo.Context) error {
	proj, err := h.webhookProject(c)
	if err != nil {
		return h.fail(c, err)
	}
	id := c.Param("id")
	if err := h.webhooks.Delete(c.Request().Context(), proj.ID, proj.Incarnation, id); err != nil {
		return h.fail(c, err)
	}
	h.webhookAudit(c, proj, contracts.AuditWebhookDeleted, map[string]any{"webhook": id})
	return c.NoContent(http.StatusNoContent)
}

func (h *Handlers) rotateWebhookSecret(c echo.Context) error {
	proj, err := h.webhookProject(c)
	if err != nil {
		return h.fail(c, err)
	}
	id := c.Param("id")
	rotated, err := h.webhooks.Rotate(c.Request().Context(), proj.ID, proj.Incarnation, id)
	if err != nil {
		return h.fail(c, err)
	}
	h.webhookAudit(c, proj, contracts.AuditWebhookSecretRotated, map[string]any{"webhook": id, "previous_secret_expires_at": rotated.PreviousSecretExpiresAt})
	return c.JSON(http.StatusOK, rotated)
}

func (h *Handlers) testWebhook(c echo.Context) error {
	proj, err := h.webhookProject(c)
	if err != nil {
		return h.fail(c, err)
	}
	d, err := h.webhooks.Ping(c.Request().Context(), proj.ID, proj.Incarnation, c.Param("id"))
	if err != nil {
		return h.fail(c, err)
	}
	return c.JSON(http.StatusAccepted, d)
}

func (h *Handlers) listDeliveries(c echo.Context) error {
	proj, err := h.webhookProject(c)
	if err != nil {
		return h.fail(c, err)
	}
	q := webhooks.DeliveryQuery{Status: contracts.DeliveryStatus(c.QueryParam("status")), Cursor: c.QueryParam("cursor")}
	if l := c.QueryParam("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil {
			return h.fail(c, reqErr(http.StatusBadRequest, "invalid_limit", "limit must be an integer"))
		}
		if n == 0 {
			n = -1 // an explicit 0 is out of range, not the default
		}
		q.Limit = n
	}
	page, err := h.webhooks.Deliveries(c.Request().Context(), proj.ID, proj.Incarnation, c.Param("id"), q)
	if err != nil {
		return h.fail(c, err)
	}
	return c.JSON(http.StatusOK, page)
}

func (h *Handlers) getDelivery(c echo.Context) error {
	proj, err := h.webhookProject(c)
	if err != nil {
		return h.fail(c, err)
	}
	d, err := h.webhooks.Delivery(c.Request().Context(), proj.ID, proj.Incarnation, c.Param("id"), c.Param("delivery"))
	if err != nil {
		return h.fail(c, err)
	}
	return c.JSON(http.StatusOK, d)
}

func (h *Handlers) redeliver(c echo.Context) error {
	proj, err := h.webhookProject(c)
	if err != nil {
		return h.fail(c, err)
	}
	d, err := h.webhooks.Redeliver(c.Request().Context(), proj.ID, proj.Incarnation, c.Param("id"), c.Param("delivery"))
	if err != nil {
		return h.fail(c, err)
	}
	return c.JSON(http.StatusAccepted, d)
}
