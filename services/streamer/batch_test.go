package streamer_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// A batch's event stream carries the lifecycle events of its jobs only,
// resumes after Last-Event-ID, and ends with a complete event once every
// job has ended — also when the last one ends while the client watches.
func TestBatchEvents(t *testing.T) {
	t.Parallel()
	f := setup(t, options{})
	ctx := context.Background()
	j1, j2, stranger := f.newJob(t), f.newJob(t), f.newJob(t)
	b := contracts.Batch{V: contracts.Version, ID: uniqueID(t, "b"), Project: "demo", JobIDs: []string{j1.jobID, j2.jobID},
		State: contracts.BatchCommitted, SubmittedAt: time.Now().UTC()}
	body, _ := json.Marshal(b)
	if _, err := f.kv.Put(ctx, contracts.BatchKey(b.ID), body); err != nil {
		t.Fatal(err)
	}
	j1.event(t, contracts.EventQueued, 0)
	j2.event(t, contracts.EventQueued, 0)
	stranger.event(t, contracts.EventQueued, 0)
	resumeAt := j1.event(t, contracts.EventStarted, 0)
	j1.event(t, contracts.EventSucceeded, 0)

	c := f.connect(t, "", dialOpts{batchID: b.ID})
	if ev, ok := c.next(t); !ok || ev.Retry == "" {
		t.Fatalf("want the retry block first, got %+v", ev)
	}
	var got []string
	for len(got) < 4 {
		ev, ok := c.next(t)
		if !ok {
			t.Fatalf("stream ended after %v", got)
		}
		if ev.Name != contracts.SSEStatus {
			continue
		}
		var e contracts.Event
		if err := json.Unmarshal([]byte(ev.Data), &e); err != nil {
			t.Fatal(err)
		}
		if e.JobID == stranger.jobID {
			t.Fatal("an event of a job outside the batch was sent")
		}
		got = append(got, e.JobID+" "+string(e.Type))
	}
	want := []string{j1.jobID + " queued", j2.jobID + " queued", j1.jobID + " started", j1.jobID + " succeeded"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("events %v, want %v", got, want)
	}
	// The last job ends while the client watches.
	j2.event(t, contracts.EventFailed, 0)
	rest := c.rest(t)
	if len(rest) != 2 || rest[0].Name != contracts.SSEStatus || rest[1].Name != contracts.SSEComplete {
		t.Fatalf("after the last job ended: %+v", rest)
	}
	var done contracts.BatchComplete
	if err := json.Unmarshal([]byte(rest[1].Data), &done); err != nil || done.Jobs != 2 ||
		done.Counts[contracts.StatusSucceeded] != 1 || done.Counts[contracts.StatusFailed] != 1 {
		t.Fatalf("complete %s (%v)", rest[1].Data, err)
	}

	// Resume after j1's started event: its end and j2's events, then complete.
	r := f.connect(t, "", dialOpts{batchID: b.ID, lastEventID: strconv.FormatUint(resumeAt, 10)})
	if ev, ok := r.next(t); !ok || ev.Retry == "" {
		t.Fatalf("want the retry block first, got %+v", ev)
	}
	evs := r.rest(t)
	if len(evs) != 3 || evs[2].Name != contracts.SSEComplete {
		t.Fatalf("resumed: %+v", evs)
	}
	for _, ev := range evs[:2] {
		if id, _ := strconv.ParseUint(ev.ID, 10, 64); id <= resumeAt {
			t.Fatalf("resumed stream repeated event %s", ev.ID)
		}
	}

	// A stream token does not open the batch, nor the batch token a stream.
	streamTok := f.signer.Sign(access.StreamResource(j1.streamID), time.Now().Add(time.Hour))
	checkError(t, f.get(t, "", dialOpts{batchID: b.ID, token: streamTok}), http.StatusUnauthorized, "invalid_token")
	batchTok := f.signer.Sign(access.BatchResource(b.ID), time.Now().Add(time.Hour))
	checkError(t, f.get(t, j1.streamID, dialOpts{token: batchTok}), http.StatusUnauthorized, "invalid_token")
	checkError(t, f.get(t, "", dialOpts{batchID: "nope"}), http.StatusNotFound, "batch_not_found")
}
