package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/contracts/openapi/openapitest"
)

// Scale-out as processes: 3 api, 3 streamer and 4 worker processes
// against a 3-node JetStream cluster (R3). Clients reach the apis and the
// streamers through a round-robin in the test that skips a process it
// cannot connect to, as a load balancer does. Under load — a few thousand
// jobs across the three priorities, a dozen of them printing to watchers —
// one api, one streamer, one worker and one of the three nats-server
// processes are killed with SIGKILL; the node is started again 3 s later. Every accepted job ends
// exactly once, succeeded; every watcher sees every line of its job
// exactly once, in order, whichever streamer it resumed on; each process's
// share of the work is logged and kept within bounds.
func TestScaleOutProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level cluster test")
	}
	// Not parallel: ten processes and a cluster load a 2-core machine.
	size := scaleOutSize()
	nodes := startNATSClusterProcesses(t)
	var urls []string
	for _, n := range nodes {
		urls = append(urls, n.url())
	}
	url := strings.Join(urls, ",")
	js := provisionCluster(t, url, 3)
	args := func(cmd string, extra ...string) []string {
		return append([]string{cmd, "--nats-url", url, "--replicas", "3"}, extra...)
	}
	var (
		apis, streamers, workers []*node
		workerDirs               []string
	)
	for range 3 {
		apis = append(apis, startProcess(t, args("api", "--http-addr", "127.0.0.1:0")...))
		streamers = append(streamers, startProcess(t, args("streamer", "--http-addr", "127.0.0.1:0")...))
	}
	for i := range 4 {
		workerDirs = append(workerDirs, t.TempDir())
		workers = append(workers, startProcess(t, args("worker", "--data-dir", workerDirs[i], "--worker-id", fmt.Sprintf("w%d", i),
			"--concurrency", "8", "--ack-wait", "10s", "--retry-base", "200ms")...))
	}
	apiRR, streamRR := newRoundRobin(apis), newRoundRobin(streamers)
	began := time.Now()
	const project = "scaleout"
	if status, rb := call(t, http.MethodPost, apis[0].http+"/v1/projects", map[string]string{"id": project}); status != http.StatusCreated {
		t.Fatalf("create project: %d %s", status, rb)
	}

	// The printing jobs first, watched through the streamers' round-robin;
	// they print until the gate opens after the kills.
	var printing []contracts.SubmitResponse
	for i := range size.printing {
		rb := apiRR.post(t, "/v1/projects/"+project+"/commands", map[string]any{"command": slowGatedCommand,
			"priority": "high", "max_attempts": 3, "idempotency_key": fmt.Sprintf("print-%d", i)})
		if rb == nil {
			t.FailNow()
		}
		printing = append(printing, mustJSON[contracts.SubmitResponse](t, rb))
	}
	wait := watchManyUntil(t, streamRR.next, printing, size.watchers, time.Now().Add(4*time.Minute))
	t.Logf("%d printing jobs submitted after %s", len(printing), time.Since(began).Round(time.Millisecond))

	// The no-op jobs, in batches of 50 across the priorities sent by 2
	// clients while the processes die: a batch whose api dies is sent
	// again to the next one with the same idempotency keys, as a client
	// does, so no job is queued twice.
	var (
		mu       sync.Mutex
		accepted []contracts.SubmitResponse
		wg       sync.WaitGroup
		next     atomic.Int64
		sent     = make(chan struct{}, size.jobs/50)
	)
	priorities := []string{"high", "normal", "low"}
	for range 2 {
		wg.Go(func() {
			for !t.Failed() {
				first := int(next.Add(50)) - 50
				if first >= size.jobs {
					return
				}
				items := make([]map[string]any, 0, 50)
				for i := first; i < min(first+50, size.jobs); i++ {
					items = append(items, map[string]any{"command": []string{"true"}, "priority": priorities[i%3],
						"max_attempts": 3, "idempotency_key": fmt.Sprintf("noop-%d", i)})
				}
				ids, _, ok := sendBatch(t, apiRR.post, "/v1/projects/"+project+"/batches", items)
				if !ok {
					return
				}
				mu.Lock()
				for _, id := range ids {
					accepted = append(accepted, contracts.SubmitResponse{JobID: id})
				}
				mu.Unlock()
				sent <- struct{}{}
			}
		})
	}
	// Wait for the printing jobs to run, from their states: opening streams
	// to check would add to the load.
	kv := stateBucket(t, js)
	await.Within(t, 2*time.Minute, "the printing jobs running", func() bool { // generous: a loaded 2-core machine under -race
		for _, j := range printing {
			if st := jobState(t, kv, j.JobID); st.Status != contracts.StatusRunning {
				return false
			}
		}
		return true
	})
	t.Logf("every printing job running after %s", time.Since(began).Round(time.Millisecond))
	for range size.jobs / 50 / 5 { // a fifth of the batches accepted: the kills happen under load
		select {
		case <-sent:
		case <-time.After(2 * time.Minute): // generous: a loaded 2-core machine under -race
			t.Fatal("the batches were not accepted within 2 minutes")
		}
	}
	victim := 2
	apis[0].kill()
	streamers[0].kill()
	workers[0].kill()
	nodes[victim].kill()
	killedAt := time.Now()
	t.Logf("killed api 0, streamer 0, worker w0 and NATS node n%d (SIGKILL) after %s, %d of %d jobs sent",
		victim, time.Since(began).Round(time.Millisecond), min(next.Load(), int64(size.jobs)), size.jobs)
	time.Sleep(3 * time.Second) // the node stays away while the load goes on
	nodes[victim].start()
	for _, dir := range workerDirs {
		touch(t, dir, project, "gate")
	}

	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("%d jobs accepted in %s", len(accepted), time.Since(began).Round(time.Millisecond))
	ws := wait()
	t.Logf("every watcher done %s after the kills", time.Since(killedAt).Round(time.Millisecond))
	resumed := 0
	for i, w := range ws {
		if err := w.check(); err != nil {
			t.Errorf("watcher %d: %v", i, err)
			continue
		}
		if w.complete.Status != contracts.StatusSucceeded || w.perAttempt[w.complete.Attempt] < 5 {
			t.Errorf("watcher %d: complete %+v with lines per attempt %v, want succeeded with its tail in the last attempt", i, w.complete, w.perAttempt)
		}
		if len(w.bases) > 1 && w.bases[0] == streamers[0].http {
			resumed++
		}
	}
	if resumed == 0 {
		t.Error("no watcher of the killed streamer resumed on another")
	}

	// Every accepted job ends exactly once, succeeded.
	all := slices.Concat(accepted, printing)
	ends := terminalEvents(t, js, len(all))
	byWorker := map[string]int{}
	retried := 0
	lines := map[string]uint64{}
	for _, w := range ws {
		lines[w.complete.JobID] = uint64(len(w.seqs))
	}
	for _, j := range all {
		if ends[j.JobID] != 1 {
			t.Errorf("job %s has %d terminal events, want 1", j.JobID, ends[j.JobID])
		}
		st := jobState(t, kv, j.JobID)
		if n, watched := lines[j.JobID]; watched && st.Lines != n {
			t.Errorf("job %s stored %d lines, its watchers read %d", j.JobID, st.Lines, n)
		}
		if st.Status != contracts.StatusSucceeded {
			t.Errorf("job %s: %+v", j.JobID, st)
		}
		byWorker[st.Worker]++
		if st.Attempt > 1 {
			retried++
		}
	}
	if len(ends) != len(all) {
		t.Errorf("%d jobs ended, want %d", len(ends), len(all))
	}

	// Each process's share.
	requests := apiRR.counts()
	t.Logf("requests accepted per api (submits and batches of 50): %v", requests)
	t.Logf("SSE connections per streamer: %v (%d watchers resumed after the kill)", streamRR.counts(), resumed)
	t.Logf("jobs per worker (last attempt): %v; %d jobs ran more than once", byWorker, retried)
	if requests[0] == 0 {
		t.Error("the killed api took no request before it died")
	}
	for i, n := range requests[1:] {
		if n < (size.printing+size.jobs/50)/4 {
			t.Errorf("api %d took %d of the requests: the round-robin did not spread them", i+1, n)
		}
	}
	for i, w := range workers[1:] {
		id := fmt.Sprintf("w%d", i+1)
		if n := byWorker[id]; float64(n) < 0.15*float64(len(all)) || float64(n) > 0.5*float64(len(all)) {
			t.Errorf("worker %s (pid %d) ran %d of %d jobs, want between 15%% and 50%%", id, w.pid, n, len(all))
		}
	}
	if byWorker["w0"] == 0 {
		t.Error("the killed worker ran no job before it died")
	}
}

