// Package jobs holds the API's rules for accepting a job: what a valid
// submission is, how idempotency keys map to jobs, and that a job is
// durable in the queue before it is reported accepted.
package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// Store keeps job state readable by id.
type Store interface {
	// Create stores a new job's state and its stream reference, and returns
	// the state's revision. It fails if either exists.
	Create(ctx context.Context, state contracts.JobState, ref contracts.StreamRef) (revision uint64, err error)
	// Job returns a job's state, or ErrNotFound.
	Job(ctx context.Context, id string) (contracts.JobState, error)
	// ClaimIdempotencyKey records jobID under (project, hashedKey) unless a
	// job already holds it; then it returns that job's id and claimed false.
	ClaimIdempotencyKey(ctx context.Context, project, hashedKey, jobID string) (holder string, claimed bool, err error)
	// Forget removes what Create and ClaimIdempotencyKey stored for a job
	// that was never queued.
	Forget(ctx context.Context, state contracts.JobState) error
	// Update applies change to a job's state by compare-and-set, retrying
	// when another writer got there first, and returns the result; a change
	// that returns an error leaves the state alone. ErrNotFound when the
	// job is unknown.
	Update(ctx context.Context, id string, change func(*contracts.JobState) error) (contracts.JobState, error)
	// CreateBatch stores a new batch record and returns its revision.
	CreateBatch(ctx context.Context, b contracts.Batch) (uint64, error)
	// UpdateBatch replaces a batch record if it is still at revision rev.
	UpdateBatch(ctx context.Context, b contracts.Batch, rev uint64) error
	// Batch returns a batch record, or ErrNotFound.
	Batch(ctx context.Context, id string) (contracts.Batch, error)
}

// Control reaches the workers and watchers of jobs already queued.
type Control interface {
	// Announce stores a lifecycle event of a job (its message id makes a
	// repeat within the duplicate window a no-op).
	Announce(ctx context.Context, ev contracts.Event) error
	// RequestCancel tells whichever worker runs the job to stop it.
	RequestCancel(ctx context.Context, jobID string) error
}

// Queue accepts jobs for the workers.
type Queue interface {
	// Enqueue returns nil only once the job is durably stored. Enqueueing
	// the same job id twice within contracts.DuplicateWindow stores it once.
	// stateRevision is the revision Store.Create returned; workers use it
	// to claim the job in one step.
	Enqueue(ctx context.Context, job contracts.Job, stateRevision uint64) error
}

// Audit records security-relevant acts.
type Audit interface {
	// Submitted records that job was accepted from actor (an API key id)
	// at clientIP. It returns only once the record is durable.
	Submitted(ctx context.Context, job contracts.Job, actor, clientIP string) error
}

// ErrNotFound is returned when a job id is unknown (or its state expired).
var ErrNotFound = errors.New("not found")

// ErrUnavailable wraps failures of the store or queue: the request may be
// retried, with the same idempotency key to be safe.
var ErrUnavailable = errors.New("unavailable")

// ErrAmbiguous marks an Enqueue failure after which the job may or may not
// be stored (a timeout waiting for the acknowledgement).
var ErrAmbiguous = errors.New("outcome unknown")

// Service accepts jobs and answers for their state.
type Service struct {
	store   Store
	queue   Queue
	control Control
	audit   Audit
	limits  Limits
	newID   func() string
	now     func() time.Time
}

// New returns a Service. newID must return ids for which contracts.ValidID
// holds.
func New(store Store, queue Queue, control Control, audit Audit, limits Limits, newID func() string) *Service {
	limits.setDefaults()
	return &Service{store: store, queue: queue, control: control, audit: audit, limits: limits, newID: newID, now: time.Now}
}

// Submit validates sub, stores the job's state and enqueues it. It returns
// the job's state and whether it was an earlier job returned for the same
// idempotency key. Errors are *Error (the caller's fault) or wrap
// ErrUnavailable.
func (s *Service) Submit(ctx context.Context, sub Submission) (contracts.JobState, bool, error) {
	job, err := s.limits.build(sub)
	if err != nil {
		return contracts.JobState{}, false, err
	}
	return s.queueNew(ctx, job, sub.Actor, sub.ClientIP)
}

