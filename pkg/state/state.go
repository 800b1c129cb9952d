// Package state is the typed store of the rdev_state key-value bucket
// (contracts.BucketState), shared by the API, the workers and the
// streamer: one record kind per key prefix (job states, job specs, stream refs,
// batches, slot leases, idempotency claims, dead-letter retries, the job
// index), each read, created and compare-and-set the same way, with one
// not-found and one conflict error. Every write of a job state also
// writes the job's index entry, so whoever changes a job keeps the index
// (a new or running job's entry in the background, before the job's next
// write).
package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

var (
	// ErrNotFound is returned when a key holds no record: it was never
	// written, or it was deleted, purged or expired with the bucket's TTL.
	ErrNotFound = errors.New("state: record not found")
	// ErrConflict is returned by a compare-and-set write that lost: Create
	// found the record there already, Update found it at another revision
	// than the one the writer read.
	ErrConflict = errors.New("state: record changed concurrently")
)

// Store is the state bucket, one typed view per record kind.
type Store struct {
	kv      jetstream.KeyValue
	direct  *directGets // nil without WithDirectGets
	indexer *indexer
	// Jobs holds job states under contracts.JobKey(job id); each write
	// also stores the job's summary in Index.
	Jobs Records[contracts.JobState]
	// Index holds the job index: each job's contracts.JobSummary under
	// contracts.IndexKey(project, job id), by "<project>.<job id>".
	Index Records[contracts.JobSummary]
	// Specs holds the job each job was submitted as under
	// contracts.JobSpecKey(job id), for retries.
	Specs Records[contracts.Job]
	// Streams holds stream references under contracts.StreamKey(stream id).
	Streams Records[contracts.StreamRef]
	// Batches holds batch records under contracts.BatchKey(batch id).
	Batches Records[contracts.Batch]
	// BatchProgress holds what each batch's events said of its jobs
	// under contracts.BatchProgressKey(batch id).
	BatchProgress Records[contracts.BatchProgress]
	// Slots holds each project's running-job leases under
	// contracts.SlotsKey(project).
	Slots Records[Leases]
	// DeadRetries holds the retry record of a dead letter under
	// contracts.DeadRetryKey(dead letter id).
	DeadRetries Records[contracts.DeadLetterRetry]
}

// New returns the store on kv, the contracts.BucketState bucket.
func New(kv jetstream.KeyValue, opts ...Option) *Store {
	s := &Store{kv: kv}
	for _, o := range opts {
		o(s)
	}
	d := s.direct
	index := Records[contracts.JobSummary]{kv: kv, direct: d, kind: "job index entry",
		key: func(ref string) string { return contracts.IndexKeyPrefix + "." + ref }}
	s.indexer = newIndexer(index)
	s.Jobs = Records[contracts.JobState]{kv: kv, direct: d, kind: "job state", key: contracts.JobKey, stored: s.indexer.store}
	s.Index = index
	s.Specs = Records[contracts.Job]{kv: kv, direct: d, kind: "job spec", key: contracts.JobSpecKey}
	s.Streams = Records[contracts.StreamRef]{kv: kv, direct: d, kind: "stream ref", key: contracts.StreamKey}
	s.Batches = Records[contracts.Batch]{kv: kv, direct: d, kind: "batch", key: contracts.BatchKey}
	s.BatchProgress = Records[contracts.BatchProgress]{kv: kv, direct: d, kind: "batch progress", key: contracts.BatchProgressKey}
	s.Slots = Records[Leases]{kv: kv, direct: d, kind: "slots", key: contracts.SlotsKey}
	s.DeadRetries = Records[contracts.DeadLetterRetry]{kv: kv, direct: d, kind: "dead letter retry", key: contracts.DeadRetryKey}
	return s
}

// PurgeIndex removes a job's index entry, after this store's background
// write of it, if one is under way (Jobs.Purge leaves the entry).
func (s *Store) PurgeIndex(ctx context.Context, project, jobID string) error {
	ref := IndexRef(project, jobID)
	if err := s.indexer.wait(ctx, ref); err != nil {
		return err
	}
	s.indexer.forget(ref)
	return s.Index.Purge(ctx, ref)
}

// Idempotency holds project's idempotency claims under
// contracts.IdempotencyKeyKey(project, hashed key), by hashed key.
func (s *Store) Idempotency(project string) Records[IdempotencyClaim] {
	return Records[IdempotencyClaim]{kv: s.kv, direct: s.direct, kind: "idempotency key", decode: decodeClaim,
		key: func(hashedKey string) string { return contracts.IdempotencyKeyKey(project, hashedKey) }}
}

// Leases maps the job ids holding a project's running-job slots to when
// each lease expires.
type Leases map[string]time.Time

