package worker_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/worker"
)

// pause stores a level's pause as POST /v1/queues/{priority}/pause does.
func (b bundle) pause(t *testing.T, p contracts.Priority, paused bool) {
	t.Helper()
	kv, err := b.js.KeyValue(context.Background(), contracts.BucketQueues)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(contracts.QueuePause{V: contracts.Version, Priority: p, Paused: paused, Time: time.Now()})
	if _, err := kv.Put(context.Background(), contracts.PauseKey(p), body); err != nil {
		t.Fatal(err)
	}
}

// A paused level is not dispatched while the others are: its jobs wait,
// across a restart of the worker, and run once it is resumed.
func TestPausedLevelWaitsAcrossRestartsUntilResumed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.pause(t, contracts.PriorityHigh, true)
	held := newJob("held1", "demo", "true")
	held.Priority = contracts.PriorityHigh
	b.submit(t, held)
	stop := b.start(worker.Config{})

	// A normal job published after it runs; the high one waits.
	probe := b.enqueue(t, "probe1", "true")
	b.next(t, probe.ID, contracts.EventSucceeded)
	if evs := b.events.find(held.ID, contracts.EventStarted); len(evs) != 0 {
		t.Fatalf("a job of the paused level started: %+v", evs)
	}

	// The pause is stored: a worker started afresh keeps it.
	stop()
	b.start(worker.Config{})
	probe2 := b.enqueue(t, "probe2", "true")
	b.next(t, probe2.ID, contracts.EventSucceeded)
	if evs := b.events.find(held.ID, contracts.EventStarted); len(evs) != 0 {
		t.Fatalf("a job of the paused level started after a restart: %+v", evs)
	}
	if st := b.state(t, held.ID); st.Status != contracts.StatusQueued {
		t.Fatalf("held job %+v, want queued", st)
	}

	b.pause(t, contracts.PriorityHigh, false)
	b.next(t, held.ID, contracts.EventSucceeded)
	b.waitQueueEmpty(t)
}
