// Package natsjs implements the API's job store and queue on NATS
// JetStream: state in the rdev_state key-value bucket, jobs on the
// prioritized work-queue stream.
package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/state"
	"github.com/rdev-dev/rdev/services/api/internal/jobs"
)

// Store keeps job state in the state bucket.
type Store struct {
	st *state.Store
	// batches keeps settled batch records (committed or aborted, which
	// never change again) read lately: a 10,000-job batch's record is
	// ≈ 300 KB, read on every GET of the batch while clients poll it.
	mu      sync.Mutex
	batches map[string]heldBatch
}

// heldBatch is a batch record kept in memory, and when it was read.
type heldBatch struct {
	b  contracts.Batch
	at time.Time
}

const (
	// batchesHeld bounds the batch records kept in memory.
	batchesHeld = 32
	// batchHeldFor is how long one is kept: the stored record expires
	// with the state TTL, and a kept one must not outlive it by much.
	batchHeldFor = time.Minute
)

// NewStore returns a Store on the state bucket kv, reading many job
// states at once with batched direct gets through js.
func NewStore(js jetstream.JetStream, kv jetstream.KeyValue) *Store {
	return &Store{st: state.New(kv, state.WithDirectGets(js)), batches: map[string]heldBatch{}}
}

// Create stores the job state and the stream reference. When the job's
// state exists already (another submit completing the same job under an
// idempotency key got there first) it returns jobs.ErrJobExists and
// leaves nothing of its own behind.
func (s *Store) Create(ctx context.Context, st contracts.JobState, ref contracts.StreamRef, spec contracts.Job) (uint64, error) {
	// Independent keys: write them concurrently to save round trips. A
	// spec there already is this job's, from a submit retried with its
	// idempotency key.
	errc, specc := make(chan error, 1), make(chan error, 1)
	go func() {
		_, err := s.st.Streams.Create(ctx, ref.StreamID, ref)
		errc <- err
	}()
	go func() {
		if _, err := s.st.Specs.Create(ctx, spec.ID, spec); err != nil && !errors.Is(err, state.ErrConflict) {
			specc <- err
			return
		}
		specc <- nil
	}()
	rev, jerr := s.st.Jobs.Create(ctx, st.JobID, st)
	serr, perr := <-errc, <-specc
	if errors.Is(jerr, state.ErrConflict) {
		if serr == nil {
			_ = s.st.Streams.Purge(context.WithoutCancel(ctx), ref.StreamID)
		}
		return 0, jobs.ErrJobExists
	}
	// A stream id is this job's alone: a reference found there was
	// restored by a concurrent submit of the same job (RestoreStreamRef
	// after it saw the state just created), and is this one.
	if serr != nil && errors.Is(serr, state.ErrConflict) {
		serr = nil
	}
	if err := errors.Join(serr, perr); err != nil {
		return 0, err
	}
	return rev, jerr
}

// Spec reads the spec a job was created with.
func (s *Store) Spec(ctx context.Context, id string) (contracts.Job, error) {
	spec, _, err := s.st.Specs.Get(ctx, id)
	return spec, notFound(err)
}

// RestoreStreamRef stores ref unless its stream has a reference already.
func (s *Store) RestoreStreamRef(ctx context.Context, ref contracts.StreamRef) error {
	if _, err := s.st.Streams.Create(ctx, ref.StreamID, ref); err != nil && !errors.Is(err, state.ErrConflict) {
		return err
	}
	return nil
}

// Job reads a job's state.
func (s *Store) Job(ctx context.Context, id string) (contracts.JobState, error) {
	st, _, err := s.st.Jobs.Get(ctx, id)
	return st, notFound(err)
}

// Jobs reads the states of ids, in their order, leaving out those not
// found: one request per 256 ids.
func (s *Store) Jobs(ctx context.Context, ids []string) ([]contracts.JobState, error) {
	vals, found, err := s.st.Jobs.GetMany(ctx, ids)
	if err != nil {
		return nil, err
	}
	kept := vals[:0]
	for i, v := range vals {
		if found[i] {
			kept = append(kept, v)
		}
	}
	return kept, nil
}

// notFound maps the store's not-found to the jobs service's.
func notFound(err error) error {
	if errors.Is(err, state.ErrNotFound) {
		return jobs.ErrNotFound
	}
	return err
}

// ClaimIdempotencyKey maps the key to claim unless another job holds it.
func (s *Store) ClaimIdempotencyKey(ctx context.Context, project, hashedKey string, claim jobs.KeyClaim) (jobs.KeyClaim, bool, error) {
	keys := s.st.Idempotency(project)
	_, err := keys.Create(ctx, hashedKey, state.IdempotencyClaim(claim))
	if err == nil {
		return claim, true, nil
	}
	if !errors.Is(err, state.ErrConflict) {
		return jobs.KeyClaim{}, false, err
	}
	holder, _, err := keys.Get(ctx, hashedKey)
	return jobs.KeyClaim(holder), false, err
}

