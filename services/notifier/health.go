package notifier

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/oklog/ulid/v2"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/state"
	"github.com/rdev-dev/rdev/pkg/state/webhookstore"
	"github.com/rdev-dev/rdev/services/notifier/internal/retry"
	"github.com/rdev-dev/rdev/services/notifier/internal/send"
)

// health keeps an endpoint's failing period after an attempt: a success
// ends it; a failure starts it, or, once it lasted DisableAfter,
// disables the endpoint. A 410 disables it at once. Disables are audited.
func (s *Service) health(ctx context.Context, id string, v retry.Verdict, res send.Result) {
	ep, ok := s.endpoint(id)
	if !ok {
		return
	}
	now := time.Now().UTC()
	var reason string
	switch {
	case v == retry.Success && ep.FailingSince == nil:
		return
	case v == retry.Gone:
		reason = contracts.WebhookDisabledGone
	case v != retry.Success && ep.FailingSince != nil && now.Sub(*ep.FailingSince) >= s.cfg.DisableAfter:
		reason = contracts.WebhookDisabledFailing
	case v != retry.Success && ep.FailingSince != nil:
		return
	}
	var disabled bool
	_, err := s.store.Endpoints.Modify(ctx, webhookstore.Ref(ep.Project, id), func(r *contracts.WebhookRecord) (bool, error) {
		disabled = false
		switch {
		case v == retry.Success:
			if r.FailingSince == nil {
				return false, nil
			}
			r.FailingSince = nil
		case reason != "":
			if !r.Active {
				return false, nil
			}
			r.Active, r.DisabledReason, r.DisabledAt = false, reason, &now
			disabled = true
		case r.FailingSince == nil:
			r.FailingSince = &now
		default:
			return false, nil
		}
		r.UpdatedAt = now
		return true, nil
	})
	if errors.Is(err, state.ErrNotFound) {
		return
	}
	if err != nil {
		s.log.Warn("record webhook health", "webhook", id, "err", err)
		return
	}
	if disabled {
		s.in.disabled(ctx, reason)
		s.log.Warn("webhook endpoint disabled", "webhook", id, "project", ep.Project, "reason", reason, "status", res.Status)
		s.audit(ctx, contracts.AuditRecord{Kind: contracts.AuditWebhookDisabled, Actor: "system", Project: ep.Project,
			ProjectIncarnation: ep.ProjectIncarnation, Detail: map[string]any{"webhook": id, "reason": reason, "status_code": res.Status}})
	}
}

// audit appends rec to the audit log (contracts.StreamAudit).
func (s *Service) audit(ctx context.Context, rec contracts.AuditRecord) {
	rec.V, rec.ID, rec.Time = contracts.Version, ulid.Make().String(), time.Now().UTC()
	b, err := json.Marshal(rec)
	if err == nil {
		msg := nats.NewMsg(contracts.SubjectAudit(rec.Project, rec.Kind))
		msg.Data = b
		msg.Header.Set(contracts.HeaderMsgID, rec.ID)
		_, err = s.js.PublishMsg(ctx, msg)
	}
	if err != nil {
		s.log.Warn("audit record lost", "kind", rec.Kind, "err", err)
	}
}
