package jobs_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology"
	"github.com/rdev-dev/rdev/pkg/topology/natsserver"
	"github.com/rdev-dev/rdev/services/api/internal/jobs"
	"github.com/rdev-dev/rdev/services/api/internal/natsjs"
)

// The points of a submit where the outage tests stop NATS.
const (
	// afterClaim: the idempotency key is claimed, the job's state is not
	// stored yet.
	afterClaim = "after claim"
	// afterCreate: the state is stored, the job is not queued yet (and
	// nothing the submit then cleans up can reach NATS).
	afterCreate = "after create"
	// enqueueLost: the enqueue times out before the job reached
	// JetStream.
	enqueueLost = "enqueue lost"
	// ackLost: the job is stored but its acknowledgement never arrives.
	ackLost = "ack lost"
)

var outagePoints = []string{afterClaim, afterCreate, enqueueLost, ackLost}

// outageEnv is a jobs.Service on the real NATS adapters and a real
// embedded NATS server that a test stops in the middle of a submit and
// starts again on the same store.
type outageEnv struct {
	t    *testing.T
	svc  *jobs.Service
	nc   *nats.Conn
	js   jetstream.JetStream
	kv   jetstream.KeyValue
	dir  string
	addr string

	mu  sync.Mutex
	srv *server.Server
	// point is where the outage strikes, once; down ends the submit's
	// context there, as the API's connection watch does when NATS drops.
	point string
	fired bool
	down  context.CancelFunc
}

func setupOutage(t *testing.T, point string) *outageEnv {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &outageEnv{t: t, dir: t.TempDir(), addr: ln.Addr().String(), point: point}
	ln.Close()
	e.start()
	t.Cleanup(e.stop)
	// Like the API's own connection: no reconnect buffer, so nothing
	// written during the outage is sent after it.
	e.nc, err = nats.Connect("nats://"+e.addr, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond),
		nats.ReconnectBufSize(-1), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.nc.Close)
	if e.js, err = jetstream.New(e.nc); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if e.kv, err = topology.Ensure(ctx, e.js, topology.Config{}); err != nil {
		t.Fatal(err)
	}
	store := natsjs.NewStore(e.js, e.kv)
	queue := natsjs.NewQueue(e.js, 2*time.Second)
	audit := natsjs.NewAuditLog(e.js, 2*time.Second, slog.New(slog.DiscardHandler))
	e.svc = jobs.New(faultyStore{Store: store, env: e}, faultyQueue{Queue: queue, env: e}, queue, audit, jobs.Limits{},
		func() string { return ulid.Make().String() })
	return e
}

func (e *outageEnv) start() {
	e.t.Helper()
	srv, err := natsserver.Start(natsserver.Config{Addr: e.addr, StoreDir: e.dir})
	if err != nil {
		e.t.Fatal(err)
	}
	e.mu.Lock()
	e.srv = srv
	e.mu.Unlock()
}

func (e *outageEnv) stop() {
	e.mu.Lock()
	srv := e.srv
	e.srv = nil
	e.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

// at stops NATS if the outage strikes at point, and reports whether it
// did.
func (e *outageEnv) at(ctx context.Context, point string) bool {
	e.mu.Lock()
	strike := point == e.point && !e.fired
	e.fired = e.fired || strike
	down := e.down
	e.mu.Unlock()
	if strike {
		e.stop()
		if down != nil {
			down()
		}
		// From here on every call fails at once, as it does in an outage
		// the client has noticed.
		e.waitConnected(context.WithoutCancel(ctx), false) // the outage ends ctx
	}
	return strike
}

// struck reports whether the outage happened.
func (e *outageEnv) struck() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.fired
}

// submitCtx is the context of a submit that the outage ends.
func (e *outageEnv) submitCtx() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	e.t.Cleanup(cancel)
	e.mu.Lock()
	e.down = cancel
	e.mu.Unlock()
	return ctx
}