// ReplaceIdempotencyKey moves the key from job from to the claim to by
// compare-and-set.
func (s *Store) ReplaceIdempotencyKey(ctx context.Context, project, hashedKey, from string, to jobs.KeyClaim) (jobs.KeyClaim, bool, error) {
	replaced := false
	holder, err := s.st.Idempotency(project).Modify(ctx, hashedKey, func(c *state.IdempotencyClaim) (bool, error) {
		if c.JobID != from {
			return false, nil
		}
		*c, replaced = state.IdempotencyClaim(to), true
		return true, nil
	})
	if errors.Is(err, state.ErrNotFound) {
		// Expired meanwhile: claim it afresh.
		return s.ClaimIdempotencyKey(ctx, project, hashedKey, to)
	}
	if err != nil {
		return jobs.KeyClaim{}, false, err
	}
	return jobs.KeyClaim(holder), replaced, nil
}

// Forget deletes a job that was never queued.
func (s *Store) Forget(ctx context.Context, st contracts.JobState) error {
	return errors.Join(s.st.Jobs.Purge(ctx, st.JobID), s.st.Streams.Purge(ctx, st.StreamID),
		s.st.Specs.Purge(ctx, st.JobID), s.st.PurgeIndex(ctx, st.Project, st.JobID))
}

// Update applies change to a job's state by compare-and-set. When change
// refuses, the error comes back with the state as it is.
func (s *Store) Update(ctx context.Context, id string, change func(*contracts.JobState) error) (contracts.JobState, error) {
	st, err := s.st.Jobs.Modify(ctx, id, func(st *contracts.JobState) (bool, error) { return true, change(st) })
	return st, notFound(err)
}

// CreateBatch stores a new batch record.
func (s *Store) CreateBatch(ctx context.Context, b contracts.Batch) (uint64, error) {
	return s.st.Batches.Create(ctx, b.ID, b)
}

// UpdateBatch replaces a batch record at revision rev.
func (s *Store) UpdateBatch(ctx context.Context, b contracts.Batch, rev uint64) error {
	_, err := s.st.Batches.Update(ctx, b.ID, b, rev)
	return err
}

// Batch reads a batch record.
func (s *Store) Batch(ctx context.Context, id string) (contracts.Batch, error) {
	s.mu.Lock()
	h, ok := s.batches[id]
	s.mu.Unlock()
	if ok && time.Since(h.at) < batchHeldFor {
		return h.b, nil
	}
	b, _, err := s.st.Batches.Get(ctx, id)
	if err == nil && b.State != contracts.BatchPending {
		s.mu.Lock()
		if len(s.batches) >= batchesHeld {
			for old, h := range s.batches {
				if time.Since(h.at) >= batchHeldFor || len(s.batches) >= batchesHeld {
					delete(s.batches, old)
				}
			}
		}
		s.batches[id] = heldBatch{b: b, at: time.Now()}
		s.mu.Unlock()
	}
	return b, notFound(err)
}

// AbortBatch marks a pending batch aborted by compare-and-set, and
// returns the record as it is then.
func (s *Store) AbortBatch(ctx context.Context, id string) (contracts.Batch, error) {
	b, err := s.st.Batches.Modify(ctx, id, func(b *contracts.Batch) (bool, error) {
		if b.State != contracts.BatchPending {
			return false, nil
		}
		b.State = contracts.BatchAborted
		return true, nil
	})
	return b, notFound(err)
}

// Queue publishes jobs to the prioritized work-queue stream.
type Queue struct {
	js jetstream.JetStream
	// ackTimeout bounds the wait for JetStream's acknowledgement.
	ackTimeout time.Duration
}

// NewQueue returns a Queue publishing with js.
func NewQueue(js jetstream.JetStream, ackTimeout time.Duration) *Queue {
	if ackTimeout <= 0 {
		ackTimeout = 5 * time.Second
	}
	return &Queue{js: js, ackTimeout: ackTimeout}
}