// IdempotencyClaim is what an idempotency key names: the job submitted
// under it, and what identifies the request (so a reuse of the key for
// another request is told apart).
type IdempotencyClaim struct {
	// JobID is the job the key names.
	JobID string `json:"job_id"`
	// Fingerprint identifies the request that claimed the key.
	Fingerprint string `json:"fingerprint,omitempty"`
	// Actor is the API key that claimed it.
	Actor string `json:"actor,omitempty"`
}

// decodeClaim reads a claim; a value stored before claims were JSON is
// the bare job id.
func decodeClaim(b []byte, c *IdempotencyClaim) error {
	if json.Unmarshal(b, c) != nil || c.JobID == "" {
		*c = IdempotencyClaim{JobID: string(b)}
	}
	return nil
}

// Records is one kind of record in the bucket, stored as JSON under
// key(id). It is safe for concurrent use.
type Records[T any] struct {
	kv     jetstream.KeyValue
	direct *directGets // nil: GetMany reads one by one
	kind   string
	key    func(id string) string
	decode func([]byte, *T) error
	// stored, when set, is told of every record stored, with its revision
	// and whether it was created (absent before).
	stored func(ctx context.Context, v T, rev uint64, created bool)
}

// NewRecords returns records of one kind (named kind in errors) stored
// as JSON under key(id) in kv, another bucket than the state's: the same
// reads and compare-and-set writes.
func NewRecords[T any](kv jetstream.KeyValue, kind string, key func(id string) string) Records[T] {
	return Records[T]{kv: kv, kind: kind, key: key}
}

// Get returns the record of id and its revision, or ErrNotFound.
func (r Records[T]) Get(ctx context.Context, id string) (T, uint64, error) {
	var v T
	e, err := r.kv.Get(ctx, r.key(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return v, 0, ErrNotFound
	}
	if err != nil {
		return v, 0, fmt.Errorf("read %s %s: %w", r.kind, id, err)
	}
	decode := r.decode
	if decode == nil {
		decode = func(b []byte, v *T) error { return json.Unmarshal(b, v) }
	}
	if err := decode(e.Value(), &v); err != nil {
		return v, 0, fmt.Errorf("decode %s %s: %w", r.kind, id, err)
	}
	return v, e.Revision(), nil
}

// Create stores v as the record of id unless one exists (ErrConflict),
// and returns its revision.
func (r Records[T]) Create(ctx context.Context, id string, v T) (uint64, error) {
	return r.Update(ctx, id, v, 0)
}

// Update stores v as the record of id if the stored one is still at
// revision rev, 0 meaning absent, and returns the new revision; else
// ErrConflict.
func (r Records[T]) Update(ctx context.Context, id string, v T, rev uint64) (uint64, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("encode %s %s: %w", r.kind, id, err)
	}
	var n uint64
	if rev == 0 {
		n, err = r.kv.Create(ctx, r.key(id), body)
	} else {
		n, err = r.kv.Update(ctx, r.key(id), body, rev)
	}
	if conflict(err) {
		return 0, ErrConflict
	}
	if err != nil {
		return 0, fmt.Errorf("store %s %s: %w", r.kind, id, err)
	}
	if r.stored != nil {
		r.stored(ctx, v, n, rev == 0)
	}
	return n, nil
}

// Put stores v as the record of id whatever is stored.
func (r Records[T]) Put(ctx context.Context, id string, v T) (uint64, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("encode %s %s: %w", r.kind, id, err)
	}
	n, err := r.kv.Put(ctx, r.key(id), body)
	if err != nil {
		return 0, fmt.Errorf("store %s %s: %w", r.kind, id, err)
	}
	if r.stored != nil {
		r.stored(ctx, v, n, false)
	}
	return n, nil
}

// Modify reads the record of id, applies change and stores the result by
// compare-and-set, reading again after every conflict. When change
// returns an error or false, nothing is stored and the record comes back
// as change left it, with change's error. ErrNotFound when there is no
// record.
func (r Records[T]) Modify(ctx context.Context, id string, change func(*T) (bool, error)) (T, error) {
	for {
		v, rev, err := r.Get(ctx, id)
		if err != nil {
			return v, err
		}
		if write, err := change(&v); err != nil || !write {
			return v, err
		}
		_, err = r.Update(ctx, id, v, rev)
		if !errors.Is(err, ErrConflict) {
			return v, err
		}
		if err := ctx.Err(); err != nil {
			return v, err
		}
	}
}

// Delete removes the record of id (keeping a delete marker until it
// expires); removing none is not an error.
func (r Records[T]) Delete(ctx context.Context, id string) error {
	if err := r.kv.Delete(ctx, r.key(id)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("delete %s %s: %w", r.kind, id, err)
	}
	return nil
}

// Purge removes the record of id and its history.
func (r Records[T]) Purge(ctx context.Context, id string) error {
	if err := r.kv.Purge(ctx, r.key(id)); err != nil {
		return fmt.Errorf("purge %s %s: %w", r.kind, id, err)
	}
	return nil
}

// conflict reports a compare-and-set that lost: the key exists (create)
// or is at another revision (update).
func conflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) || (errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant))
}