// restart starts NATS again on the same store and waits until the
// service's connection is back.
func (e *outageEnv) restart() {
	e.t.Helper()
	e.start()
	e.waitConnected(e.t.Context(), true)
}

// waitConnected waits until the service's connection is up, or down.
func (e *outageEnv) waitConnected(ctx context.Context, up bool) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if await.Poll(ctx, func() bool { return e.nc.IsConnected() == up }) != nil {
		// Errorf, not await.Within: this may run on a submit's goroutine.
		e.t.Errorf("the connection is not %s after 10s", map[bool]string{true: "up", false: "down"}[up])
	}
}

// faultyStore stops NATS right after the key is claimed or the state
// stored, when the test asks for it.
type faultyStore struct {
	jobs.Store
	env *outageEnv
}

func (s faultyStore) ClaimIdempotencyKey(ctx context.Context, project, hashedKey string, claim jobs.KeyClaim) (jobs.KeyClaim, bool, error) {
	holder, claimed, err := s.Store.ClaimIdempotencyKey(ctx, project, hashedKey, claim)
	if err == nil && claimed {
		s.env.at(ctx, afterClaim)
	}
	return holder, claimed, err
}

func (s faultyStore) Create(ctx context.Context, st contracts.JobState, ref contracts.StreamRef, spec contracts.Job) (uint64, error) {
	rev, err := s.Store.Create(ctx, st, ref, spec)
	if err == nil {
		s.env.at(ctx, afterCreate)
	}
	return rev, err
}

// faultyQueue loses an enqueue's outcome, before or after JetStream
// stored the job, when the test asks for it.
type faultyQueue struct {
	*natsjs.Queue
	env *outageEnv
}

func (q faultyQueue) Enqueue(ctx context.Context, job contracts.Job, rev uint64) error {
	if q.env.at(ctx, enqueueLost) {
		return fmt.Errorf("%w: no acknowledgement (test)", jobs.ErrAmbiguous)
	}
	err := q.Queue.Enqueue(ctx, job, rev)
	if err == nil && q.env.at(ctx, ackLost) {
		return fmt.Errorf("%w: no acknowledgement (test)", jobs.ErrAmbiguous)
	}
	return err
}

// untilAccepted retries a submit as a client following the docs does,
// after the outage: every refusal must be ErrUnavailable, and one must
// succeed within a bound.
func untilAccepted(t *testing.T, submit func() error) {
	t.Helper()
	await.Within(t, 15*time.Second, "a retry with the same idempotency key accepted once NATS is back", func() bool {
		err := submit()
		if err != nil && !errors.Is(err, jobs.ErrUnavailable) {
			t.Fatalf("retry refused for another reason than NATS: %v", err)
		}
		return err == nil
	})
}

// queuedJobs reads every job message in RDEV_JOBS.
func (e *outageEnv) queuedJobs() []contracts.Job {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, contracts.StreamJobs)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []contracts.Job
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			e.t.Fatal(err)
		}
		var j contracts.Job
		if err := json.Unmarshal(m.Data, &j); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, j)
	}
	return out
}

// checkQueuedOnce checks that the job st is what its idempotency key
// names, that its state and stream reference are stored and agree, and
// that RDEV_JOBS holds it exactly once.
func (e *outageEnv) checkQueuedOnce(st contracts.JobState, queued []contracts.Job) contracts.Job {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var found []contracts.Job
	for _, j := range queued {
		if j.ID == st.JobID {
			found = append(found, j)
		}
	}
	if len(found) != 1 {
		e.t.Fatalf("job %s (key %q) is in %s %d times, want once", st.JobID, st.IdempotencyKey, contracts.StreamJobs, len(found))
	}
	stored, err := e.kv.Get(ctx, contracts.JobKey(st.JobID))
	if err != nil {
		e.t.Fatalf("state of job %s: %v", st.JobID, err)
	}
	var state contracts.JobState
	if err := json.Unmarshal(stored.Value(), &state); err != nil {
		e.t.Fatal(err)
	}
	if state.Status != contracts.StatusQueued || state.StreamID != found[0].StreamID || state.StreamID != st.StreamID {
		e.t.Fatalf("state %+v does not match the queued job %+v", state, found[0])
	}
	ref, err := e.kv.Get(ctx, contracts.StreamKey(st.StreamID))
	if err != nil {
		e.t.Fatalf("stream reference of job %s: %v", st.JobID, err)
	}
	var sr contracts.StreamRef
	if err := json.Unmarshal(ref.Value(), &sr); err != nil || sr.JobID != st.JobID {
		e.t.Fatalf("stream reference %s names job %q, want %s (%v)", st.StreamID, sr.JobID, st.JobID, err)
	}
	return found[0]
}

