package runner

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/state"
)

// Batches reads and settles all-or-nothing batches (contracts.Batch);
// state.Store.Batches is one.
type Batches interface {
	// Get returns a batch record and its revision, or state.ErrNotFound.
	Get(ctx context.Context, id string) (contracts.Batch, uint64, error)
	// Update stores b as batch id if it is still at revision rev, else
	// state.ErrConflict.
	Update(ctx context.Context, id string, b contracts.Batch, rev uint64) (uint64, error)
}

// batchVerdict is what a job of an atomic batch may do now.
type batchVerdict int

const (
	batchRun batchVerdict = iota
	batchWait
	batchAborted
)

// batchStates remembers batches that are settled (committed or aborted):
// those never change again, so their jobs need no read each.
type batchStates struct {
	mu      sync.Mutex
	settled map[string]contracts.BatchState
}

func (b *batchStates) get(id string) (contracts.BatchState, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.settled[id]
	return s, ok
}

func (b *batchStates) put(id string, s contracts.BatchState) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.settled == nil || len(b.settled) > 10_000 {
		b.settled = map[string]contracts.BatchState{} // bounded; a miss costs one read
	}
	b.settled[id] = s
}

// batchGate decides whether a job of an atomic batch may run: only once
// its batch is committed. While the batch is pending the job waits in the
// queue; a batch still pending after contracts.AtomicBatchWindow had its
// API die midway, and the first worker to see that aborts it by
// compare-and-set, so a late commit by that API fails and every job of the
// batch agrees.
func (r *Runner) batchGate(ctx context.Context, job contracts.Job) (batchVerdict, error) {
	if !job.BatchAtomic || r.batches == nil {
		return batchRun, nil
	}
	settled, ok := r.batchState.get(job.BatchID)
	for !ok {
		b, rev, err := r.batches.Get(ctx, job.BatchID)
		if errors.Is(err, state.ErrNotFound) {
			// The record is written before any job is queued; gone means
			// it expired with the state bucket's TTL: nothing to hold.
			return batchRun, nil
		}
		if err != nil {
			return 0, fmt.Errorf("read batch %s: %w", job.BatchID, err)
		}
		if b.State != contracts.BatchPending {
			settled = b.State
			r.batchState.put(job.BatchID, settled)
			break
		}
		if r.now().Before(b.SubmittedAt.Add(contracts.AtomicBatchWindow)) {
			return batchWait, nil
		}
		b.State = contracts.BatchAborted
		if _, err := r.batches.Update(ctx, b.ID, b, rev); err != nil && !errors.Is(err, state.ErrConflict) {
			return 0, fmt.Errorf("abort batch %s: %w", job.BatchID, err)
		}
		// Aborted by us or settled by someone else: read again.
	}
	if settled == contracts.BatchAborted {
		return batchAborted, nil
	}
	return batchRun, nil
}