// Enqueue publishes the queued event, then the job, and returns once both
// are stored. The event goes first on the same connection, so it is stored
// before any event a worker publishes about the job.
func (q *Queue) Enqueue(ctx context.Context, job contracts.Job, stateRevision uint64) error {
	ctx, span := startPublish(ctx, &job)
	defer span.End()
	kind := contracts.EventQueued
	if job.RunAt != nil {
		kind = contracts.EventScheduled
	}
	ev, err := json.Marshal(contracts.Event{
		V: contracts.Version, Type: kind, Status: contracts.StatusOf(kind),
		JobID: job.ID, StreamID: job.StreamID, Project: job.Project, Attempt: job.Attempt, BatchID: job.BatchID,
		Time: job.SubmittedAt,
	})
	if err != nil {
		return err
	}
	body, err := json.Marshal(job)
	if err != nil {
		return err
	}
	evMsg := nats.NewMsg(contracts.SubjectEvent(job.Project, job.StreamID, kind))
	evMsg.Data = ev
	jobMsg := nats.NewMsg(contracts.SubjectJob(job.Priority, job.Project))
	jobMsg.Data = body
	jobMsg.Header.Set(contracts.HeaderJobID, job.ID)
	jobMsg.Header.Set(contracts.HeaderStateRevision, strconv.FormatUint(stateRevision, 10))
	if job.RunAt != nil {
		schedule(jobMsg, job.Project, *job.RunAt)
	}

	evAck, err := q.js.PublishMsgAsync(evMsg, jetstream.WithMsgID(job.ID+":"+string(kind)), jetstream.WithExpectStream(contracts.StreamOutput))
	if err != nil {
		return fmt.Errorf("publish queued event: %w", err)
	}
	jobAck, err := q.js.PublishMsgAsync(jobMsg, jetstream.WithMsgID(job.ID), jetstream.WithExpectStream(contracts.StreamJobs))
	if err != nil {
		return fmt.Errorf("publish job: %w", err)
	}
	timer := time.NewTimer(q.ackTimeout)
	defer timer.Stop()
	for _, f := range []jetstream.PubAckFuture{jobAck, evAck} {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			if errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrAsyncPublishTimeout) {
				return fmt.Errorf("%w: %w", jobs.ErrAmbiguous, err)
			}
			return err
		case <-timer.C:
			return fmt.Errorf("%w: no acknowledgement within %s", jobs.ErrAmbiguous, q.ackTimeout)
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", jobs.ErrAmbiguous, context.Cause(ctx))
		}
	}
	return nil
}

// schedule turns a job message into a JetStream message schedule: it
// waits under the job's own subject, which no consumer reads, and the
// stream's leader publishes it to its priority subject at runAt (headers
// and body as they are, the schedule headers and message id replaced).
// The schedule is stored and replicated like any message before the
// publish is acknowledged, so it survives restarts of every process; no
// rdev process keeps a timer.
func schedule(msg *nats.Msg, project string, runAt time.Time) {
	msg.Header.Set("Nats-Schedule-Target", msg.Subject)
	msg.Header.Set("Nats-Schedule", "@at "+runAt.UTC().Format(time.RFC3339Nano))
	msg.Subject = contracts.SubjectScheduledJob(project, msg.Header.Get(contracts.HeaderJobID))
}

// Announce stores a lifecycle event with the message id the workers use
// for the same event (job:attempt:type), so whichever publishes second
// within the duplicate window is dropped.
func (q *Queue) Announce(ctx context.Context, ev contracts.Event) error {
	body, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	msg := nats.NewMsg(contracts.SubjectEvent(ev.Project, ev.StreamID, ev.Type))
	msg.Data = body
	ctx, cancel := context.WithTimeout(ctx, q.ackTimeout)
	defer cancel()
	_, err = q.js.PublishMsg(ctx, msg, jetstream.WithMsgID(ev.JobID+":"+strconv.Itoa(ev.Attempt)+":"+string(ev.Type)),
		jetstream.WithExpectStream(contracts.StreamOutput))
	return err
}

// RequestCancel publishes a cancel request on the plain NATS subject the
// workers listen to and flushes it, so it has left this process when the
// call returns.
func (q *Queue) RequestCancel(ctx context.Context, jobID string) error {
	nc := q.js.Conn()
	if err := nc.Publish(contracts.SubjectCancel(jobID), nil); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, q.ackTimeout)
	defer cancel()
	return nc.FlushWithContext(ctx)
}

// Pending returns the ids of project's jobs in the work-queue stream: a
// job's message stays there until the job ends. It reads the messages by
// subject without a consumer (a work queue allows no second one).
func (q *Queue) Pending(ctx context.Context, project string) ([]string, error) {
	stream, err := q.js.Stream(ctx, contracts.StreamJobs)
	if err != nil {
		return nil, err
	}
	// Queued at a priority, or delayed (scheduled).
	var ids []string
	for _, subject := range []string{contracts.SubjectJobsPrefix + ".*." + project, contracts.SubjectScheduledJob(project, "*")} {
		for seq := uint64(1); ; {
			m, err := stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				break
			}
			if err != nil {
				return nil, err
			}
			if id := m.Header.Get(contracts.HeaderJobID); id != "" {
				ids = append(ids, id)
			}
			seq = m.Sequence + 1
		}
	}
	return ids, nil
}
