package worker_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
	"github.com/rdev-dev/rdev/services/worker"
)

// A high-priority job is claimed while the worker's shared connection,
// and the one its state bucket uses, pass nothing: its pull and its claim
// go through Deps.High. Once the shared connection moves again, the job
// ends and nothing is lost.
func TestHighJobIsClaimedWhileTheSharedConnectionStalls(t *testing.T) {
	t.Parallel()
	b := setup(t)
	shared := natstest.NewStallable(b.srv)
	wnc := shared.Connect(t, nats.ReconnectBufSize(-1))
	wjs, err := jetstream.New(wnc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := wjs.KeyValue(context.Background(), contracts.BucketState)
	if err != nil {
		t.Fatal(err)
	}
	high := natstest.Connect(t, b.srv)
	w, err := worker.New(worker.Config{Workspaces: t.TempDir(), Concurrency: 2},
		worker.Deps{Conn: wnc, State: kv, High: high, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := w.Shutdown(ctx); err != nil {
			t.Errorf("worker did not stop: %v", err)
		}
	})
	// A first job, through every path, so that the stall below starts
	// with the worker settled in.
	warm := newJob("warm", "demo", "true")
	warm.Priority = contracts.PriorityHigh
	submitWithRevision(t, b, warm)
	b.next(t, "warm", contracts.EventSucceeded)

	shared.Stall()
	job := newJob("urgent", "demo", "true")
	job.Priority = contracts.PriorityHigh
	submitWithRevision(t, b, job)
	// The stall ends within the server's 10 s write deadline, so the
	// stalled connection is not cut as a slow consumer.
	deadline := time.Now().Add(5 * time.Second)
	for st := b.state(t, "urgent"); st.Status != contracts.StatusRunning && st.Status != contracts.StatusSucceeded; st = b.state(t, "urgent") {
		if time.Now().After(deadline) {
			shared.Resume()
			t.Fatalf("high job %s while the shared connection stalled; want it claimed through the high connection", st.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
	shared.Resume()
	b.next(t, "urgent", contracts.EventSucceeded)
	b.waitQueueEmpty(t)
	if st := b.state(t, "urgent"); st.Status != contracts.StatusSucceeded {
		t.Fatalf("state %s after the stall, want succeeded", st.Status)
	}
	await.Until(t, "the shared connection still up", wnc.IsConnected)
}

// submitWithRevision queues job as the API does: its state first, then
// the job carrying that state's revision, so that a first delivery is
// claimed without reading the state.
func submitWithRevision(t *testing.T, b bundle, job contracts.Job) {
	t.Helper()
	ctx := context.Background()
	st, _ := json.Marshal(contracts.QueuedState(job))
	rev, err := b.kv.Create(ctx, contracts.JobKey(job.ID), st)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(job)
	msg := nats.NewMsg(contracts.SubjectJob(job.Priority, job.Project))
	msg.Data = body
	msg.Header.Set(contracts.HeaderStateRevision, strconv.FormatUint(rev, 10))
	if _, err := b.js.PublishMsg(ctx, msg, jetstream.WithMsgID(job.ID)); err != nil {
		t.Fatal(err)
	}
}
