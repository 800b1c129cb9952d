package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rdev-dev/rdev/pkg/client"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// The load run: 10,000 jobs across three priorities in one batch, three
// worker processes, 200 SSE watchers. Every job reaches a final state
// (the batch's own event stream ends with 10,000 succeeded), no watcher
// misses or repeats a line, every job starts exactly once, and dispatch
// follows priority while lower levels still get their share.
func TestLoad10000Jobs(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level load test")
	}
	// Not parallel: it loads the machine (or measures bounds) and must
	// not share it with the other heavy process-level tests.
	const jobs, watched, linesEach = 10_000, 200, 20
	up := startProcess(t, upArgs(t.TempDir(), "--worker-id", "w1", "--concurrency", "8")...)
	for _, id := range []string{"w2", "w3"} {
		startProcess(t, "worker", "--nats-url", up.nats, "--nats-nkey", up.seed("worker"), "--data-dir", t.TempDir(), "--worker-id", id, "--concurrency", "8")
	}
	submit(t, up.http, "load", map[string]any{"command": []string{"true"}}) // creates the project

	nc, err := up.connectNATS()
	must(t, err, "connect")
	defer nc.Close()
	var mu sync.Mutex
	var order []string // job ids in the order they started
	// A job's attempts: each is one start. A plain subscription also gets
	// a copy of an event its worker published again after the first
	// publish's ack was lost (JetStream stores it once): a copy is not a
	// start, so copies are counted apart.
	attempts := map[string]map[int]bool{}
	copies := 0
	_, err = nc.Subscribe(contracts.SubjectEventsPrefix+".load.*."+string(contracts.EventStarted), func(m *nats.Msg) {
		var ev contracts.Event
		if json.Unmarshal(m.Data, &ev) == nil {
			mu.Lock()
			switch {
			case attempts[ev.JobID] == nil:
				attempts[ev.JobID] = map[int]bool{ev.Attempt: true}
				order = append(order, ev.JobID)
			case attempts[ev.JobID][ev.Attempt]:
				copies++
			default:
				attempts[ev.JobID][ev.Attempt] = true
			}
			mu.Unlock()
		}
	})
	must(t, err, "subscribe")
	must(t, nc.Flush(), "flush")

	prios := []contracts.Priority{contracts.PriorityHigh, contracts.PriorityNormal, contracts.PriorityLow}
	items := make([]map[string]any, jobs)
	for i := range items {
		cmd := []string{"true"}
		if i%(jobs/watched) == 0 {
			cmd = []string{"sh", "-c", fmt.Sprintf("for i in $(seq 1 %d); do echo l$i; done", linesEach)}
		}
		items[i] = map[string]any{"command": cmd, "priority": prios[i%3]}
	}
	status, rb := call(t, http.MethodPost, up.http+"/v1/projects/load/batches", items)
	if status != http.StatusAccepted {
		t.Fatalf("batch: %d %.300s", status, rb)
	}
	var reply contracts.BatchResponse
	must(t, json.Unmarshal(rb, &reply), "batch reply")
	if reply.Accepted != jobs {
		t.Fatalf("accepted %d of %d", reply.Accepted, jobs)
	}
	prioOf := map[string]contracts.Priority{}
	for i, it := range reply.Items {
		prioOf[it.JobID] = prios[i%3]
	}

	var wg sync.WaitGroup
	watchers := make([]*watcher, 0, watched)
	var wmu sync.Mutex
	// A bound for a hang, not a pace: the batch ran past 5 minutes under
	// -race on 2 cores loaded 10-fold.
	deadline := time.Now().Add(10 * time.Minute)
	for i := 0; i < jobs; i += jobs / watched {
		wg.Go(func() {
			w := follow(func() string { return up.http }, reply.Items[i].EventsURL, deadline)
			wmu.Lock()
			watchers = append(watchers, w)
			wmu.Unlock()
		})
	}

	done := batchComplete(t, up.http, reply.EventsURL, deadline)
	if done.Jobs != jobs || done.Counts[contracts.StatusSucceeded] != jobs {
		t.Fatalf("batch ended %+v, want %d succeeded", done, jobs)
	}
	wg.Wait()
	for i, w := range watchers {
		if err := w.check(); err != nil || w.complete.Lines != linesEach {
			t.Errorf("watcher %d: %v (lines %d)", i, err, w.complete.Lines)
		}
	}

	mu.Lock()
	defer mu.Unlock()
	var firstThird [3]int
	var rankSum [3]float64
	var count [3]int
	level := map[contracts.Priority]int{contracts.PriorityHigh: 0, contracts.PriorityNormal: 1, contracts.PriorityLow: 2}
	for rank, id := range order {
		p, ok := prioOf[id]
		if !ok {
			continue // the project's first job
		}
		l := level[p]
		rankSum[l] += float64(rank)
		count[l]++
		if rank < len(order)/3 {
			firstThird[l]++
		}
	}
	for id := range prioOf {
		if n := len(attempts[id]); n != 1 {
			t.Errorf("job %s started %d times (attempts %v)", id, n, attempts[id])
		}
	}
	if copies > 0 {
		t.Logf("%d started events arrived twice on the plain subscription (published again after a lost ack)", copies)
	}
	mean := [3]float64{rankSum[0] / float64(count[0]), rankSum[1] / float64(count[1]), rankSum[2] / float64(count[2])}
	t.Logf("mean start rank high %.0f normal %.0f low %.0f; first third of starts: %v", mean[0], mean[1], mean[2], firstThird)
	if !(mean[0] < mean[1] && mean[1] < mean[2]) {
		t.Errorf("dispatch did not follow priority: mean start ranks %v", mean)
	}
	// Anti-starvation: each lower level gets at least 1 of every 10
	// dispatches per worker while higher work waits; allow half of that.
	third := len(order) / 3
	for l := 1; l < 3; l++ {
		if firstThird[l] < third/20 {
			t.Errorf("level %d got %d of the first %d dispatches: starved", l, firstThird[l], third)
		}
	}
}

// batchComplete follows a batch's event stream to its complete event by
// the deadline, resuming with Last-Event-ID when the connection drops as
// a client does (the streamer may end a stream it cannot serve for
// --sse-unavailable-after, and this machine is loaded); a drop is logged,
// never an error by itself.
func batchComplete(t *testing.T, base, eventsURL string, deadline time.Time) contracts.BatchComplete {
	t.Helper()
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	lastID := ""
	for attempt := 0; ; attempt++ {
		s, err := client.New(base, validated(t)).Follow(ctx, eventsURL, client.FollowOptions{LastEventID: lastID, MaxReconnects: -1})
		must(t, err, "open batch events (attempt %d)", attempt)
		for {
			ev, err := s.Next()
			if err != nil {
				s.Close()
				if ctx.Err() != nil {
					t.Fatalf("batch events: no complete event by the deadline: %v", err)
				}
				t.Logf("batch events dropped after id %q, resuming: %v", lastID, err)
				break
			}
			lastID = s.LastEventID()
			if ev.Name == contracts.SSEComplete {
				s.Close()
				return mustJSON[contracts.BatchComplete](t, ev.Data)
			}
		}
	}
}
