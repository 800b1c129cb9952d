package streamer_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/streamer"
)

// A batch's complete event has an id of its own: resuming with it
// answers 204, which stops a browser's EventSource, while resuming with
// the last status event's id still delivers complete.
//
// The 204 is possible only while nothing was sent: a heartbeat that falls
// due before the batch's events are read opens the response (a resume
// then gets complete again, and nothing else). The harness's 100 ms
// heartbeat did so on a loaded CI machine, where opening the events'
// consumer took longer; a heartbeat far above that keeps the test about
// the ids (in production it is 15 s).
func TestBatchCompleteHasItsOwnID(t *testing.T) {
	t.Parallel()
	f := setup(t, options{cfg: streamer.Config{Heartbeat: 30 * time.Second}})
	j := f.newJob(t)
	b := contracts.Batch{V: contracts.Version, ID: uniqueID(t, "b"), Project: "demo", JobIDs: []string{j.jobID},
		State: contracts.BatchCommitted, SubmittedAt: time.Now().UTC()}
	body, _ := json.Marshal(b)
	if _, err := f.kv.Put(context.Background(), contracts.BatchKey(b.ID), body); err != nil {
		t.Fatal(err)
	}
	j.event(t, contracts.EventQueued, 0)
	last := j.event(t, contracts.EventSucceeded, 0)

	evs := f.connect(t, "", dialOpts{batchID: b.ID}).rest(t)
	end := evs[len(evs)-1]
	if end.Name != contracts.SSEComplete || end.ID == strconv.FormatUint(last, 10) {
		t.Fatalf("complete %+v shares the id of the last status event %d", end, last)
	}
	if resp := f.get(t, "", dialOpts{batchID: b.ID, lastEventID: end.ID}); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("resume after complete: %d, want 204", resp.StatusCode)
	}
	again := f.connect(t, "", dialOpts{batchID: b.ID, lastEventID: strconv.FormatUint(last, 10)}).rest(t)
	if len(again) == 0 || again[len(again)-1].Name != contracts.SSEComplete || again[len(again)-1].ID != end.ID {
		t.Fatalf("resume after the last status event: %+v", again)
	}
}