func sub(key string) jobs.Submission {
	return jobs.Submission{Project: "demo", Kind: contracts.KindExec, Command: []string{"echo", key}, IdempotencyKey: key}
}

// A submit caught by a NATS outage at any point is answered unavailable,
// and its retry with the same idempotency key succeeds once NATS is back,
// queuing the job exactly once (issue 10: a key whose submit failed was
// never usable again).
func TestSubmitRetriedAfterAnOutageIsQueuedOnce(t *testing.T) {
	t.Parallel()
	for _, point := range outagePoints {
		t.Run(point, func(t *testing.T) {
			t.Parallel()
			e := setupOutage(t, point)
			_, _, err := e.svc.Submit(e.submitCtx(), sub("deploy-42"))
			if !errors.Is(err, jobs.ErrUnavailable) {
				t.Fatalf("submit caught by the outage: %v, want unavailable", err)
			}
			if !e.struck() {
				t.Fatal("the outage never struck")
			}
			// While NATS is down, a retry is unavailable too.
			if _, _, err := e.svc.Submit(context.Background(), sub("deploy-42")); !errors.Is(err, jobs.ErrUnavailable) {
				t.Fatalf("retry while NATS is down: %v, want unavailable", err)
			}
			e.restart()
			var st contracts.JobState
			untilAccepted(t, func() error {
				var err error
				st, _, err = e.svc.Submit(context.Background(), sub("deploy-42"))
				return err
			})
			job := e.checkQueuedOnce(st, e.queuedJobs())
			if job.IdempotencyKey != "deploy-42" || !slices.Equal(job.Command, []string{"echo", "deploy-42"}) {
				t.Fatalf("queued job %+v", job)
			}
			// Once queued, the key keeps returning that job, queued once.
			again, replayed, err := e.svc.Submit(context.Background(), sub("deploy-42"))
			if err != nil || !replayed || again.JobID != st.JobID {
				t.Fatalf("submit after success: %+v replayed=%v err=%v, want job %s replayed", again, replayed, err, st.JobID)
			}
			if q := e.queuedJobs(); len(q) != 1 {
				t.Fatalf("%d jobs queued, want 1", len(q))
			}
		})
	}
}

