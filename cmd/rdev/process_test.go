package main

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rdev-dev/rdev/cmd/rdev/internal/ssetest"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// Stop the whole `rdev up` process while jobs are queued and one is
// streaming, start it again on the same data dir: the streaming job is
// handed back and runs again as attempt 2 (its stream continues where it
// stopped), the queued jobs run, and a reconnecting SSE client resumes
// without gap or duplicate.
func TestRestartLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	t.Parallel()
	dataDir := t.TempDir()
	args := upArgs(dataDir, "--concurrency", "1", "--drain-timeout", "300ms")
	first := startProcess(t, args...)

	long := submit(t, first.http, "restart", map[string]any{
		"command": []string{"sh", "-c", "for i in $(seq 1 20); do echo tick$i; sleep 0.1; done"},
	})
	var queued []submitReply
	for i := range 5 {
		queued = append(queued, submit(t, first.http, "restart", map[string]any{"command": []string{"echo", fmt.Sprint("queued", i)}}))
	}
	s := ssetest.Open(t, first.http+long.EventsURL, "")
	var seqs []uint64
	for len(seqs) < 5 {
		ev, err := s.Next(10 * time.Second)
		must(t, err, "read before restart")
		if ev.Name == contracts.SSEOutput {
			seqs = append(seqs, mustJSON[contracts.OutputLine](t, ev.Data).Seq)
		}
	}
	first.stop() // SIGTERM: drain 300ms, then the running job is handed back

	second := startProcess(t, args...)
	rest, complete := readToComplete(t, ssetest.Open(t, second.http+long.EventsURL, s.LastID))
	attempts := map[int]bool{}
	for _, l := range rest {
		attempts[l.Attempt] = true
	}
	seqs = append(seqs, seqsOf(rest)...)
	// Lines printed before the stop stay; attempt 2 prints all 20 again.
	assertSeqs(t, seqs, int(complete.Lines))
	if complete.Status != contracts.StatusSucceeded || complete.Attempt != 2 || !attempts[2] || complete.Lines < 20 {
		t.Fatalf("complete %+v, attempts seen %v: want attempt 2 succeeded with at least 20 lines", complete, attempts)
	}
	for _, q := range queued {
		if st := waitFinal(t, second.http, q.JobID, 20*time.Second); st.Status != contracts.StatusSucceeded || st.Attempt != 1 {
			t.Errorf("queued job %s: %+v", q.JobID, st)
		}
	}
}

// kill -9 of the whole process while a job runs: after the restart the
// job's lost worker is detected (ack wait) and it fails with worker_lost,
// visibly to its watchers; queued jobs run.
func TestKillDashNineReportsWorkerLost(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	t.Parallel()
	dataDir := t.TempDir()
	args := upArgs(dataDir, "--concurrency", "1")
	first := startProcess(t, args...)
	long := submit(t, first.http, "crash", map[string]any{"command": []string{"sh", "-c", "echo started; sleep 30"}})
	queued := submit(t, first.http, "crash", map[string]any{"command": []string{"echo", "after"}})
	s := ssetest.Open(t, first.http+long.EventsURL, "")
	for {
		ev, err := s.Next(10 * time.Second)
		must(t, err, "read before kill")
		if ev.Name == contracts.SSEOutput {
			break
		}
	}
	first.kill()

	second := startProcess(t, args...)
	s2 := ssetest.Open(t, second.http+long.EventsURL, s.LastID)
	for {
		ev, err := s2.Next(20 * time.Second)
		must(t, err, "read after restart")
		if ev.Name == contracts.SSEOutput {
			t.Fatalf("unexpected line after kill: %s", ev.Data)
		}
		if ev.Name == contracts.SSEComplete {
			c := mustJSON[contracts.Event](t, ev.Data)
			if c.Status != contracts.StatusFailed || c.Reason != contracts.ReasonWorkerLost || c.Lines != 1 {
				t.Fatalf("complete %+v, want failed/worker_lost after 1 line", c)
			}
			break
		}
	}
	if st := waitFinal(t, second.http, queued.JobID, 20*time.Second); st.Status != contracts.StatusSucceeded {
		t.Fatalf("queued job after the crash: %+v", st)
	}
}

// A second worker process started beside `rdev up` shares the work: 200
// jobs each run exactly once, and both workers run some.
func TestTwoWorkerProcessesShareTheWork(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	t.Parallel()
	up := startProcess(t, upArgs(t.TempDir(), "--worker-id", "w-up", "--concurrency", "2")...)
	startProcess(t, "worker", "--nats-url", up.nats, "--data-dir", t.TempDir(), "--worker-id", "w-extra", "--concurrency", "2")

	nc, err := nats.Connect(up.nats)
	must(t, err, "connect")
	defer nc.Close()
	var mu sync.Mutex
	starts := map[string]int{}
	byWorker := map[string]int{}
	finished := make(chan struct{}, 256)
	_, err = nc.Subscribe(contracts.SubjectEventsPrefix+".twoworkers.>", func(m *nats.Msg) {
		ev := mustJSON[contracts.Event](t, string(m.Data))
		mu.Lock()
		defer mu.Unlock()
		switch {
		case ev.Type == contracts.EventStarted:
			starts[ev.JobID]++
			byWorker[ev.Worker]++
		case ev.Type.Terminal():
			finished <- struct{}{}
		}
	})
	must(t, err, "subscribe")
	must(t, nc.Flush(), "flush")

	ids := make([]string, 200)
	for i := range ids {
		ids[i] = submit(t, up.http, "twoworkers", map[string]any{"command": []string{"sh", "-c", "sleep 0.01; echo job" + fmt.Sprint(i)}}).JobID
	}
	for range ids {
		select {
		case <-finished:
		case <-time.After(60 * time.Second):
			t.Fatal("jobs did not all finish within 60s")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, id := range ids {
		if starts[id] != 1 {
			t.Errorf("job %s started %d times, want exactly once", id, starts[id])
		}
	}
	if byWorker["w-up"] == 0 || byWorker["w-extra"] == 0 || byWorker["w-up"]+byWorker["w-extra"] != 200 {
		t.Fatalf("work split %v: both workers must take some of the 200", byWorker)
	}
	for _, id := range ids[:10] {
		if st := getJob(t, up.http, id); st.Status != contracts.StatusSucceeded {
			t.Errorf("job %s: %+v", id, st)
		}
	}
}
