// Package webhooks manages a project's webhook endpoints and reads their
// deliveries for the API: it checks what callers send, keeps signing
// secrets sealed (shown once, at creation and rotation) and answers with
// access.Errors that the transport turns into status codes. The notifier
// sends the deliveries; a ping or a redelivery is a pending delivery
// record it picks up.
package webhooks

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/state"
	"github.com/rdev-dev/rdev/pkg/state/webhookstore"
)

// DefaultRotationOverlap is how long a rotated-out secret keeps signing.
const DefaultRotationOverlap = 24 * time.Hour

// Page sizes of the deliveries listing.
const (
	DefaultDeliveryLimit = 50
	MaxDeliveryLimit     = 200
	maxDescription       = 500
)

// Service manages endpoints. It is safe for concurrent use.
type Service struct {
	store   *webhookstore.Store
	overlap time.Duration
	newID   func() string
	now     func() time.Time
}

// New returns the service on store; newID makes unique, sortable ids,
// overlap is how long a rotated-out secret keeps signing (0: default).
func New(store *webhookstore.Store, overlap time.Duration, newID func() string) *Service {
	if overlap <= 0 {
		overlap = DefaultRotationOverlap
	}
	return &Service{store: store, overlap: overlap, newID: newID, now: func() time.Time { return time.Now().UTC() }}
}

func invalid(code, format string, args ...any) error {
	return &access.Error{Kind: access.KindInvalid, Code: code, Message: fmt.Sprintf(format, args...)}
}

func notFound(id string) error {
	return &access.Error{Kind: access.KindNotFound, Code: "webhook_not_found", Message: "no webhook " + strconv.Quote(id)}
}