// The same for batches, plain and atomic: the outage strikes one item
// while the others are anywhere in their submit; the retried batch
// accepts every item, each job queued once, and an item accepted before
// the outage keeps its job.
func TestBatchRetriedAfterAnOutageQueuesEachJobOnce(t *testing.T) {
	t.Parallel()
	const n = 12
	subs := func() []jobs.Submission {
		out := make([]jobs.Submission, n)
		for i := range out {
			out[i] = sub(fmt.Sprintf("item-%d", i))
		}
		return out
	}
	for _, atomic := range []bool{false, true} {
		for _, point := range outagePoints {
			t.Run(fmt.Sprintf("%s atomic=%v", point, atomic), func(t *testing.T) {
				t.Parallel()
				e := setupOutage(t, point)
				first, items, err := e.svc.SubmitBatch(e.submitCtx(), "demo", subs(), atomic)
				if atomic && !errors.Is(err, jobs.ErrUnavailable) {
					t.Fatalf("atomic batch caught by the outage: %v, want unavailable", err)
				}
				earlier := map[int]string{}
				for i, it := range items {
					if it.Err == nil && !atomic {
						earlier[i] = it.State.JobID
					} else if it.Err != nil && !errors.Is(it.Err, jobs.ErrUnavailable) {
						t.Fatalf("item %d: %v, want unavailable", i, it.Err)
					}
				}
				if len(earlier) == n {
					t.Fatal("the outage refused no item")
				}
				e.restart()
				var b contracts.Batch
				untilAccepted(t, func() error {
					var err error
					b, items, err = e.svc.SubmitBatch(context.Background(), "demo", subs(), atomic)
					if err != nil {
						return err
					}
					for i, it := range items {
						if it.Err != nil {
							return fmt.Errorf("item %d: %w", i, it.Err)
						}
					}
					return nil
				})
				queued := e.queuedJobs()
				seen := map[string]bool{}
				for i, it := range items {
					job := e.checkQueuedOnce(it.State, queued)
					if seen[job.ID] {
						t.Fatalf("item %d shares job %s with another item", i, job.ID)
					}
					seen[job.ID] = true
					if id, ok := earlier[i]; ok && id != job.ID {
						t.Fatalf("item %d was accepted as job %s, the retry made job %s", i, id, job.ID)
					}
					if atomic && (!job.BatchAtomic || job.BatchID != b.ID) {
						t.Fatalf("item %d: job %+v is not of the retried atomic batch %s", i, job, b.ID)
					}
				}
				if atomic {
					if got := e.batchState(b.ID); got != contracts.BatchCommitted {
						t.Fatalf("retried batch %s, want committed", got)
					}
					// Whatever the first try queued belongs to a batch that
					// is aborted: workers end it cancelled.
					for _, j := range queued {
						if seen[j.ID] {
							continue
						}
						if j.BatchID != first.ID {
							t.Fatalf("stray job %+v", j)
						}
						if got := e.batchState(first.ID); got != contracts.BatchAborted {
							t.Fatalf("first batch %s with job %s queued, want aborted", got, j.ID)
						}
					}
				} else if len(queued) != n {
					t.Fatalf("%d jobs queued, want %d", len(queued), n)
				}
			})
		}
	}
}

// batchState reads a batch record's state.
func (e *outageEnv) batchState(id string) contracts.BatchState {
	e.t.Helper()
	b, err := e.svc.Batch(context.Background(), id)
	if err != nil {
		e.t.Fatalf("batch %s: %v", id, err)
	}
	return b.State
}

// Submits racing on a key whose holder was never stored (what a submit
// cut short after its claim leaves) make that one job, queued once, and
// leave no stray stream reference behind.
func TestRacingRetriesOfAKeyWithoutItsJobMakeOneJob(t *testing.T) {
	t.Parallel()
	e := setupOutage(t, "")
	ctx := context.Background()
	held := ulid.Make().String()
	sum := sha256.Sum256([]byte("race"))
	if _, err := e.kv.Create(ctx, contracts.IdempotencyKeyKey("demo", hex.EncodeToString(sum[:16])), []byte(held)); err != nil {
		t.Fatal(err)
	}
	const n = 8
	states := make([]contracts.JobState, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { states[i], _, errs[i] = e.svc.Submit(ctx, sub("race")) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || states[i].JobID != held || states[i].StreamID != states[0].StreamID {
			t.Fatalf("submit %d: %+v %v, want job %s on stream %s", i, states[i], errs[i], held, states[0].StreamID)
		}
	}
	e.checkQueuedOnce(states[0], e.queuedJobs())
	keys, err := e.kv.ListKeys(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		t.Fatal(err)
	}
	refs := 0
	for k := range keys.Keys() {
		if strings.HasPrefix(k, "stream.") {
			refs++
		}
	}
	if refs != 1 {
		t.Fatalf("%d stream references stored, want 1", refs)
	}
}
