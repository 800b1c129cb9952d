package worker_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/worker"
)

// Jobs of an atomic batch wait while the batch is pending, run once it
// commits, and end cancelled when it is aborted — or when its API died
// and the batch stayed pending past contracts.AtomicBatchWindow, which the
// worker then aborts itself so a late commit cannot split the batch.
func TestAtomicBatchHold(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	putBatch := func(rec contracts.Batch) {
		body, _ := json.Marshal(rec)
		if _, err := b.kv.Put(ctx, contracts.BatchKey(rec.ID), body); err != nil {
			t.Fatal(err)
		}
	}
	batchJob := func(id, batch string) contracts.Job {
		j := newJob(id, "demo", "echo", "ran")
		j.BatchID, j.BatchAtomic = batch, true
		return b.submit(t, j)
	}
	now := time.Now().UTC()
	putBatch(contracts.Batch{V: 1, ID: "held", Project: "demo", Atomic: true, State: contracts.BatchPending, SubmittedAt: now})
	putBatch(contracts.Batch{V: 1, ID: "aborted", Project: "demo", Atomic: true, State: contracts.BatchAborted, SubmittedAt: now})
	putBatch(contracts.Batch{V: 1, ID: "stale", Project: "demo", Atomic: true, State: contracts.BatchPending,
		SubmittedAt: now.Add(-contracts.AtomicBatchWindow - time.Second)})
	held := batchJob("bh1", "held")
	aborted := batchJob("ba1", "aborted")
	stale := batchJob("bs1", "stale")
	b.start(worker.Config{})

	if ev := b.next(t, aborted.ID, contracts.EventCancelled, contracts.EventStarted); ev.Type != contracts.EventCancelled {
		t.Fatalf("job of an aborted batch: %+v", ev)
	}
	if ev := b.next(t, stale.ID, contracts.EventCancelled, contracts.EventStarted); ev.Type != contracts.EventCancelled {
		t.Fatalf("job of a batch pending past the window: %+v", ev)
	}
	e, err := b.kv.Get(ctx, contracts.BatchKey("stale"))
	if err != nil {
		t.Fatal(err)
	}
	var rec contracts.Batch
	if err := json.Unmarshal(e.Value(), &rec); err != nil || rec.State != contracts.BatchAborted {
		t.Fatalf("stale batch record %+v (%v): want aborted by the worker", rec, err)
	}
	// The held job has not started; a probe job behind it runs.
	probe := b.enqueue(t, "bprobe", "true")
	b.next(t, probe.ID, contracts.EventSucceeded)
	if got := b.types(held.ID); len(got) != 0 {
		t.Fatalf("job of a pending batch: events %v, want none", got)
	}
	putBatch(contracts.Batch{V: 1, ID: "held", Project: "demo", Atomic: true, State: contracts.BatchCommitted, SubmittedAt: now})
	if ev := b.next(t, held.ID, contracts.EventSucceeded, contracts.EventFailed, contracts.EventCancelled); ev.Type != contracts.EventSucceeded {
		t.Fatalf("job after its batch committed: %+v", ev)
	}
}
