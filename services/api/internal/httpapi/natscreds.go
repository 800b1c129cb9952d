package httpapi

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/rdev-dev/rdev/pkg/access/accesshttp"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/api/internal/jobs"
)

// NATSCredentials mints short-lived NATS credentials of one project.
type NATSCredentials interface {
	// Mint returns a credential for project, issued to the key keyID and
	// bound to the project's incarnation.
	Mint(project, incarnation, keyID string, now time.Time) (contracts.NATSCredentials, error)
}

// natsCredentialsDisabled refuses a credential when the API serves no
// auth callout (no issuer key configured).
func natsCredentialsDisabled() error {
	return &jobs.Error{Kind: jobs.KindConflict, Code: "nats_credentials_disabled",
		Message: "NATS credentials are disabled: the API was started without an auth callout issuer key (--nats-callout-key-file)"}
}

func (h *Handlers) createNATSCredentials(c echo.Context) error {
	if h.natsCreds == nil {
		return h.fail(c, natsCredentialsDisabled())
	}
	p := routeProject(c)
	cred, err := h.natsCreds.Mint(p.ID, p.Incarnation, principal(c).Key.ID, time.Now())
	if err != nil {
		return h.fail(c, err)
	}
	h.audit.RecordAsync(contracts.AuditRecord{Kind: contracts.AuditNATSCredentialsIssued, Actor: principal(c).Key.ID, Project: p.ID,
		ProjectIncarnation: p.Incarnation, ClientIP: accesshttp.ClientIP(c).String(),
		Detail: map[string]any{"expires_at": cred.ExpiresAt, "inbox_prefix": cred.InboxPrefix}})
	return c.JSON(http.StatusCreated, cred)
}
