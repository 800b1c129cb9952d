package state_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/state"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// setup returns a store on the state bucket of a fresh embedded server,
// and the raw bucket to look behind it.
func setup(t *testing.T) (*state.Store, jetstream.KeyValue) {
	t.Helper()
	_, _, js := natstest.Provisioned(t)
	kv, err := js.KeyValue(t.Context(), contracts.BucketState)
	if err != nil {
		t.Fatal(err)
	}
	return state.New(kv), kv
}

func TestGetMissingIsNotFound(t *testing.T) {
	t.Parallel()
	s, _ := setup(t)
	if _, _, err := s.Jobs.Get(t.Context(), "nope"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("Get of a missing job: %v, want ErrNotFound", err)
	}
	if _, err := s.Batches.Modify(t.Context(), "nope", func(*contracts.Batch) (bool, error) { return true, nil }); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("Modify of a missing batch: %v, want ErrNotFound", err)
	}
}

func TestCreateGetUpdateUnderTheContractKey(t *testing.T) {
	t.Parallel()
	s, kv := setup(t)
	ctx := t.Context()
	st := contracts.JobState{V: contracts.Version, JobID: "j1", Project: "p", Status: contracts.StatusQueued, StreamID: "s1"}
	rev, err := s.Jobs.Create(ctx, st.JobID, st)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, contracts.JobKey("j1")); err != nil {
		t.Fatalf("record not under contracts.JobKey: %v", err)
	}
	got, grev, err := s.Jobs.Get(ctx, "j1")
	if err != nil || grev != rev || got.Status != contracts.StatusQueued || got.StreamID != "s1" {
		t.Fatalf("Get = %+v, %d, %v; want the created state at revision %d", got, grev, err, rev)
	}
	st.Status = contracts.StatusRunning
	rev2, err := s.Jobs.Update(ctx, "j1", st, rev)
	if err != nil || rev2 <= rev {
		t.Fatalf("Update at the read revision = %d, %v", rev2, err)
	}
	if got, _, _ := s.Jobs.Get(ctx, "j1"); got.Status != contracts.StatusRunning {
		t.Fatalf("status after Update = %s", got.Status)
	}
}

func TestCompareAndSetConflicts(t *testing.T) {
	t.Parallel()
	s, _ := setup(t)
	ctx := t.Context()
	b := contracts.Batch{V: contracts.Version, ID: "b1", State: contracts.BatchPending}
	rev, err := s.Batches.Create(ctx, b.ID, b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Batches.Create(ctx, b.ID, b); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("second Create: %v, want ErrConflict", err)
	}
	b.State = contracts.BatchCommitted
	if _, err := s.Batches.Update(ctx, b.ID, b, rev); err != nil {
		t.Fatal(err)
	}
	b.State = contracts.BatchAborted
	if _, err := s.Batches.Update(ctx, b.ID, b, rev); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("Update at a stale revision: %v, want ErrConflict", err)
	}
	if got, _, _ := s.Batches.Get(ctx, b.ID); got.State != contracts.BatchCommitted {
		t.Fatalf("the losing write was stored: %s", got.State)
	}
}

