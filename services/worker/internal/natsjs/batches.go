package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/worker/internal/runner"
)

// Batches reads and aborts batch records in the state bucket.
type Batches struct{ kv jetstream.KeyValue }

// NewBatches returns Batches on the state bucket.
func NewBatches(kv jetstream.KeyValue) *Batches { return &Batches{kv: kv} }

// Batch returns a batch record and its revision, or
// runner.ErrStateNotFound.
func (b *Batches) Batch(ctx context.Context, id string) (contracts.Batch, uint64, error) {
	e, err := b.kv.Get(ctx, contracts.BatchKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return contracts.Batch{}, 0, runner.ErrStateNotFound
	}
	if err != nil {
		return contracts.Batch{}, 0, err
	}
	var rec contracts.Batch
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return contracts.Batch{}, 0, fmt.Errorf("decode batch %s: %w", id, err)
	}
	return rec, e.Revision(), nil
}

// Abort stores rec as aborted if it is still at revision rev, else
// runner.ErrStateConflict.
func (b *Batches) Abort(ctx context.Context, rec contracts.Batch, rev uint64) error {
	rec.State = contracts.BatchAborted
	body, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	_, err = b.kv.Update(ctx, contracts.BatchKey(rec.ID), body, rev)
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		return runner.ErrStateConflict
	}
	return err
}