// checkURL refuses what the notifier would never send to. Addresses are
// judged when the notifier dials (each time: a name may change answers).
func checkURL(raw string) error {
	if len(raw) > contracts.MaxWebhookURLBytes {
		return invalid("invalid_url", "the url may be at most %d bytes", contracts.MaxWebhookURLBytes)
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil || u.Host == "" || u.Opaque != "":
		return invalid("invalid_url", "the url must be an absolute http or https URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return invalid("invalid_url", "the url's scheme must be http or https, not %q", u.Scheme)
	case u.User != nil:
		// Credentials in a URL would be shown back by every GET.
		return invalid("invalid_url", "the url must not carry credentials (user:password@); authenticate the deliveries by their signature")
	case u.Fragment != "":
		return invalid("invalid_url", "the url must not have a fragment")
	}
	return nil
}

func checkEvents(events []contracts.WebhookEventType) ([]contracts.WebhookEventType, error) {
	if len(events) == 0 {
		return nil, invalid("invalid_events", "subscribe to at least one event: %s", eventList())
	}
	known := contracts.WebhookEventTypes()
	out := make([]contracts.WebhookEventType, 0, len(events))
	for _, e := range events {
		if !slices.Contains(known, e) {
			return nil, invalid("invalid_events", "unknown event %q; the events are %s", e, eventList())
		}
		if !slices.Contains(out, e) {
			out = append(out, e)
		}
	}
	return out, nil
}

func eventList() string {
	var names []string
	for _, e := range contracts.WebhookEventTypes() {
		names = append(names, string(e))
	}
	return strings.Join(names, ", ")
}

func checkDescription(d string) error {
	if utf8.RuneCountInString(d) > maxDescription {
		return invalid("invalid_description", "the description may be at most %d characters", maxDescription)
	}
	return nil
}

// Create stores a new endpoint of project and returns it with its secret.
func (s *Service) Create(ctx context.Context, project, incarnation string, req contracts.WebhookRequest) (contracts.WebhookCreated, error) {
	if err := checkURL(req.URL); err != nil {
		return contracts.WebhookCreated{}, err
	}
	events, err := checkEvents(req.Events)
	if err != nil {
		return contracts.WebhookCreated{}, err
	}
	if err := checkDescription(req.Description); err != nil {
		return contracts.WebhookCreated{}, err
	}
	existing, err := s.list(ctx, project, incarnation)
	if err != nil {
		return contracts.WebhookCreated{}, err
	}
	if len(existing) >= contracts.MaxWebhooksPerProject {
		return contracts.WebhookCreated{}, &access.Error{Kind: access.KindConflict, Code: "too_many_webhooks",
			Message: fmt.Sprintf("a project may have at most %d webhooks; delete one first", contracts.MaxWebhooksPerProject)}
	}
	now := s.now()
	rec := contracts.WebhookRecord{V: contracts.Version, ProjectIncarnation: incarnation, Webhook: contracts.Webhook{
		ID: "wh_" + s.newID(), Project: project, URL: req.URL, Events: events, Description: req.Description,
		Active: req.Active == nil || *req.Active, CreatedAt: now, UpdatedAt: now,
	}}
	sec, text := s.store.NewSecret(project, rec.ID)
	rec.Secrets = []contracts.WebhookSecret{sec}
	if _, err := s.store.Endpoints.Create(ctx, webhookstore.Ref(project, rec.ID), rec); err != nil {
		return contracts.WebhookCreated{}, err
	}
	return contracts.WebhookCreated{Webhook: rec.Webhook, Secret: text}, nil
}

func (s *Service) list(ctx context.Context, project, incarnation string) ([]contracts.Webhook, error) {
	recs, err := s.store.List(ctx, project)
	if err != nil {
		return nil, err
	}
	out := []contracts.Webhook{}
	for _, r := range recs {
		if r.ProjectIncarnation == incarnation {
			out = append(out, r.Webhook)
		}
	}
	slices.SortFunc(out, func(a, b contracts.Webhook) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// List returns project's endpoints, oldest first.
func (s *Service) List(ctx context.Context, project, incarnation string) ([]contracts.Webhook, error) {
	return s.list(ctx, project, incarnation)
}

func (s *Service) get(ctx context.Context, project, incarnation, id string) (contracts.WebhookRecord, error) {
	if !contracts.ValidWebhookID(id) {
		return contracts.WebhookRecord{}, notFound(id)
	}
	rec, _, err := s.store.Endpoints.Get(ctx, webhookstore.Ref(project, id))
	if errors.Is(err, state.ErrNotFound) || (err == nil && rec.ProjectIncarnation != incarnation) {
		return contracts.WebhookRecord{}, notFound(id)
	}
	return rec, err
}

// Get returns one endpoint.
func (s *Service) Get(ctx context.Context, project, incarnation, id string) (contracts.Webhook, error) {
	rec, err := s.get(ctx, project, incarnation, id)
	return rec.Webhook, err
}

// modify changes an endpoint of this incarnation by compare-and-set.
func (s *Service) modify(ctx context.Context, project, incarnation, id string, change func(*contracts.WebhookRecord) error) (contracts.WebhookRecord, error) {
	if _, err := s.get(ctx, project, incarnation, id); err != nil {
		return contracts.WebhookRecord{}, err
	}
	rec, err := s.store.Endpoints.Modify(ctx, webhookstore.Ref(project, id), func(r *contracts.WebhookRecord) (bool, error) {
		if r.ProjectIncarnation != incarnation {
			return false, notFound(id)
		}
		if err := change(r); err != nil {
			return false, err
		}
		r.UpdatedAt = s.now()
		return true, nil
	})
	if errors.Is(err, state.ErrNotFound) {
		return rec, notFound(id)
	}
	return rec, err
}

// Patch applies p and returns the endpoint and the names of the fields
// that p set.
func (s *Service) Patch(ctx context.Context, project, incarnation, id string, p contracts.WebhookPatch) (contracts.Webhook, []string, error) {
	var fields []string
	if p.URL != nil {
		if err := checkURL(*p.URL); err != nil {
			return contracts.Webhook{}, nil, err
		}
		fields = append(fields, "url")
	}
	var events []contracts.WebhookEventType
	if p.Events != nil {
		var err error
		if events, err = checkEvents(*p.Events); err != nil {
			return contracts.Webhook{}, nil, err
		}
		fields = append(fields, "events")
	}
	if p.Description != nil {
		if err := checkDescription(*p.Description); err != nil {
			return contracts.Webhook{}, nil, err
		}
		fields = append(fields, "description")
	}
	if p.Active != nil {
		fields = append(fields, "active")
	}
	if len(fields) == 0 {
		return contracts.Webhook{}, nil, invalid("empty_patch", "send at least one of url, events, description, active")
	}
	rec, err := s.modify(ctx, project, incarnation, id, func(r *contracts.WebhookRecord) error {
		if p.URL != nil {
			r.URL = *p.URL
		}
		if events != nil {
			r.Events = events
		}
		if p.Description != nil {
			r.Description = *p.Description
		}
		if p.Active != nil {
			r.Active = *p.Active
			if r.Active { // a fresh start: rdev's disable and the failing period end
				r.DisabledReason, r.DisabledAt, r.FailingSince = "", nil, nil
			}
		}
		return nil
	})
	return rec.Webhook, fields, err
}

// Delete removes an endpoint; its deliveries expire with their bucket's
// TTL.
func (s *Service) Delete(ctx context.Context, project, incarnation, id string) error {
	if _, err := s.get(ctx, project, incarnation, id); err != nil {
		return err
	}
	return s.store.Endpoints.Purge(ctx, webhookstore.Ref(project, id))
}

// Rotate gives the endpoint a new secret; the previous one keeps signing
// beside it for the overlap.
func (s *Service) Rotate(ctx context.Context, project, incarnation, id string) (contracts.WebhookRotated, error) {
	var text string
	rec, err := s.modify(ctx, project, incarnation, id, func(r *contracts.WebhookRecord) error {
		text = s.store.Rotate(r, s.now(), s.overlap)
		return nil
	})
	if err != nil {
		return contracts.WebhookRotated{}, err
	}
	return contracts.WebhookRotated{Secret: text, PreviousSecretExpiresAt: *rec.PreviousSecretExpiresAt}, nil
}

// Ping queues a ping delivery to the endpoint, active or not (an inactive
// one's waits).
func (s *Service) Ping(ctx context.Context, project, incarnation, id string) (contracts.WebhookDelivery, error) {
	rec, err := s.get(ctx, project, incarnation, id)
	if err != nil {
		return contracts.WebhookDelivery{}, err
	}
	now := s.now()
	did := "msg_p" + s.newID()
	body, err := json.Marshal(contracts.WebhookPayload{V: contracts.WebhookPayloadVersion, Type: contracts.WebhookPing, Timestamp: now,
		Data: contracts.WebhookData{Project: project}})
	if err != nil {
		return contracts.WebhookDelivery{}, err
	}
	d := contracts.WebhookDeliveryRecord{V: contracts.Version, OrderKey: did, QueuedAt: now, Body: string(body), AttemptLog: []contracts.WebhookAttempt{},
		WebhookDelivery: contracts.WebhookDelivery{ID: did, Webhook: rec.ID, Project: project, Type: contracts.WebhookPing,
			Status: contracts.DeliveryPending, NextAttemptAt: &now, CreatedAt: now, UpdatedAt: now}}
	if _, err := s.store.Deliveries.Create(ctx, webhookstore.Ref(rec.ID, did), d); err != nil {
		return contracts.WebhookDelivery{}, err
	}
	return d.WebhookDelivery, nil
}

// DeliveryQuery selects deliveries of one endpoint.
type DeliveryQuery struct {
	Status contracts.DeliveryStatus
	Cursor string
	Limit  int
}

// Deliveries returns a page of the endpoint's deliveries, newest first.
func (s *Service) Deliveries(ctx context.Context, project, incarnation, id string, q DeliveryQuery) (contracts.WebhookDeliveryPage, error) {
	switch q.Status {
	case "", contracts.DeliveryPending, contracts.DeliverySucceeded, contracts.DeliveryFailed, contracts.DeliveryExhausted:
	default:
		return contracts.WebhookDeliveryPage{}, invalid("invalid_status", "status is one of pending, succeeded, failed, exhausted")
	}
	if q.Limit == 0 {
		q.Limit = DefaultDeliveryLimit
	}
	if q.Limit < 1 || q.Limit > MaxDeliveryLimit {
		return contracts.WebhookDeliveryPage{}, invalid("invalid_limit", "limit must be 1 to %d", MaxDeliveryLimit)
	}
	after, err := decodeCursor(q.Cursor)
	if err != nil {
		return contracts.WebhookDeliveryPage{}, err
	}
	rec, err := s.get(ctx, project, incarnation, id)
	if err != nil {
		return contracts.WebhookDeliveryPage{}, err
	}
	all, err := s.store.ListDeliveries(ctx, rec.ID)
	if err != nil {
		return contracts.WebhookDeliveryPage{}, err
	}
	slices.SortFunc(all, func(a, b contracts.WebhookDeliveryRecord) int {
		return -compareAge(a.WebhookDelivery, b.WebhookDelivery)
	})
	page := contracts.WebhookDeliveryPage{Deliveries: []contracts.WebhookDelivery{}}
	for _, d := range all {
		if after != nil && compareAge(d.WebhookDelivery, *after) >= 0 {
			continue
		}
		if q.Status != "" && d.Status != q.Status {
			continue
		}
		if len(page.Deliveries) == q.Limit {
			page.NextCursor = encodeCursor(page.Deliveries[q.Limit-1])
			break
		}
		page.Deliveries = append(page.Deliveries, d.WebhookDelivery)
	}
	return page, nil
}

// compareAge orders deliveries by creation, then id.
func compareAge(a, b contracts.WebhookDelivery) int {
	if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}

// A cursor is the last delivery of a page: its creation time and id.
func encodeCursor(d contracts.WebhookDelivery) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(d.CreatedAt.UnixNano(), 10) + " " + d.ID))
}

