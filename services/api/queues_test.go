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
