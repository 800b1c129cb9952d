// Package webhookstore keeps webhook endpoints (contracts.BucketWebhooks)
// and their deliveries (contracts.BucketWebhookDeliveries) for the API,
// which manages them, and the notifier, which sends them. Signing
// secrets are stored sealed with the project secrets key (package seal):
// a reader of the bucket cannot sign with them.
package webhookstore

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/contracts/seal"
	"github.com/rdev-dev/rdev/pkg/state"
)

// SecretBytes is the length of a signing secret: 256 bits, as the HMAC's.
const SecretBytes = 32

// Store is the two webhook buckets.
type Store struct {
	box *seal.Box
	// Endpoints holds endpoint records by Ref(project, id).
	Endpoints state.Records[contracts.WebhookRecord]
	// Deliveries holds delivery records by Ref(endpoint, delivery).
	Deliveries state.Records[contracts.WebhookDeliveryRecord]
	endpoints  jetstream.KeyValue
	deliveries jetstream.KeyValue
}

// New returns the store on the endpoints and deliveries buckets, sealing
// secrets with box.
func New(endpoints, deliveries jetstream.KeyValue, box *seal.Box) *Store {
	return &Store{
		box:        box,
		endpoints:  endpoints,
		deliveries: deliveries,
		Endpoints:  state.NewRecords[contracts.WebhookRecord](endpoints, "webhook", func(ref string) string { return "endpoint." + ref }),
		Deliveries: state.NewRecords[contracts.WebhookDeliveryRecord](deliveries, "webhook delivery", func(ref string) string { return "delivery." + ref }),
	}
}

// Ref is the id of a record under two tokens: an endpoint by project and
// id, a delivery by endpoint and delivery id.
func Ref(a, b string) string { return a + "." + b }

// NewSecret returns a new random signing secret: its bytes, sealed for
// the endpoint, and as the receiver is given it ("whsec_" and base64).
func (s *Store) NewSecret(project, id string) (contracts.WebhookSecret, string) {
	raw := make([]byte, SecretBytes)
	_, _ = rand.Read(raw) // crypto/rand.Read never fails (Go 1.24+)
	return contracts.WebhookSecret{Sealed: s.box.Seal(raw, contracts.WebhookSecretAAD(project, id))},
		contracts.WebhookSecretPrefix + base64.StdEncoding.EncodeToString(raw)
}

// Signing returns the raw secrets that sign rec's deliveries at now: the
// current one and the rotated-out ones not yet expired.
func (s *Store) Signing(rec contracts.WebhookRecord, now time.Time) ([][]byte, error) {
	var out [][]byte
	for _, sec := range rec.Secrets {
		if sec.ExpiresAt != nil && !now.Before(*sec.ExpiresAt) {
			continue
		}
		raw, err := s.box.Open(sec.Sealed, contracts.WebhookSecretAAD(rec.Project, rec.ID))
		if err != nil {
			return nil, fmt.Errorf("webhook %s secret: %w", rec.ID, err)
		}
		out = append(out, raw)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("webhook %s has no signing secret", rec.ID)
	}
	return out, nil
}

// Rotate puts a new current secret in rec, keeping the previous current
// one until now+overlap and dropping expired ones, and returns the new
// secret as the receiver is given it.
func (s *Store) Rotate(rec *contracts.WebhookRecord, now time.Time, overlap time.Duration) string {
	sec, text := s.NewSecret(rec.Project, rec.ID)
	until := now.Add(overlap)
	kept := []contracts.WebhookSecret{sec}
	for i, old := range rec.Secrets {
		switch {
		case i == 0:
			old.ExpiresAt = &until
		case old.ExpiresAt != nil && !now.Before(*old.ExpiresAt):
			continue
		}
		kept = append(kept, old)
	}
	rec.Secrets = kept
	rec.PreviousSecretExpiresAt = &until
	return text
}

// List returns project's endpoint records (of every incarnation).
func (s *Store) List(ctx context.Context, project string) ([]contracts.WebhookRecord, error) {
	return listAll(ctx, s.endpoints, contracts.WebhookKeyPrefix(project), s.Endpoints, "endpoint.")
}

// ListDeliveries returns every delivery record of endpoint, in no order.
func (s *Store) ListDeliveries(ctx context.Context, endpoint string) ([]contracts.WebhookDeliveryRecord, error) {
	return listAll(ctx, s.deliveries, contracts.WebhookDeliveryKeyPrefix(endpoint), s.Deliveries, "delivery.")
}

// listAll reads every record whose key starts with prefix; one deleted
// between the listing and the read is skipped.
func listAll[T any](ctx context.Context, kv jetstream.KeyValue, prefix string, r state.Records[T], kindPrefix string) ([]T, error) {
	lister, err := kv.ListKeysFiltered(ctx, prefix+"*")
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return []T{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", prefix, err)
	}
	defer func() { _ = lister.Stop() }()
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	out := make([]T, 0, len(keys))
	for _, k := range keys {
		v, _, err := r.Get(ctx, k[len(kindPrefix):])
		if errors.Is(err, state.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// WatchEndpoints watches every endpoint record: the stored ones first,
// then a nil entry, then changes; it ends with ctx.
func (s *Store) WatchEndpoints(ctx context.Context) (jetstream.KeyWatcher, error) {
	return s.endpoints.Watch(ctx, "endpoint.>")
}

// WatchDeliveries watches changes of delivery records from now on.
func (s *Store) WatchDeliveries(ctx context.Context) (jetstream.KeyWatcher, error) {
	return s.deliveries.Watch(ctx, "delivery.>", jetstream.UpdatesOnly())
}

// DecodeEndpoint reads an entry of WatchEndpoints: the endpoint's id, its
// record unless deleted.
func DecodeEndpoint(e jetstream.KeyValueEntry) (id string, rec contracts.WebhookRecord, deleted bool, err error) {
	parts := strings.Split(e.Key(), ".")
	if len(parts) != 3 {
		return "", rec, false, fmt.Errorf("webhook key %q", e.Key())
	}
	id = parts[2]
	if e.Operation() != jetstream.KeyValuePut {
		return id, rec, true, nil
	}
	err = json.Unmarshal(e.Value(), &rec)
	return id, rec, false, err
}

// DecodeDelivery reads a put entry of WatchDeliveries.
func DecodeDelivery(e jetstream.KeyValueEntry) (contracts.WebhookDeliveryRecord, error) {
	var d contracts.WebhookDeliveryRecord
	err := json.Unmarshal(e.Value(), &d)
	return d, err
}