// slowGatedCommand prints a line every 100 ms until the gate file appears
// in its workspace, then five more.
var slowGatedCommand = []string{"sh", "-c", "i=0; while [ ! -e gate ]; do i=$((i+1)); echo line$i; sleep 0.1; done; " +
	"for j in 1 2 3 4 5; do echo tail$j; done"}

// scaleOutJobs is the size of the scale-out run. The default fits a
// loaded 2-core machine running the race detector within about two
// minutes; RDEV_SCALEOUT_JOBS sets the no-op jobs.
type scaleOutJobs struct{ jobs, printing, watchers int }

func scaleOutSize() scaleOutJobs {
	s := scaleOutJobs{jobs: 2000, printing: 12, watchers: 2}
	if n, err := strconv.Atoi(os.Getenv("RDEV_SCALEOUT_JOBS")); err == nil && n > 0 {
		s.jobs = n
	}
	return s
}

// roundRobin spreads requests over processes in turn and passes over one
// it cannot connect to, as a simple load balancer does; it counts what
// each process took.
type roundRobin struct {
	nodes []*node
	i     atomic.Int64
	mu    sync.Mutex
	took  map[string]int
}

func newRoundRobin(nodes []*node) *roundRobin {
	return &roundRobin{nodes: nodes, took: map[string]int{}}
}

