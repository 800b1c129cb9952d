package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// queuesBucket opens contracts.BucketQueues, where pauses and schedules
// are kept.
func queuesBucket(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, contracts.BucketQueues)
	if err != nil {
		return nil, fmt.Errorf("queues bucket: %w", err)
	}
	return kv, nil
}

// Pauses keeps which priority levels are paused in the queues bucket
// (contracts.BucketQueues), where the workers watch them.
type Pauses struct{ js jetstream.JetStream }

// NewPauses returns the pauses of the queues bucket js reaches.
func NewPauses(js jetstream.JetStream) *Pauses { return &Pauses{js: js} }

// Set stores p as its level's pause.
func (s *Pauses) Set(ctx context.Context, p contracts.QueuePause) error {
	kv, err := queuesBucket(ctx, s.js)
	if err != nil {
		return err
	}
	body, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, contracts.PauseKey(p.Priority), body); err != nil {
		return fmt.Errorf("store pause of %s: %w", p.Priority, err)
	}
	return nil
}

// Paused returns the paused levels.
func (s *Pauses) Paused(ctx context.Context) (map[contracts.Priority]bool, error) {
	kv, err := queuesBucket(ctx, s.js)
	if err != nil {
		return nil, err
	}
	paused := map[contracts.Priority]bool{}
	for _, lvl := range contracts.Priorities() {
		e, err := kv.Get(ctx, contracts.PauseKey(lvl))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read pause of %s: %w", lvl, err)
		}
		var p contracts.QueuePause
		if err := json.Unmarshal(e.Value(), &p); err != nil {
			return nil, fmt.Errorf("decode pause of %s: %w", lvl, err)
		}
		paused[lvl] = p.Paused
	}
	return paused, nil
}
