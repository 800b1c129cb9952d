// Package jobs holds the API's rules for accepting a job: what a valid
// submission is, how idempotency keys map to jobs, and that a job is
// durable in the queue before it is reported accepted.
package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// Store keeps job state readable by id.
type Store interface {
	// Create stores a new job's state, its stream reference and the spec
	// it may be retried from, and returns the state's revision. It returns
	// ErrJobExists if the job's state exists, and fails if the stream
	// reference does.
	Create(ctx context.Context, state contracts.JobState, ref contracts.StreamRef, spec contracts.Job) (revision uint64, err error)
	// Spec returns the spec Create stored for a job, or ErrNotFound.
	Spec(ctx context.Context, id string) (contracts.Job, error)
	// RestoreStreamRef stores ref unless its stream has a reference.
	RestoreStreamRef(ctx context.Context, ref contracts.StreamRef) error
	// Job returns a job's state, or ErrNotFound.
	Job(ctx context.Context, id string) (contracts.JobState, error)
	// Jobs returns the states of ids, in their order, leaving out the
	// jobs whose state is not found.
	Jobs(ctx context.Context, ids []string) ([]contracts.JobState, error)
	// ClaimIdempotencyKey records claim under (project, hashedKey) unless a
	// job already holds it; then it returns that job's claim and claimed
	// false.
	ClaimIdempotencyKey(ctx context.Context, project, hashedKey string, claim KeyClaim) (holder KeyClaim, claimed bool, err error)
	// ReplaceIdempotencyKey moves the key from job from to the claim to
	// by compare-and-set; if another job holds it, it returns that job's
	// claim and replaced false.
	ReplaceIdempotencyKey(ctx context.Context, project, hashedKey, from string, to KeyClaim) (holder KeyClaim, replaced bool, err error)
	// Forget removes what Create stored for a job that was never queued.
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
	// AbortBatch marks a pending batch aborted by compare-and-set and
	// returns the record as it is then (a batch that is not pending is
	// left alone); ErrNotFound when the batch is unknown.
	AbortBatch(ctx context.Context, id string) (contracts.Batch, error)
	// Batch returns a batch record, or ErrNotFound.
	Batch(ctx context.Context, id string) (contracts.Batch, error)
}

// KeyClaim is what an idempotency key holds: the job it names, the
// fingerprint of the request that claimed it, and the API key that sent
// that request. A claim stored before fingerprints has only JobID.
type KeyClaim struct {
	JobID       string `json:"job_id"`
	Fingerprint string `json:"fingerprint,omitempty"`
	Actor       string `json:"actor,omitempty"`
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

// Secrets answers whether a project has a secret; jobs reference secrets
// by name, and a submit naming one that does not exist is refused.
type Secrets interface {
	// Exists reports whether the incarnation of project has secret name.
	Exists(ctx context.Context, project, incarnation, name string) (bool, error)
}

// ErrNotFound is returned when a job id is unknown (or its state expired).
var ErrNotFound = errors.New("not found")

// ErrJobExists is returned by Store.Create when the job's state exists.
var ErrJobExists = errors.New("job exists")

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
	lister  Lister
	audit   Audit
	secrets Secrets
	limits  Limits
	newID   func() string
	now     func() time.Time
}

// New returns a Service. newID must return ids for which contracts.ValidID
// holds.
func New(store Store, queue Queue, control Control, audit Audit, limits Limits, newID func() string) *Service {
	limits.setDefaults()
	s := &Service{store: store, queue: queue, control: control, audit: audit, limits: limits, newID: newID, now: time.Now}
	if l, ok := queue.(Lister); ok {
		s.lister = l
	}
	return s
}

// UseSecrets lets jobs reference project secrets, checked in secrets.
// Without it a job that references one is refused (secrets_disabled).
func (s *Service) UseSecrets(secrets Secrets) { s.secrets = secrets }

