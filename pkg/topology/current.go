package topology

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// Current reports whether every stream and bucket exists as Ensure would
// leave it. A service signed in with its least-privilege user may read
// stream info but not create or update streams: it calls Ensure only when
// the topology is not Current, and then needs the admin user.
func Current(ctx context.Context, js jetstream.JetStream, cfg Config) (bool, error) {
	cfg.setDefaults()
	for _, want := range Streams(cfg) {
		got, ok, err := streamConfig(ctx, js, want.Name)
		if !ok || err != nil {
			return false, err
		}
		if !slices.Equal(got.Subjects, want.Subjects) || got.Retention != want.Retention || got.Storage != want.Storage ||
			got.Replicas != want.Replicas || got.MaxAge != want.MaxAge || got.Duplicates != want.Duplicates ||
			got.Discard != want.Discard || got.AllowBatchPublish != want.AllowBatchPublish ||
			got.AllowAtomicPublish != want.AllowAtomicPublish || got.DenyDelete != want.DenyDelete || got.DenyPurge != want.DenyPurge ||
			got.AllowMsgSchedules != want.AllowMsgSchedules || got.AllowDirect != want.AllowDirect ||
			(want.MaxConsumers > 0 && got.MaxConsumers != want.MaxConsumers) {
			return false, nil
		}
	}
	for _, b := range []struct {
		bucket string
		ttl    time.Duration
	}{{contracts.BucketAccess, 0}, {contracts.BucketSecrets, 0}, {contracts.BucketQueues, 0}, {contracts.BucketState, cfg.StateTTL},
		{contracts.BucketWebhooks, 0}, {contracts.BucketWebhookDeliveries, contracts.DefaultWebhookDeliveryTTL}} {
		got, ok, err := streamConfig(ctx, js, "KV_"+b.bucket)
		if !ok || err != nil {
			return false, err
		}
		if got.Replicas != cfg.Replicas || (b.ttl != 0 && got.MaxAge != b.ttl) {
			return false, nil
		}
	}
	return true, nil
}

func streamConfig(ctx context.Context, js jetstream.JetStream, name string) (jetstream.StreamConfig, bool, error) {
	s, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return jetstream.StreamConfig{}, false, nil
	}
	if err != nil {
		return jetstream.StreamConfig{}, false, err
	}
	return s.CachedInfo().Config, true, nil
}