func decodeCursor(c string) (*contracts.WebhookDelivery, error) {
	if c == "" {
		return nil, nil
	}
	bad := invalid("invalid_cursor", "cursor must be a next_cursor this endpoint returned")
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return nil, bad
	}
	ns, id, ok := strings.Cut(string(b), " ")
	n, err := strconv.ParseInt(ns, 10, 64)
	if !ok || err != nil {
		return nil, bad
	}
	return &contracts.WebhookDelivery{ID: id, CreatedAt: time.Unix(0, n)}, nil
}

func deliveryNotFound(id string) error {
	return &access.Error{Kind: access.KindNotFound, Code: "delivery_not_found", Message: "no delivery " + strconv.Quote(id)}
}

// ValidDeliveryID reports whether s can be a delivery id.
func ValidDeliveryID(s string) bool {
	rest, ok := strings.CutPrefix(s, "msg_")
	return ok && contracts.ValidID(rest)
}

// Delivery returns one delivery with its body and attempts.
func (s *Service) Delivery(ctx context.Context, project, incarnation, id, delivery string) (contracts.WebhookDeliveryRecord, error) {
	rec, err := s.get(ctx, project, incarnation, id)
	if err != nil {
		return contracts.WebhookDeliveryRecord{}, err
	}
	if !ValidDeliveryID(delivery) {
		return contracts.WebhookDeliveryRecord{}, deliveryNotFound(delivery)
	}
	d, _, err := s.store.Deliveries.Get(ctx, webhookstore.Ref(rec.ID, delivery))
	if errors.Is(err, state.ErrNotFound) {
		return d, deliveryNotFound(delivery)
	}
	return d, err
}

// Redeliver sends a finished delivery again (same webhook-id, so the
// receiver may recognise it); 409 while it is pending.
func (s *Service) Redeliver(ctx context.Context, project, incarnation, id, delivery string) (contracts.WebhookDelivery, error) {
	if _, err := s.Delivery(ctx, project, incarnation, id, delivery); err != nil {
		return contracts.WebhookDelivery{}, err
	}
	d, err := s.store.Deliveries.Modify(ctx, webhookstore.Ref(id, delivery), func(d *contracts.WebhookDeliveryRecord) (bool, error) {
		if !d.Status.Final() {
			return false, &access.Error{Kind: access.KindConflict, Code: "delivery_pending", Message: "the delivery is still pending; it is retried by itself"}
		}
		now := s.now()
		d.Status, d.NextAttemptAt, d.UpdatedAt, d.LastError = contracts.DeliveryPending, &now, now, ""
		d.QueuedAt = now // a new retry budget
		return true, nil
	})
	if errors.Is(err, state.ErrNotFound) {
		return d.WebhookDelivery, deliveryNotFound(delivery)
	}
	return d.WebhookDelivery, err
}