// build validates sub and checks that the secrets it references exist.
func (s *Service) build(ctx context.Context, sub Submission) (contracts.Job, error) {
	job, err := s.limits.build(sub)
	if err == nil {
		err = s.limits.timing(sub, &job, s.now())
	}
	if err != nil || len(job.SecretEnv) == 0 {
		return job, err
	}
	if s.secrets == nil {
		return contracts.Job{}, &Error{Kind: KindConflict, Code: "secrets_disabled",
			Message: "this job references a project secret, but project secrets are disabled: the API was started without a secrets key (--secrets-key-file or --secrets-key)"}
	}
	names := make([]string, 0, len(job.SecretEnv))
	for _, name := range job.SecretEnv {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range slices.Compact(names) {
		ok, err := s.secrets.Exists(ctx, job.Project, job.ProjectIncarnation, name)
		if err != nil {
			return contracts.Job{}, fmt.Errorf("check secret: %w: %w", ErrUnavailable, err)
		}
		if !ok {
			return contracts.Job{}, invalid("unknown_secret", fmt.Sprintf("project %q has no secret %q; set it with PUT /v1/projects/%s/secrets/%s", job.Project, name, job.Project, name))
		}
	}
	return job, nil
}

// Submit validates sub, stores the job's state and enqueues it. It returns
// the job's state and whether it was an earlier job returned for the same
// idempotency key. Errors are *Error (the caller's fault) or wrap
// ErrUnavailable.
func (s *Service) Submit(ctx context.Context, sub Submission) (contracts.JobState, bool, error) {
	if err := s.continued(ctx, &sub); err != nil {
		return contracts.JobState{}, false, err
	}
	job, err := s.build(ctx, sub)
	if err != nil {
		return contracts.JobState{}, false, err
	}
	if sub.JobID != "" {
		return s.queueAs(ctx, job, sub.JobID, sub.Actor, sub.ClientIP)
	}
	return s.queueNew(ctx, job, sub.Actor, sub.ClientIP, sub.CanRead)
}

// Check validates sub as Submit would, without queuing anything: for
// a job stored to be submitted later (a schedule's).
func (s *Service) Check(ctx context.Context, sub Submission) error {
	if err := s.continued(ctx, &sub); err != nil {
		return err
	}
	_, err := s.build(ctx, sub)
	return err
}

// queueAs queues job under the id given, once: a job already stored
// under it is the answer, put in the queue again if no worker ever
// claimed it (its first submit may have stopped before the queue; the
// message id makes a repeat within the duplicate window a no-op).
func (s *Service) queueAs(ctx context.Context, job contracts.Job, id, actor, clientIP string) (contracts.JobState, bool, error) {
	job.ID, job.StreamID = id, s.newID()
	job.SubmittedAt = s.now().UTC()
	st, err := s.create(ctx, job, actor, clientIP)
	if !errors.Is(err, ErrJobExists) {
		return st, false, err
	}
	if st, err = s.store.Job(ctx, id); err != nil {
		return contracts.JobState{}, false, fmt.Errorf("load job %s: %w: %w", id, ErrUnavailable, err)
	}
	waiting := st.Status == contracts.StatusQueued || st.Status == contracts.StatusScheduled
	if waiting && st.Attempt == 0 && st.StartedAt == nil {
		if err := s.requeue(ctx, job, st, false, actor, clientIP); err != nil {
			return contracts.JobState{}, false, err
		}
	}
	return st, true, nil
}

// Resubmit queues a job again as a new job (new ids, first attempt, a
// fresh stream), e.g. from a dead letter. The idempotency key is not
// carried over: the point is to run it again.
func (s *Service) Resubmit(ctx context.Context, job contracts.Job, actor, clientIP string) (contracts.JobState, error) {
	job.Attempt, job.IdempotencyKey, job.BatchID, job.BatchAtomic = 1, "", "", false
	job.Trace = traceContext(job.Trace)
	st, _, err := s.queueNew(ctx, job, actor, clientIP, true)
	return st, err
}

// queueNew gives a valid job its ids and queues it durably, or returns
// the job its idempotency key names.
func (s *Service) queueNew(ctx context.Context, job contracts.Job, actor, clientIP string, canRead bool) (contracts.JobState, bool, error) {
	job.ID, job.StreamID = s.newID(), s.newID()
	job.SubmittedAt = s.now().UTC()
	if job.IdempotencyKey == "" {
		st, err := s.create(ctx, job, actor, clientIP)
		return st, false, err
	}
	return s.queueKeyed(ctx, job, actor, clientIP, canRead)
}

// keyRounds bounds how often a submit looks at an idempotency key that
// changed under it.
const keyRounds = 4

// queueKeyed queues a job with an idempotency key. The key is claimed
// before the job's state is stored, so a submit that failed midway (NATS
// down) can leave the key naming a job that is not stored, or stored but
// not queued. A retry completes that job rather than answering for it
// as it is: exactly one job per key, and a key is never unusable.
//
//   - No state: the submit that claimed the key stored nothing and queued
//     nothing. The retry creates the job under the id the key names;
//     Create lets exactly one of two racing submits do that.
//   - Queued, never claimed by a worker: it may be in the queue or not. The retry
//     enqueues it again with its ids; within the duplicate window
//     JetStream stores it once, and after it workers claim a job by
//     compare-and-set on its state, so a second copy never runs it twice.
//   - Of an atomic batch that is not committed: it will never run. The
//     retry aborts that batch, if still pending, and takes the key over
//     by compare-and-set for a new job.
//   - Otherwise the job is returned as it is.
//
// A key is bound to the request that claimed it (Stripe's model): a
// request with another fingerprint under it is refused
// (idempotency_key_reused), and the original job is handed only to a
// caller that may read it or that claimed the key (else
// idempotency_key_in_use, without ids). Either refusal changes nothing.
func (s *Service) queueKeyed(ctx context.Context, job contracts.Job, actor, clientIP string, canRead bool) (contracts.JobState, bool, error) {
	hashed := hashKey(job.ProjectIncarnation, job.IdempotencyKey)
	mine := KeyClaim{JobID: job.ID, Fingerprint: fingerprint(job), Actor: actor}
	holder, claimed, err := s.store.ClaimIdempotencyKey(ctx, job.Project, hashed, mine)
	if err != nil {
		return contracts.JobState{}, false, fmt.Errorf("claim idempotency key: %w: %w", ErrUnavailable, err)
	}
	for range keyRounds {
		if !claimed {
			if err := replayable(holder, mine, canRead); err != nil {
				return contracts.JobState{}, false, err
			}
		}
		if claimed {
			st, err := s.create(ctx, job, actor, clientIP)
			if errors.Is(err, ErrJobExists) {
				claimed = false // another submit created it first: look again
				continue
			}
			return st, false, err
		}
		st, err := s.store.Job(ctx, holder.JobID)
		if errors.Is(err, ErrNotFound) {
			job.ID, claimed = holder.JobID, true
			continue
		}
		if err != nil {
			return contracts.JobState{}, false, fmt.Errorf("load job %s for idempotency key: %w: %w", holder.JobID, ErrUnavailable, err)
		}
		// Only a job no worker ever claimed may be missing from the queue,
		// or be one that never runs because its atomic batch was aborted
		// (which cancels it); any other is the answer.
		unclaimed := st.Attempt == 0 && st.StartedAt == nil
		waiting := st.Status == contracts.StatusQueued || st.Status == contracts.StatusScheduled
		if !unclaimed || (!waiting && (st.Status != contracts.StatusCancelled || st.BatchID == "")) {
			return st, true, nil
		}
		atomic, doomed, err := s.batchOf(ctx, st, job)
		if err != nil {
			return contracts.JobState{}, false, err
		}
		if doomed {
			if waiting {
				// Workers would end it when its message comes, if it ever
				// does; say so now.
				_, _ = s.Cancel(ctx, st.JobID)
			}
			job.ID, job.StreamID = s.newID(), s.newID()
			mine.JobID = job.ID
			if holder, claimed, err = s.store.ReplaceIdempotencyKey(ctx, job.Project, hashed, st.JobID, mine); err != nil {
				return contracts.JobState{}, false, fmt.Errorf("take over idempotency key: %w: %w", ErrUnavailable, err)
			}
			continue
		}
		if !waiting {
			return st, true, nil
		}
		if err := s.requeue(ctx, job, st, atomic, actor, clientIP); err != nil {
			return contracts.JobState{}, false, err
		}
		return st, true, nil
	}
	return contracts.JobState{}, false, fmt.Errorf("idempotency key %q: %w: it kept changing under concurrent submits", job.IdempotencyKey, ErrUnavailable)
}

// batchOf tells whether the job st belongs to an atomic batch, and
// whether that batch is aborted, so the job will never run. A batch still
// pending is aborted first: a retry of its items must not race its commit.
// The batch of job, being submitted, is left alone (an item repeating
// another's key).
func (s *Service) batchOf(ctx context.Context, st contracts.JobState, job contracts.Job) (atomic, doomed bool, err error) {
	switch st.BatchID {
	case "":
		return false, false, nil
	case job.BatchID:
		return job.BatchAtomic, false, nil
	}
	b, err := s.store.AbortBatch(ctx, st.BatchID)
	if errors.Is(err, ErrNotFound) {
		// Not atomic (its record is written last and may be lost), or
		// expired: nothing holds the job back.
		return false, false, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("load batch %s of job %s: %w: %w", st.BatchID, st.JobID, ErrUnavailable, err)
	}
	return b.Atomic, b.Atomic && b.State != contracts.BatchCommitted, nil
}

// requeue enqueues again the job st, queued but maybe never put in the
// queue, from a submission of it (job) carrying the same key.
func (s *Service) requeue(ctx context.Context, job contracts.Job, st contracts.JobState, atomic bool, actor, clientIP string) error {
	job.ID, job.StreamID, job.SubmittedAt, job.Priority = st.JobID, st.StreamID, st.SubmittedAt, st.Priority
	job.BatchID, job.BatchAtomic = st.BatchID, atomic
	job.RunAt, job.Deadline = st.RunAt, st.Deadline
	// The first submit may have failed before its audit record or its
	// stream reference was stored; both are no-ops if they were.
	audited := make(chan error, 1)
	go func() { audited <- s.audit.Submitted(ctx, job, actor, clientIP) }()
	err := s.store.RestoreStreamRef(ctx, streamRef(job))
	if aerr := <-audited; aerr != nil {
		return fmt.Errorf("audit job: %w: %w", ErrUnavailable, aerr)
	}
	if err != nil {
		return fmt.Errorf("store stream ref: %w: %w", ErrUnavailable, err)
	}
	// Revision 0: the state may have changed since; the worker reads it.
	if err := s.queue.Enqueue(ctx, job, 0); err != nil {
		return fmt.Errorf("enqueue job: %w: %w", ErrUnavailable, err)
	}
	return nil
}

// create stores a job's state, audits it and queues it. A job without an
// idempotency key that is surely not queued is forgotten; one with a key
// stays for a retry with that key to complete.
func (s *Service) create(ctx context.Context, job contracts.Job, actor, clientIP string) (contracts.JobState, error) {
	state := contracts.QueuedState(job)
	forget := func() {
		if job.IdempotencyKey == "" {
			_ = s.store.Forget(context.WithoutCancel(ctx), state)
		}
	}
	// Audited before queued, so a job that runs always has its record;
	// the record and the state are independent writes, made at once to
	// save a round trip.
	audited := make(chan error, 1)
	go func() { audited <- s.audit.Submitted(ctx, job, actor, clientIP) }()
	rev, err := s.store.Create(ctx, state, streamRef(job), spec(job))
	aerr := <-audited
	if errors.Is(err, ErrJobExists) {
		return contracts.JobState{}, err
	}
	if err != nil {
		return contracts.JobState{}, fmt.Errorf("store job state: %w: %w", ErrUnavailable, err)
	}
	if aerr != nil {
		forget()
		return contracts.JobState{}, fmt.Errorf("audit job: %w: %w", ErrUnavailable, aerr)
	}
	if err := s.queue.Enqueue(ctx, job, rev); err != nil {
		if !errors.Is(err, ErrAmbiguous) {
			forget()
		}
		return contracts.JobState{}, fmt.Errorf("enqueue job: %w: %w", ErrUnavailable, err)
	}
	return state, nil
}

// spec is what a job is retried from: the job as submitted, but for its
// env values, which are not kept at rest beyond the queue (as in dead
// letters and audit records); secret references are kept.
func spec(job contracts.Job) contracts.Job {
	job.Env = contracts.RedactEnv(job.Env)
	return job
}

func streamRef(job contracts.Job) contracts.StreamRef {
	return contracts.StreamRef{V: contracts.Version, StreamID: job.StreamID, JobID: job.ID, Project: job.Project, Trace: job.Trace,
		ProjectIncarnation: job.ProjectIncarnation}
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
// characters they hold. The project's incarnation is part of it, so a
// project deleted and created again starts with no key in use.
func hashKey(incarnation, k string) string {
	if incarnation != "" {
		k = incarnation + "\x00" + k
	}
	sum := sha256.Sum256([]byte(k))
	return hex.EncodeToString(sum[:16])
}

// fingerprint identifies what a job asks for, after validation and
// defaults (so key order, spacing or an explicit default do not make
// another request): the endpoint's kind and every field the caller set.
func fingerprint(job contracts.Job) string {
	b, _ := json.Marshal(struct {
		Kind             contracts.Kind           `json:"kind"`
		Command          []string                 `json:"command"`
		Claude           *contracts.ClaudeOptions `json:"claude"`
		Env              map[string]string        `json:"env"`
		SecretEnv        map[string]string        `json:"secret_env,omitempty"` // omitted when empty: earlier claims keep their fingerprint
		WorkDir          string                   `json:"work_dir"`
		Priority         contracts.Priority       `json:"priority"`
		TimeoutSeconds   int                      `json:"timeout_seconds"`
		MaxAttempts      int                      `json:"max_attempts"`
		RetryOnExitCodes []int                    `json:"retry_on_exit_codes"`
		Stderr           string                   `json:"stderr"`
	}{job.Kind, job.Command, job.Claude, job.Env, job.SecretEnv, job.WorkDir, job.Priority, job.TimeoutSeconds,
		job.MaxAttempts, job.RetryOnExitCodes, job.Stderr})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// replayable decides whether the job holder names may be handed to the
// caller whose request is mine.
func replayable(holder, mine KeyClaim, canRead bool) error {
	if holder.Fingerprint != "" && holder.Fingerprint != mine.Fingerprint {
		return &Error{Kind: KindUnprocessable, Code: "idempotency_key_reused",
			Message: "this idempotency key was used for a different request (another body or endpoint); use a new key for a new request"}
	}
	if !canRead && holder.Actor != mine.Actor {
		return &Error{Kind: KindConflict, Code: "idempotency_key_in_use",
			Message: "this idempotency key names a job this API key may not read; use another idempotency key"}
	}
	return nil
}

// continued resolves a Claude submission's continue_job into the session
// that job recorded, to resume it. The job must be a Claude job of the
// same project (another project's job is not found: its existence is not
// the caller's business) that reported a session.
func (s *Service) continued(ctx context.Context, sub *Submission) error {
	id := sub.Claude.ContinueJob
	if sub.Kind != contracts.KindClaude || id == "" {
		return nil
	}
	if sub.Claude.Resume != "" {
		return invalid("invalid_continue_job", "give resume or continue_job, not both")
	}
	if !contracts.ValidID(id) {
		return invalid("invalid_continue_job", "continue_job must be a job id")
	}
	st, err := s.store.Job(ctx, id)
	if errors.Is(err, ErrNotFound) || (err == nil && (st.Project != sub.Project || st.ProjectIncarnation != sub.ProjectIncarnation)) {
		return &Error{Kind: KindNotFound, Code: "job_not_found", Message: fmt.Sprintf("continue_job: no job %q in project %q", id, sub.Project)}
	}
	if err != nil {
		return fmt.Errorf("load job %s: %w: %w", id, ErrUnavailable, err)
	}
	if st.Claude == nil || st.Claude.SessionID == "" {
		return &Error{Kind: KindConflict, Code: "no_session", Message: fmt.Sprintf("job %q recorded no Claude session (not a Claude job, still running, or it printed no stream-json)", id)}
	}
	sub.Claude.Resume = st.Claude.SessionID
	return nil
}
