package natsjs_test

import (
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
func TestListedJobsExpireWithTheirState(t *testing.T) {
	t.Parallel()
	js, err := jetstream.New(natstest.Connect(t, natstest.Server(t)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	kv, err := topology.Ensure(ctx, js, topology.Config{StateTTL: 2 * time.Second, Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	st := contracts.JobState{V: contracts.Version, JobID: "01JOBEXPIRES", Project: "p", Status: contracts.StatusQueued, SubmittedAt: time.Now()}
	if _, err := state.New(kv).Jobs.Create(ctx, st.JobID, st); err != nil {
		t.Fatal(err)
	}
	x := natsjs.NewJobIndex(kv)
	if err := x.Run(ctx); err != nil {
		t.Fatal(err)
	}
	q := jobs.ListQuery{Scopes: []jobs.ListScope{{Project: "p"}}, Limit: 10}
	if got, _, err := x.List(ctx, q); err != nil || len(got) != 1 || got[0].JobID != st.JobID {
		t.Fatalf("listed %+v, %v; want the job", got, err)
	}
	await.Within(t, 10*time.Second, "the job to leave the listing", func() bool {
		got, _, err := x.List(ctx, q)
		return err == nil && len(got) == 0
	})
	if _, _, err := state.New(kv).Jobs.Get(ctx, st.JobID); err == nil {
		t.Fatal("the job left the listing before its state expired")
	}
}
