package natsjs_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/state"
	"github.com/rdev-dev/rdev/pkg/topology"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
	"github.com/rdev-dev/rdev/services/api/internal/jobs"
	"github.com/rdev-dev/rdev/services/api/internal/natsjs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A job leaves the listings when its state expires: the index lives in
// the state bucket, under its TTL.
//
// The index hides an entry once it is older than the TTL, by the clock;
// the server removes expired entries on a timer of its own, a little
// later (more on a loaded machine). So the test checks that the job left
// the listing no sooner than its TTL after it was written, and that its
// state expires too, rather than that the state is gone the moment the
// listing drops it (a race it lost now and then under load).
func TestListedJobsExpireWithTheirState(t *testing.T) {
	t.Parallel()
	js, err := jetstream.New(natstest.Connect(t, natstest.Server(t)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	// Long enough for the create, the index's start and the first
	// listing on a loaded 2-core machine under -race.
	const ttl = 4 * time.Second
	kv, err := topology.Ensure(ctx, js, topology.Config{StateTTL: ttl, Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	st := contracts.JobState{V: contracts.Version, JobID: "01JOBEXPIRES", Project: "p", Status: contracts.StatusQueued, SubmittedAt: time.Now()}
	if _, err := state.New(kv).Jobs.Create(ctx, st.JobID, st); err != nil {
		t.Fatal(err)
	}
	// The store writes the index entry in the background.
	var entry jetstream.KeyValueEntry
	await.Within(t, 30*time.Second, "the job's index entry", func() bool {
		entry, err = kv.Get(ctx, contracts.IndexKey(st.Project, st.JobID))
		return err == nil
	})
	x := natsjs.NewJobIndex(kv)
	if err := x.Run(ctx); err != nil {
		t.Fatal(err)
	}
	q := jobs.ListQuery{Scopes: []jobs.ListScope{{Project: "p"}}, Limit: 10}
	if got, _, err := x.List(ctx, q); err != nil || len(got) != 1 || got[0].JobID != st.JobID {
		t.Fatalf("listed %+v, %v %s after the job was written; want the job", got, err, time.Since(entry.Created()))
	}
	// Generous bounds: the TTL plus the server's expiry timer on a loaded
	// machine.
	await.Within(t, ttl+30*time.Second, "the job to leave the listing", func() bool {
		got, _, err := x.List(ctx, q)
		return err == nil && len(got) == 0
	})
	if age := time.Since(entry.Created()); age < ttl {
		t.Fatalf("the job left the listing %s after it was written, before its TTL of %s", age, ttl)
	}
	await.Within(t, 30*time.Second, "the job's state to expire", func() bool {
		_, _, err := state.New(kv).Jobs.Get(ctx, st.JobID)
		return errors.Is(err, state.ErrNotFound)
	})
}