// A record deleted (a marker left behind) can be created again, and reads
// as not found meanwhile.
func TestDeleteThenCreate(t *testing.T) {
	t.Parallel()
	s, _ := setup(t)
	ctx := t.Context()
	ref := contracts.StreamRef{V: contracts.Version, StreamID: "s1", JobID: "j1", Project: "p"}
	if _, err := s.Streams.Create(ctx, "s1", ref); err != nil {
		t.Fatal(err)
	}
	if err := s.Streams.Delete(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Streams.Get(ctx, "s1"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("Get after Delete: %v, want ErrNotFound", err)
	}
	if _, err := s.Streams.Create(ctx, "s1", ref); err != nil {
		t.Fatalf("Create after Delete: %v", err)
	}
	if err := s.Streams.Purge(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Streams.Get(ctx, "s1"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("Get after Purge: %v, want ErrNotFound", err)
	}
}

// Modify retries a lost compare-and-set on the fresh record, and stores
// nothing when the change declines.
func TestModifyRetriesOnConflict(t *testing.T) {
	t.Parallel()
	s, _ := setup(t)
	ctx := t.Context()
	if _, err := s.Slots.Create(ctx, "p", state.Leases{}); err != nil {
		t.Fatal(err)
	}
	calls := 0
	until := time.Now().Add(time.Minute).UTC()
	got, err := s.Slots.Modify(ctx, "p", func(l *state.Leases) (bool, error) {
		calls++
		if calls == 1 {
			// Another writer gets in between this read and its write.
			if _, err := s.Slots.Put(ctx, "p", state.Leases{"other": until}); err != nil {
				t.Fatal(err)
			}
		}
		(*l)["mine"] = until
		return true, nil
	})
	if err != nil || calls != 2 {
		t.Fatalf("Modify = %v after %d calls, want success on the second", err, calls)
	}
	if len(got) != 2 {
		t.Fatalf("Modify kept %v, want both leases", got)
	}
	stored, _, _ := s.Slots.Get(ctx, "p")
	if len(stored) != 2 {
		t.Fatalf("stored leases %v, want both", stored)
	}
	refused := errors.New("refused")
	if _, err := s.Slots.Modify(ctx, "p", func(l *state.Leases) (bool, error) {
		clear(*l)
		return false, refused
	}); !errors.Is(err, refused) {
		t.Fatalf("Modify with a refusing change: %v", err)
	}
	if stored, _, _ := s.Slots.Get(ctx, "p"); len(stored) != 2 {
		t.Fatalf("a refused change was stored: %v", stored)
	}
}

// Idempotency claims are kept per project, and a claim stored as a bare
// job id (before claims were JSON) still reads.
func TestIdempotencyClaims(t *testing.T) {
	t.Parallel()
	s, kv := setup(t)
	ctx := t.Context()
	claim := state.IdempotencyClaim{JobID: "j1", Fingerprint: "f", Actor: "k"}
	if _, err := s.Idempotency("p1").Create(ctx, "h", claim); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Idempotency("p2").Get(ctx, "h"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("another project's claim: %v, want ErrNotFound", err)
	}
	if got, _, err := s.Idempotency("p1").Get(ctx, "h"); err != nil || got != claim {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	if _, err := kv.Put(ctx, contracts.IdempotencyKeyKey("p3", "h"), []byte("old-job")); err != nil {
		t.Fatal(err)
	}
	if got, _, err := s.Idempotency("p3").Get(ctx, "h"); err != nil || got.JobID != "old-job" {
		t.Fatalf("legacy claim = %+v, %v", got, err)
	}
}

// A record that is not JSON of its kind is an error, not a zero value.
func TestUndecodableRecord(t *testing.T) {
	t.Parallel()
	s, kv := setup(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := kv.Put(ctx, contracts.BatchKey("b"), []byte("{")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Batches.Get(ctx, "b"); err == nil || errors.Is(err, state.ErrNotFound) {
		t.Fatalf("Get of garbage = %v, want a decode error", err)
	}
}

// Every job state write stores the job's summary in the index, and
// writers racing on one job leave the summary of the newest state: an
// index write never replaces a later state's summary.
func TestIndexFollowsTheNewestJobState(t *testing.T) {
	t.Parallel()
	s, _ := setup(t)
	ctx := t.Context()
	st := contracts.JobState{V: contracts.Version, JobID: "01JOB", Project: "p", Status: contracts.StatusQueued}
	if _, err := s.Jobs.Create(ctx, st.JobID, st); err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 10
	errc := make(chan error, writers)
	for w := range writers {
		go func() {
			for range each {
				_, err := s.Jobs.Modify(ctx, st.JobID, func(j *contracts.JobState) (bool, error) {
					j.Attempt++
					j.Worker = string(rune('a' + w))
					return true, nil
				})
				if err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	for range writers {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	final, rev, err := s.Jobs.Get(ctx, st.JobID)
	if err != nil {
		t.Fatal(err)
	}
	sum, _, err := s.Index.Get(ctx, state.IndexRef("p", st.JobID))
	if err != nil {
		t.Fatal(err)
	}
	if sum.StateRevision != rev || sum.Attempt != final.Attempt || final.Attempt != writers*each {
		t.Fatalf("index holds revision %d attempt %d; the job is at revision %d attempt %d", sum.StateRevision, sum.Attempt, rev, final.Attempt)
	}
	// A summary of a later state is never replaced by an earlier one.
	later := contracts.SummaryOf(final, rev+100)
	if _, err := s.Index.Put(ctx, state.IndexRef("p", st.JobID), later); err != nil {
		t.Fatal(err)
	}
	final.Status = contracts.StatusSucceeded
	if _, err := s.Jobs.Update(ctx, st.JobID, final, rev); err != nil {
		t.Fatal(err)
	}
	if sum, _, _ := s.Index.Get(ctx, state.IndexRef("p", st.JobID)); sum.StateRevision != rev+100 || sum.Status == contracts.StatusSucceeded {
		t.Fatalf("an older state replaced the index entry: %+v", sum)
	}
}

// A job's index entry is written without reading it first when its
// revision is known — a state just created, then each later state this
// store wrote — and another writer's entry in between is still never
// replaced by an older summary (the guess fails, the entry is read).
func TestIndexWritesWithoutReadingWhenTheRevisionIsKnown(t *testing.T) {
	t.Parallel()
	_, nc, js := natstest.Provisioned(t)
	ctx := t.Context()
	kv, err := js.KeyValue(ctx, contracts.BucketState)
	if err != nil {
		t.Fatal(err)
	}
	// The index writes of the first job, seen as they are sent.
	entries, err := nc.SubscribeSync("$KV." + contracts.BucketState + "." + contracts.IndexKey("p", "01GUESS"))
	if err != nil {
		t.Fatal(err)
	}
	defer entries.Unsubscribe()
	// Every direct get (a KV read) passes this subscription in the order
	// the server received it; reads of the job's state mark a point.
	var mu sync.Mutex
	var indexReads, marks int
	sub, err := nc.Subscribe("$JS.API.DIRECT.GET.>", func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		switch subject := m.Subject + " " + string(m.Data); {
		case strings.Contains(subject, "."+contracts.IndexKeyPrefix+"."):
			indexReads++
		case strings.Contains(subject, contracts.JobKey("01GUESS")):
			marks++
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	// mark returns the index reads so far, once every read before it
	// reached the subscription.
	mark := func() int {
		t.Helper()
		mu.Lock()
		want := marks + 1
		mu.Unlock()
		if _, err := kv.Get(ctx, contracts.JobKey("01GUESS")); err != nil {
			t.Fatal(err)
		}
		var n int
		wait, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := await.Poll(wait, func() bool {
			mu.Lock()
			defer mu.Unlock()
			n = indexReads
			return marks >= want
		}); err != nil {
			t.Fatalf("the mark read was not seen: %v", err)
		}
		return n
	}

	api, worker := state.New(kv), state.New(kv)
	st := contracts.JobState{V: contracts.Version, JobID: "01GUESS", Project: "p", Status: contracts.StatusQueued}
	rev, err := api.Jobs.Create(ctx, st.JobID, st)
	if err != nil {
		t.Fatal(err)
	}
	// The new job's entry is written in the background; the worker's
	// claim comes after it is stored (the job is queued after Create).
	if _, err := entries.NextMsg(10 * time.Second); err != nil {
		t.Fatalf("the new job's index entry was not written: %v", err)
	}
	bucket, err := js.Stream(ctx, "KV_"+contracts.BucketState)
	if err != nil {
		t.Fatal(err)
	}
	await.Within(t, 10*time.Second, "the new job's index entry stored", func() bool {
		subject := entries.Subject
		info, err := bucket.Info(ctx, jetstream.WithSubjectFilter(subject))
		return err == nil && info.State.Subjects[subject] == 1
	})
	created := mark()
	st.Status, st.Worker = contracts.StatusRunning, "w"
	if rev, err = worker.Jobs.Update(ctx, st.JobID, st, rev); err != nil {
		t.Fatal(err)
	}
	st.Status = contracts.StatusSucceeded
	if rev, err = worker.Jobs.Update(ctx, st.JobID, st, rev); err != nil {
		t.Fatal(err)
	}
	// The create guessed "absent"; the worker knows nothing of the job
	// before its first write (one read), and its own entry after it.
	if created != 0 {
		t.Fatalf("the create read the index %d times, want 0", created)
	}
	if n := mark() - created; n != 1 {
		t.Fatalf("index read %d times for the claim and the final state, want 1 (the claim)", n)
	}
	sum, _, err := api.Index.Get(ctx, state.IndexRef("p", st.JobID))
	if err != nil || sum.StateRevision != rev || sum.Status != contracts.StatusSucceeded {
		t.Fatalf("index entry %+v (%v), want revision %d succeeded", sum, err, rev)
	}

	// Another writer's entry in between: the worker's guess is stale.
	st2 := contracts.JobState{V: contracts.Version, JobID: "01GUESS2", Project: "p", Status: contracts.StatusQueued}
	rev2, err := api.Jobs.Create(ctx, st2.JobID, st2)
	if err != nil {
		t.Fatal(err)
	}
	st2.Status = contracts.StatusRunning
	if rev2, err = worker.Jobs.Update(ctx, st2.JobID, st2, rev2); err != nil {
		t.Fatal(err)
	}
	st2.CancelRequested = true
	if rev2, err = api.Jobs.Update(ctx, st2.JobID, st2, rev2); err != nil {
		t.Fatal(err)
	}
	st2.Status = contracts.StatusCancelled
	if rev2, err = worker.Jobs.Update(ctx, st2.JobID, st2, rev2); err != nil {
		t.Fatal(err)
	}
	sum, _, err = api.Index.Get(ctx, state.IndexRef("p", st2.JobID))
	if err != nil || sum.StateRevision != rev2 || sum.Status != contracts.StatusCancelled {
		t.Fatalf("index entry %+v (%v), want revision %d cancelled", sum, err, rev2)
	}
}