// next returns the next base URL and counts it (a watcher's connection).
func (r *roundRobin) next() string {
	b := r.nodes[int(r.i.Add(1))%len(r.nodes)].http
	r.mu.Lock()
	r.took[b]++
	r.mu.Unlock()
	return b
}

// counts returns what each node took, in the order of nodes.
func (r *roundRobin) counts() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]int, len(r.nodes))
	for i, n := range r.nodes {
		out[i] = r.took[n.http]
	}
	return out
}

// post sends body to path on the next api, and to the one after when the
// connection fails (a killed api) or NATS is changing leaders (503); the
// body carries idempotency keys, so what reached the dead api is not
// queued twice. It returns the 202 reply's body, or nil after reporting
// the failure (it may run outside the test's goroutine).
func (r *roundRobin) post(t *testing.T, path string, body any) []byte {
	t.Helper()
	b, _ := json.Marshal(body)
	hc := &http.Client{Transport: openapitest.Transport(t, nil), Timeout: 60 * time.Second}
	var lastErr error
	for try := 0; try < 5*len(r.nodes); try++ {
		base := r.nodes[int(r.i.Add(1))%len(r.nodes)].http
		req, err := http.NewRequest(http.MethodPost, base+path, bytes.NewReader(b))
		must(t, err, "request")
		req.Header.Set("Authorization", "Bearer "+adminKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			lastErr = err
			continue
		}
		rb, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable {
			lastErr = fmt.Errorf("%d %s", resp.StatusCode, rb)
			time.Sleep(200 * time.Millisecond) // its Retry-After, shortened
			continue
		}
		if resp.StatusCode != http.StatusAccepted {
			t.Errorf("POST %s%s: %d %s", base, path, resp.StatusCode, rb)
			return nil
		}
		r.mu.Lock()
		r.took[base]++
		r.mu.Unlock()
		return rb
	}
	t.Errorf("POST %s: no api took it: %v", path, lastErr)
	return nil
}

// sendBatch posts items as one batch and sends the items it refused for
// a NATS outage (code unavailable) again, with the same keys, until every item is
// queued, as a client does. It returns the job ids of all items and the
// reply to each post, the first one's first.
func sendBatch(t *testing.T, post func(t *testing.T, path string, body any) []byte, path string, items []map[string]any) ([]string, []contracts.BatchResponse, bool) {
	var replies []contracts.BatchResponse
	ids := make([]string, len(items))
	pending := make([]int, len(items)) // indexes into items
	for i := range pending {
		pending[i] = i
	}
	for try := 0; len(pending) > 0; try++ {
		if try == 20 {
			t.Errorf("batch items %v still refused after 20 tries", pending)
			return nil, nil, false
		}
		body := make([]map[string]any, len(pending))
		for i, p := range pending {
			body[i] = items[p]
		}
		rb := post(t, path, body)
		var r contracts.BatchResponse
		if err := json.Unmarshal(rb, &r); err != nil {
			t.Errorf("batch reply %.300s: %v", rb, err)
			return nil, nil, false
		}
		replies = append(replies, r)
		var again []int
		for _, it := range r.Items {
			switch {
			case it.Error == nil:
				ids[pending[it.Index]] = it.JobID
			case it.Error.Code == "unavailable":
				again = append(again, pending[it.Index])
			default:
				t.Errorf("batch item refused: %+v", *it.Error)
				return nil, nil, false
			}
		}
		if len(again) > 0 {
			t.Logf("%d of %d batch items refused as unavailable; sent again", len(again), len(pending))
		}
		pending = again
	}
	return ids, replies, true
}

func stateBucket(t *testing.T, js jetstream.JetStream) jetstream.KeyValue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, contracts.BucketState)
	must(t, err, "state bucket")
	return kv
}

// jobState reads a job's state from the state bucket.
func jobState(t *testing.T, kv jetstream.KeyValue, id string) contracts.JobState {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e, err := kv.Get(ctx, contracts.JobKey(id))
	must(t, err, "state of %s", id)
	return mustJSON[contracts.JobState](t, e.Value())
}