// IndexRef is the Index id of a job: "<project>.<job id>".
func IndexRef(project, jobID string) string { return project + "." + jobID }

// indexAttempts bounds the compare-and-set rounds of one index write.
const indexAttempts = 5

// indexRevsMax bounds the index revisions an indexer remembers: a job
// this process stops writing before it ends (handed back, taken over by
// another worker) leaves its entry behind until the map is cleared.
const indexRevsMax = 8192

// indexer stores a job state's summary in the index, unless the index
// holds one of the same or a later state revision: writers racing on one
// job (the API cancelling, a worker settling) may reach the index in any
// order, and the newest state wins. The job state is the record of truth
// and is stored already, so a failed index write is not the writer's
// failure: the job's next transition writes the entry again.
//
// An index write is a compare-and-set on the entry's revision, which a
// writer would have to read first: one round trip more per state write.
// The indexer skips that read when it can guess the revision — absent
// for a job state just created, the revision it wrote last for a job it
// wrote before and that has not ended (a worker's claim, then its final
// state) — and reads only when the guess was wrong.
//
// The summary of a job just created (a submit) or running (a worker's
// claim) is written in the background: the submit goes on to queue the
// job, the worker starts the command, while the entry is written (the
// listing learns of entries through a watch anyway, so it is never
// ahead of the state). Any other write of the same job waits for it
// first, so this process writes entries in the order of the states, and
// a job's final entry is stored before its final write returns (a worker
// acknowledges the job's message only after that).
type indexer struct {
	index Records[contracts.JobSummary]
	mu    sync.Mutex
	// revs is the index revision this process last wrote, by entry, for
	// jobs not ended.
	revs map[string]uint64
	// pending is closed when the background write of the entry ends.
	pending map[string]chan struct{}
}

func newIndexer(index Records[contracts.JobSummary]) *indexer {
	return &indexer{index: index, revs: map[string]uint64{}, pending: map[string]chan struct{}{}}
}

// guess returns the revision the entry ref is likely at, and whether
// there is a guess.
func (x *indexer) guess(ref string, created bool) (uint64, bool) {
	if created {
		return 0, true
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	rev, ok := x.revs[ref]
	return rev, ok
}

// wrote remembers the entry's revision while the job has not ended.
func (x *indexer) wrote(ref string, rev uint64, final bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if final {
		delete(x.revs, ref)
		return
	}
	if len(x.revs) >= indexRevsMax {
		clear(x.revs)
	}
	x.revs[ref] = rev
}

// store writes the summary of st, stored at revision rev (created: the
// state did not exist before): in the background for a state just
// created or a running job, else before it returns; after the job's
// background write in every case.
func (x *indexer) store(ctx context.Context, st contracts.JobState, rev uint64, created bool) {
	if st.Project == "" || st.JobID == "" {
		return
	}
	ref := IndexRef(st.Project, st.JobID)
	x.mu.Lock()
	prev := x.pending[ref]
	if !created && st.Status != contracts.StatusRunning {
		x.mu.Unlock()
		if prev != nil {
			select {
			case <-prev:
			case <-ctx.Done():
				return
			}
		}
		x.write(ctx, ref, st, rev, created)
		return
	}
	done := make(chan struct{})
	x.pending[ref] = done
	x.mu.Unlock()
	ctx = context.WithoutCancel(ctx)
	go func() {
		defer func() {
			x.mu.Lock()
			if x.pending[ref] == done {
				delete(x.pending, ref)
			}
			x.mu.Unlock()
			close(done)
		}()
		if prev != nil {
			<-prev
		}
		x.write(ctx, ref, st, rev, created)
	}()
}

// write stores the summary of st under ref by compare-and-set, reading
// the entry only when its revision cannot be guessed or the guess was
// wrong.
func (x *indexer) write(ctx context.Context, ref string, st contracts.JobState, rev uint64, created bool) {
	sum := contracts.SummaryOf(st, rev)
	curRev, guessed := x.guess(ref, created)
	for range indexAttempts {
		if !guessed {
			cur, r, err := x.index.Get(ctx, ref)
			switch {
			case errors.Is(err, ErrNotFound):
				r = 0
			case err != nil:
				continue
			case cur.StateRevision >= rev:
				x.forget(ref)
				return
			}
			curRev = r
		}
		guessed = false
		n, err := x.index.Update(ctx, ref, sum, curRev)
		if err == nil {
			x.wrote(ref, n, st.Status.Final())
			return
		}
		if ctx.Err() != nil {
			return
		}
	}
	x.forget(ref)
}

// wait returns once this indexer's background write of ref, if any, has
// ended.
func (x *indexer) wait(ctx context.Context, ref string) error {
	x.mu.Lock()
	prev := x.pending[ref]
	x.mu.Unlock()
	if prev == nil {
		return nil
	}
	select {
	case <-prev:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (x *indexer) forget(ref string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	delete(x.revs, ref)
}
