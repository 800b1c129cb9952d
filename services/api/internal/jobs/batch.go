package jobs

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// MaxBatchItems is the most jobs one batch may hold.
const MaxBatchItems = 10_000

// batchParallelism bounds the submissions of one batch in flight: enough
// to keep JetStream's pipeline full, few enough that one batch cannot
// starve other requests (flow control).
const batchParallelism = 64

// BatchItem is the outcome of one item of a batch.
type BatchItem struct {
	// State is the accepted job's state.
	State contracts.JobState
	// Replayed is true when an earlier job held the item's idempotency key.
	Replayed bool
	// Err is why the item was refused: an *Error, or one wrapping
	// ErrUnavailable.
	Err error
}

// ErrBatchRefused is returned by SubmitBatch for an atomic batch with a
// refused item: nothing of it was queued; the items say why.
var ErrBatchRefused = errors.New("batch refused")

// SubmitBatch validates and queues subs as one batch of project. Items
// are judged one by one: a refused item does not stop the others, unless
// atomic is set, in which case either every job is queued or none runs.
//
// Atomic batches are two-phase: the batch record is stored pending before
// any job is queued, its jobs are marked BatchAtomic so workers hold them
// back while it is pending, and the record is committed once every job is
// durable — or aborted, after which workers end the queued jobs
// cancelled. A batch whose API dies midway stays pending and workers treat
// it as aborted after contracts.AtomicBatchWindow.
func (s *Service) SubmitBatch(ctx context.Context, project string, subs []Submission, atomic bool) (contracts.Batch, []BatchItem, error) {
	b := contracts.Batch{V: contracts.Version, ID: s.newID(), Project: project, Atomic: atomic,
		State: contracts.BatchCommitted, SubmittedAt: s.now().UTC()}
	if len(subs) > 0 {
		b.ProjectIncarnation = subs[0].ProjectIncarnation // every item's: one project
	}
	items := make([]BatchItem, len(subs))
	built := make([]contracts.Job, len(subs))
	valid := 0
	for i := range subs {
		subs[i].Project, subs[i].BatchID, subs[i].BatchAtomic = project, b.ID, atomic
		err := s.continued(ctx, &subs[i])
		if err == nil {
			built[i], err = s.build(ctx, subs[i])
		}
		if err != nil {
			items[i].Err = err
			continue
		}
		valid++
	}
	if atomic && valid < len(subs) {
		return b, items, ErrBatchRefused
	}
	var rev uint64
	if atomic {
		b.State = contracts.BatchPending
		var err error
		if rev, err = s.store.CreateBatch(ctx, b); err != nil {
			return b, items, fmt.Errorf("store batch: %w: %w", ErrUnavailable, err)
		}
	}

	sem := make(chan struct{}, batchParallelism)
	var wg sync.WaitGroup
	for i := range subs {
		if items[i].Err != nil {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			items[i].State, items[i].Replayed, items[i].Err = s.queueNew(ctx, built[i], subs[i].Actor, subs[i].ClientIP, subs[i].CanRead)
		})
	}
	wg.Wait()

	failed := false
	for _, it := range items {
		if it.Err == nil {
			b.JobIDs = append(b.JobIDs, it.State.JobID)
		} else {
			b.Rejected++
			failed = true
		}
	}
	if !atomic {
		if _, err := s.store.CreateBatch(ctx, b); err != nil {
			// The jobs are queued and will run; only the batch view is lost.
			return b, items, fmt.Errorf("store batch: %w: %w", ErrUnavailable, err)
		}
		return b, items, nil
	}
	if failed {
		return b, items, s.abort(ctx, b, rev, items)
	}
	b.State = contracts.BatchCommitted
	if err := s.store.UpdateBatch(ctx, b, rev); err != nil {
		// Not committed: workers will treat the batch as aborted.
		return b, items, s.abort(ctx, b, rev, items)
	}
	return b, items, nil
}

// abort marks an atomic batch aborted and cancels its queued jobs, so
// their state says so at once (workers would end them anyway).
func (s *Service) abort(ctx context.Context, b contracts.Batch, rev uint64, items []BatchItem) error {
	ctx = context.WithoutCancel(ctx)
	b.State = contracts.BatchAborted
	if err := s.store.UpdateBatch(ctx, b, rev); err != nil {
		return fmt.Errorf("abort batch %s: %w: %w", b.ID, ErrUnavailable, err)
	}
	for _, it := range items {
		if it.Err == nil && !it.Replayed {
			_, _ = s.Cancel(ctx, it.State.JobID)
		}
	}
	return fmt.Errorf("%w: some jobs could not be queued, so none will run", ErrUnavailable)
}

// Batch returns a batch record and its jobs' states.
func (s *Service) Batch(ctx context.Context, id string) (contracts.Batch, error) {
	if !contracts.ValidID(id) {
		return contracts.Batch{}, invalid("invalid_batch_id", "batch id must be 1 to 64 letters, digits, '_' or '-'")
	}
	b, err := s.store.Batch(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return b, &Error{Kind: KindNotFound, Code: "batch_not_found", Message: fmt.Sprintf("no batch %q (unknown, or expired)", id)}
	}
	if err != nil {
		return b, fmt.Errorf("load batch %s: %w: %w", id, ErrUnavailable, err)
	}
	return b, nil
}

// States returns the states of jobs, in their order; a job whose state
// expired is left out.
func (s *Service) States(ctx context.Context, ids []string) ([]contracts.JobState, error) {
	states, err := s.store.Jobs(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("load %d jobs: %w: %w", len(ids), ErrUnavailable, err)
	}
	return states, nil
}
