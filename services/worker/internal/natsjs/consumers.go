package natsjs

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// JobConsumers creates or updates the durable pull consumer of each
// priority, shared by every worker, and returns them highest first.
// ackWait is how long a delivered job may go without an ack or heartbeat
// before JetStream gives it to another worker.
func JobConsumers(ctx context.Context, js jetstream.JetStream, ackWait time.Duration) ([]jetstream.Consumer, error) {
	var out []jetstream.Consumer
	for _, p := range contracts.Priorities() {
		c, err := js.CreateOrUpdateConsumer(ctx, contracts.StreamJobs, jetstream.ConsumerConfig{
			Durable:       contracts.ConsumerJobs(p),
			Description:   "rdev workers pull " + string(p) + " priority jobs",
			FilterSubject: contracts.SubjectJobsAt(p),
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       ackWait,
			MaxAckPending: -1,
			// Redelivery is the worker's business (worker_lost), not a limit.
			MaxDeliver:    -1,
			DeliverPolicy: jetstream.DeliverAllPolicy,
		})
		if err != nil {
			return nil, fmt.Errorf("consumer for %s jobs: %w", p, err)
		}
		out = append(out, c)
	}
	return out, nil
}
