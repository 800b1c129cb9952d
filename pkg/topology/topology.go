// Package topology provisions the JetStream streams and key-value bucket
// that pkg/contracts describes. Every service calls Ensure at start, so any
// of them may be the first to run against a fresh NATS.
package topology

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// Config sizes the topology. Zero values take the contracts defaults.
type Config struct {
	// OutputMaxAge is how long output lines and events stay replayable.
	OutputMaxAge time.Duration
	// StateTTL is how long job state stays readable after its last change.
	StateTTL time.Duration
	// JobsMaxAge bounds how long a job may wait in the queue.
	JobsMaxAge time.Duration
	// AuditMaxAge is how long audit records are kept.
	AuditMaxAge time.Duration
	// Replicas is the JetStream replica count (1 for a single server).
	Replicas int
	// Memory keeps everything in memory instead of files (tests only).
	Memory bool
}

func (c *Config) setDefaults() {
	if c.OutputMaxAge <= 0 {
		c.OutputMaxAge = contracts.DefaultOutputMaxAge
	}
	if c.StateTTL <= 0 {
		c.StateTTL = contracts.DefaultStateTTL
	}
	if c.JobsMaxAge <= 0 {
		c.JobsMaxAge = contracts.DefaultJobsMaxAge
	}
	if c.AuditMaxAge <= 0 {
		c.AuditMaxAge = contracts.DefaultAuditMaxAge
	}
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
}

// OutputMaxConsumers is the consumer limit of contracts.StreamOutput:
// room for 10,000 watched streams on each of several streamers, still a
// bound on what a runaway client can make the server hold.
const OutputMaxConsumers = 100_000

