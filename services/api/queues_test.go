package api_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/state"
)

// GET /v1/queues counts each level's waiting and running jobs over every
// project, the oldest wait and the dispatches of the last minute; admins
// only.
func TestQueuesCountEachLevel(t *testing.T) {
	t.Parallel()
	b := setup(t)
	high := b.submitN(t, "demo", 2, `{"command":["true"],"priority":"high"}`)
	b.submitN(t, "other", 1, `{"command":["true"],"priority":"high"}`)
	b.submitN(t, "other", 1, `{"command":["true"]}`)
	started := time.Now()
	if _, err := state.New(b.kv).Jobs.Modify(t.Context(), high[0], func(j *contracts.JobState) (bool, error) {
		j.Status, j.StartedAt = contracts.StatusRunning, &started
		return true, nil
	}); err != nil {
		t.Fatal(err)
	}
	want := map[contracts.Priority][3]int{ // waiting, running, dispatched
		contracts.PriorityHigh: {2, 1, 1}, contracts.PriorityNormal: {1, 0, 0}, contracts.PriorityLow: {0, 0, 0},
	}
	var got contracts.QueueList
	await.Within(t, 5*time.Second, "the queues to count every job", func() bool {
		resp, rb := b.get(t, "/v1/queues")
		if resp.StatusCode != http.StatusOK || json.Unmarshal(rb, &got) != nil || len(got.Queues) != 3 {
			t.Fatalf("GET /v1/queues: %d %s", resp.StatusCode, rb)
		}
		for _, q := range got.Queues {
			if w := want[q.Priority]; [3]int{q.Waiting, q.Running, q.DispatchedLastMinute} != w {
				return false
			}
		}
		return true
	})
	if got.Queues[0].Priority != contracts.PriorityHigh || got.Queues[0].OldestAgeSeconds <= 0 || got.Queues[2].OldestAgeSeconds != 0 {
		t.Fatalf("queues %+v: want high first, an age where jobs wait and none where none do", got.Queues)
	}
	reader := bearer(b.newKey(t, `{"name":"reader","scopes":["project:demo:read"]}`).Key)
	if resp, rb := b.get(t, "/v1/queues", reader...); resp.StatusCode != http.StatusForbidden || errCode(t, rb) != "forbidden" {
		t.Fatalf("a project key on /v1/queues: %d %s, want 403 forbidden", resp.StatusCode, rb)
	}
}

// Pausing and resuming a level is stored where workers watch it, shows in
// GET /v1/queues and is audited; admins only, on a real level.
func TestPauseAndResumeAQueue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	paused := func() map[contracts.Priority]bool {
		t.Helper()
		resp, rb := b.get(t, "/v1/queues")
		var l contracts.QueueList
		if resp.StatusCode != http.StatusOK || json.Unmarshal(rb, &l) != nil {
			t.Fatalf("GET /v1/queues: %d %s", resp.StatusCode, rb)
		}
		out := map[contracts.Priority]bool{}
		for _, q := range l.Queues {
			out[q.Priority] = q.Paused
		}
		return out
	}
	resp, rb := b.post(t, "/v1/queues/low/pause", "", nil)
	var p contracts.QueuePause
	if resp.StatusCode != http.StatusOK || json.Unmarshal(rb, &p) != nil || !p.Paused || p.Priority != contracts.PriorityLow {
		t.Fatalf("pause low: %d %s", resp.StatusCode, rb)
	}
	kv, err := b.js.KeyValue(t.Context(), contracts.BucketQueues)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := kv.Get(t.Context(), contracts.PauseKey(contracts.PriorityLow)); err != nil || !json.Valid(e.Value()) {
		t.Fatalf("pause not stored in %s: %v", contracts.BucketQueues, err)
	}
	if got := paused(); !got[contracts.PriorityLow] || got[contracts.PriorityHigh] || got[contracts.PriorityNormal] {
		t.Fatalf("after pausing low: %v", got)
	}
	if resp, rb := b.post(t, "/v1/queues/low/resume", "", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("resume low: %d %s", resp.StatusCode, rb)
	}
	if got := paused(); got[contracts.PriorityLow] {
		t.Fatalf("after resuming low: %v", got)
	}
	for _, kind := range []string{"queue_paused", "queue_resumed"} {
		recs := b.waitAudit(t, "kind="+kind, 1)
		if recs[0].Actor == "" || recs[0].Detail["priority"] != "low" {
			t.Errorf("%s record %+v", kind, recs[0])
		}
	}
	if resp, rb := b.post(t, "/v1/queues/urgent/pause", "", nil); resp.StatusCode != http.StatusBadRequest || errCode(t, rb) != "invalid_priority" {
		t.Errorf("pause of no level: %d %s", resp.StatusCode, rb)
	}
	submitter := bearer(b.newKey(t, `{"name":"submitter","scopes":["project:demo:submit"]}`).Key)
	if resp, rb := b.post(t, "/v1/queues/high/pause", "", nil, submitter...); resp.StatusCode != http.StatusForbidden || errCode(t, rb) != "forbidden" {
		t.Errorf("a project key pausing: %d %s", resp.StatusCode, rb)
	}
}
