package runner

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/state"
)

// Settling a job must ride through a NATS blip (a stream leader election,
// a reconnect to another node): if a write of the settle path gave up at
// the first failure, the job's message would be delivered again while its
// state still says running, and the job would end worker_lost although
// its worker is alive and knows how it ended. So the runner's writes go
// through these wrappers, which retry every failure that is not an answer
// (a conflict, a missing state) with backoff, for up to a budget. The
// heartbeat keeps the message in progress meanwhile, and a worker that
// receives it anyway asks the holder first (Holders).

// persistBudget is how long one write is retried; default one minute.
const defaultPersistBudget = time.Minute

// persist calls op until it succeeds, returns an answer, ctx ends or the
// budget is spent, and returns its last error.
func persist(ctx context.Context, budget time.Duration, op func() error) error {
	deadline := time.Now().Add(budget)
	backoff := 50 * time.Millisecond
	for {
		err := op()
		if err == nil || answered(err) || !time.Now().Before(deadline) {
			return err
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return err
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// answered reports an error that retrying cannot change. A closed
// connection never comes back: the worker is stopping (or was cut off),
// and the job's message is delivered again to another.
func answered(err error) bool {
	return errors.Is(err, state.ErrConflict) || errors.Is(err, state.ErrNotFound) ||
		errors.Is(err, context.Canceled) || errors.Is(err, nats.ErrConnectionClosed)
}

// persistentStates retries States calls.
type persistentStates struct {
	States
	budget time.Duration
}

func (s persistentStates) Get(ctx context.Context, jobID string) (st contracts.JobState, rev uint64, err error) {
	err = persist(ctx, s.budget, func() error {
		st, rev, err = s.States.Get(ctx, jobID)
		return err
	})
	return st, rev, err
}

// Update retries a compare-and-set whose outcome is unknown: a try that
// timed out may have been stored, and the next then conflicts with it; the
// stored state is read, and if it is exactly st, the write succeeded.
func (s persistentStates) Update(ctx context.Context, jobID string, st contracts.JobState, rev uint64) (newRev uint64, err error) {
	failed := false
	err = persist(ctx, s.budget, func() error {
		newRev, err = s.States.Update(ctx, jobID, st, rev)
		if errors.Is(err, state.ErrConflict) && failed {
			cur, curRev, gerr := s.States.Get(ctx, jobID)
			if gerr != nil {
				return gerr
			}
			if sameState(cur, st) {
				newRev, err = curRev, nil
			}
		}
		failed = err != nil
		return err
	})
	return newRev, err
}

// sameState reports whether stored is what wrote stores.
func sameState(stored, wrote contracts.JobState) bool {
	ja, err1 := json.Marshal(stored)
	jb, err2 := json.Marshal(wrote)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}

// persistentEvents retries Events calls; a republished event is stored
// once (its message id).
type persistentEvents struct {
	Events
	budget time.Duration
}

func (e persistentEvents) Publish(ctx context.Context, ev contracts.Event) error {
	return persist(ctx, e.budget, func() error { return e.Events.Publish(ctx, ev) })
}

func (e persistentEvents) Stored(ctx context.Context, ev contracts.Event) (stored bool, err error) {
	err = persist(ctx, e.budget, func() error {
		stored, err = e.Events.Stored(ctx, ev)
		return err
	})
	return stored, err
}

// persistentDead retries DeadLetters calls; a republished dead letter is
// stored once (its message id).
type persistentDead struct {
	DeadLetters
	budget time.Duration
}

func (d persistentDead) Publish(ctx context.Context, project string, dl contracts.DeadLetter) error {
	return persist(ctx, d.budget, func() error { return d.DeadLetters.Publish(ctx, project, dl) })
}