// Resubmit queues a job again as a new job (new ids, first attempt, a
// fresh stream), e.g. from a dead letter. The idempotency key is not
// carried over: the point is to run it again.
func (s *Service) Resubmit(ctx context.Context, job contracts.Job, actor, clientIP string) (contracts.JobState, error) {
	job.Attempt, job.IdempotencyKey, job.BatchID, job.BatchAtomic = 1, "", "", false
	st, _, err := s.queueNew(ctx, job, actor, clientIP)
	return st, err
}

// queueNew gives a valid job its ids and queues it durably.
func (s *Service) queueNew(ctx context.Context, job contracts.Job, actor, clientIP string) (contracts.JobState, bool, error) {
	job.ID, job.StreamID = s.newID(), s.newID()
	job.SubmittedAt = s.now().UTC()
	state := contracts.JobState{
		V: contracts.Version, JobID: job.ID, Project: job.Project, Kind: job.Kind,
		Priority: job.Priority, Status: contracts.StatusQueued, StreamID: job.StreamID,
		SubmittedAt: job.SubmittedAt, IdempotencyKey: job.IdempotencyKey,
		MaxAttempts: job.MaxAttempts, BatchID: job.BatchID,
	}
	state.TraceID = traceID(job.Trace)

	if job.IdempotencyKey != "" {
		holder, claimed, err := s.store.ClaimIdempotencyKey(ctx, job.Project, hashKey(job.IdempotencyKey), job.ID)
		if err != nil {
			return contracts.JobState{}, false, fmt.Errorf("claim idempotency key: %w: %w", ErrUnavailable, err)
		}
		if !claimed {
			return s.replay(ctx, holder)
		}
	}
	// Audited before queued, so a job that runs always has its record;
	// the record and the state are independent writes, made at once to
	// save a round trip.
	audited := make(chan error, 1)
	go func() { audited <- s.audit.Submitted(ctx, job, actor, clientIP) }()
	rev, err := s.store.Create(ctx, state, contracts.StreamRef{V: contracts.Version, StreamID: job.StreamID, JobID: job.ID, Project: job.Project, Trace: job.Trace})
	aerr := <-audited
	if err != nil {
		return contracts.JobState{}, false, fmt.Errorf("store job state: %w: %w", ErrUnavailable, err)
	}
	if aerr != nil {
		_ = s.store.Forget(context.WithoutCancel(ctx), state)
		return contracts.JobState{}, false, fmt.Errorf("audit job: %w: %w", ErrUnavailable, aerr)
	}
	if err := s.queue.Enqueue(ctx, job, rev); err != nil {
		if !errors.Is(err, ErrAmbiguous) {
			// Definitely not queued: leave no trace, so a retry starts clean.
			_ = s.store.Forget(context.WithoutCancel(ctx), state)
		}
		return contracts.JobState{}, false, fmt.Errorf("enqueue job: %w: %w", ErrUnavailable, err)
	}
	return state, false, nil
}

// replay returns the job that holds an idempotency key.
func (s *Service) replay(ctx context.Context, jobID string) (contracts.JobState, bool, error) {
	state, err := s.store.Job(ctx, jobID)
	if err != nil {
		return contracts.JobState{}, false, fmt.Errorf("load job %s for idempotency key: %w: %w", jobID, ErrUnavailable, err)
	}
	return state, true, nil
}

// Job returns a job's state.
func (s *Service) Job(ctx context.Context, id string) (contracts.JobState, error) {
	if !contracts.ValidID(id) {
		return contracts.JobState{}, invalid("invalid_job_id", "job id must be 1 to 64 letters, digits, '_' or '-'")
	}
	st, err := s.store.Job(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return contracts.JobState{}, &Error{Kind: KindNotFound, Code: "job_not_found", Message: fmt.Sprintf("no job %q (unknown, or its state expired)", id)}
	}
	if err != nil {
		return contracts.JobState{}, fmt.Errorf("load job %s: %w: %w", id, ErrUnavailable, err)
	}
	return st, nil
}

// hashKey keeps callers' keys out of subject and key names, whatever
// characters they hold.
func hashKey(k string) string {
	sum := sha256.Sum256([]byte(k))
	return hex.EncodeToString(sum[:16])
}