// Streams returns the stream configurations Ensure applies.
func Streams(cfg Config) []jetstream.StreamConfig {
	cfg.setDefaults()
	storage := jetstream.FileStorage
	if cfg.Memory {
		storage = jetstream.MemoryStorage
	}
	return []jetstream.StreamConfig{{
		Name:        contracts.StreamJobs,
		Description: "rdev queued jobs, one subject per priority; a job leaves when a worker acknowledges it",
		Subjects:    []string{contracts.SubjectJobsPrefix + ".>"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     storage,
		Replicas:    cfg.Replicas,
		MaxAge:      cfg.JobsMaxAge,
		Duplicates:  contracts.DuplicateWindow,
		Discard:     jetstream.DiscardOld,
		// Delayed jobs are JetStream message schedules: the stream's
		// leader publishes each to its priority subject when due (the
		// schedule subject is rolled up, which schedules require).
		AllowMsgSchedules: true,
		AllowRollup:       true,
	}, {
		Name:        contracts.StreamOutput,
		Description: "rdev output lines and lifecycle events, replayable from the start of each stream",
		Subjects:    []string{contracts.SubjectOutputPrefix + ".>", contracts.SubjectEventsPrefix + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     storage,
		Replicas:    cfg.Replicas,
		MaxAge:      cfg.OutputMaxAge,
		Duplicates:  contracts.DuplicateWindow,
		Discard:     jetstream.DiscardOld,
		// Workers store a burst of lines as one batch checked against the
		// stream's last line: fast batches on one replica, atomic ones on
		// more (nats-server 2.14 or later).
		AllowBatchPublish:  true,
		AllowAtomicPublish: true,
		// Replays read history with batched direct gets instead of a
		// consumer each (a reconnect storm would hit the consumer limit
		// and load the meta leader). Applied in place to an existing
		// stream.
		AllowDirect: true,
		// Each watched stream holds one ordered consumer per streamer,
		// each client of a project's events one: nats-server 2.15 allows
		// 1,000 consumers per stream unless the stream says otherwise,
		// which failed the 1,001st watched stream.
		MaxConsumers: OutputMaxConsumers,
	}, {
		Name:        contracts.StreamAudit,
		Description: "rdev audit log: every security-relevant act, append-only",
		Subjects:    []string{contracts.SubjectAuditPrefix + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     storage,
		Replicas:    cfg.Replicas,
		MaxAge:      cfg.AuditMaxAge,
		Duplicates:  contracts.DuplicateWindow,
		Discard:     jetstream.DiscardOld,
		// Nothing may rewrite history: records cannot be deleted one by
		// one nor the stream purged through the API.
		DenyDelete: true,
		DenyPurge:  true,
	}, {
		Name:        contracts.StreamDead,
		Description: "rdev dead letters: jobs given up, kept for inspection and retry",
		Subjects:    []string{contracts.SubjectDeadPrefix + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     storage,
		Replicas:    cfg.Replicas,
		MaxAge:      contracts.DefaultDeadMaxAge,
		Duplicates:  contracts.DuplicateWindow,
		Discard:     jetstream.DiscardOld,
	}}
}

// Ensure creates the streams and the state, access, secrets, queues and webhook buckets, or updates them to cfg
// when they exist, and returns the state bucket. An update never deletes
// messages: only limits change. A changed replica count is applied in
// place: JetStream copies an R1 stream to two more nodes (or drops
// replicas) while it keeps serving.
func Ensure(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.KeyValue, error) {
	cfg.setDefaults()
	for _, sc := range Streams(cfg) {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			if cfg.Replicas > 1 {
				return nil, fmt.Errorf("provision stream %s with %d replicas (needs a JetStream cluster of at least %d nodes): %w",
					sc.Name, cfg.Replicas, cfg.Replicas, err)
			}
			return nil, fmt.Errorf("provision stream %s: %w", sc.Name, err)
		}
	}
	if _, err := AccessBucket(ctx, js, cfg); err != nil {
		return nil, err
	}
	if _, err := SecretsBucket(ctx, js, cfg); err != nil {
		return nil, err
	}
	if err := queuesBucket(ctx, js, cfg); err != nil {
		return nil, err
	}
	if _, _, err := WebhookBuckets(ctx, js, cfg); err != nil {
		return nil, err
	}
	return stateBucket(ctx, js, cfg)
}

// AccessBucket creates or updates the access bucket (projects, API keys)
// and returns it. It keeps a short history so an operator can see what a
// record was before its last changes.
func AccessBucket(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.KeyValue, error) {
	cfg.setDefaults()
	return bucket(ctx, js, cfg, jetstream.KeyValueConfig{
		Bucket:      contracts.BucketAccess,
		Description: "rdev projects, API keys (hashes only) and the stream-token secret",
		History:     5,
	})
}

// SecretsBucket creates or updates the bucket of project secrets (values
// sealed, see contracts.SealedSecret) and returns it. It keeps no history:
// a secret replaced or deleted is gone.
func SecretsBucket(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.KeyValue, error) {
	cfg.setDefaults()
	return bucket(ctx, js, cfg, jetstream.KeyValueConfig{
		Bucket:      contracts.BucketSecrets,
		Description: "rdev project secrets, values sealed with the secrets key",
		History:     1,
	})
}

// queuesBucket creates or updates the bucket of queue settings (paused
// priority levels). It keeps a short history, so an operator sees who
// paused and resumed a level before.
func queuesBucket(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	_, err := bucket(ctx, js, cfg, jetstream.KeyValueConfig{
		Bucket:      contracts.BucketQueues,
		Description: "rdev queue settings: paused priority levels",
		History:     5,
	})
	return err
}

// WebhookBuckets creates or updates the bucket of webhook endpoints
// (secrets sealed, a short history like the access bucket's) and the
// bucket of their deliveries and the notifier's leases (no history; a
// delivery expires DefaultWebhookDeliveryTTL after its last change), and
// returns both.
func WebhookBuckets(ctx context.Context, js jetstream.JetStream, cfg Config) (endpoints, deliveries jetstream.KeyValue, err error) {
	cfg.setDefaults()
	endpoints, err = bucket(ctx, js, cfg, jetstream.KeyValueConfig{
		Bucket:      contracts.BucketWebhooks,
		Description: "rdev webhook endpoints, signing secrets sealed with the secrets key",
		History:     5,
	})
	if err != nil {
		return nil, nil, err
	}
	deliveries, err = bucket(ctx, js, cfg, jetstream.KeyValueConfig{
		Bucket:      contracts.BucketWebhookDeliveries,
		Description: "rdev webhook deliveries and the notifiers' endpoint leases",
		History:     1,
		TTL:         contracts.DefaultWebhookDeliveryTTL,
	})
	if err != nil {
		return nil, nil, err
	}
	return endpoints, deliveries, nil
}

func stateBucket(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.KeyValue, error) {
	return bucket(ctx, js, cfg, jetstream.KeyValueConfig{
		Bucket:      contracts.BucketState,
		Description: "rdev job state, stream references and idempotency keys",
		History:     1,
		TTL:         cfg.StateTTL,
	})
}

// bucket creates or updates the bucket kvc describes with cfg's storage
// and replicas, and returns it.
func bucket(ctx context.Context, js jetstream.JetStream, cfg Config, kvc jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kvc.Storage, kvc.Replicas = jetstream.FileStorage, cfg.Replicas
	if cfg.Memory {
		kvc.Storage = jetstream.MemoryStorage
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, kvc)
	if err != nil {
		return nil, fmt.Errorf("provision bucket %s: %w", kvc.Bucket, err)
	}
	return kv, nil
}
