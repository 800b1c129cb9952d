package main

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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
	var queued []contracts.SubmitResponse
	for i := range 5 {
		queued = append(queued, submit(t, first.http, "restart", map[string]any{"command": []string{"echo", fmt.Sprint("queued", i)}}))
	}
	s := openStream(t, first.http, long.EventsURL, "")
	var seqs []uint64
	for len(seqs) < 5 {
		ev, err := s.Next()
		must(t, err, "read before restart")
		if ev.Name == contracts.SSEOutput {
			seqs = append(seqs, mustJSON[contracts.OutputLine](t, ev.Data).Seq)
		}
	}
	first.stop() // SIGTERM: drain 300ms, then the running job is handed back

	second := startProcess(t, args...)
	rest, complete := readToComplete(t, openStream(t, second.http, long.EventsURL, s.LastEventID()))
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
	s := openStream(t, first.http, long.EventsURL, "")
	for {
		ev, err := s.Next()
		must(t, err, "read before kill")
		if ev.Name == contracts.SSEOutput {
			break
		}
	}
	first.kill()

	second := startProcess(t, args...)
	s2 := openStream(t, second.http, long.EventsURL, s.LastEventID())
	for {
		ev, err := s2.Next()
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
	// Its one attempt was spent on a failure that was not its own.
	dls := deadLetters(t, second, "crash")
	if len(dls) != 1 || dls[0].ID != long.JobID || dls[0].Reason != contracts.ReasonWorkerLost || dls[0].Attempts != 1 {
		t.Fatalf("dead letters %+v, want one worker_lost for %s", dls, long.JobID)
	}
}

// deadLetters reads every dead letter of project from the NATS at url.
func deadLetters(t *testing.T, n *node, project string) []contracts.DeadLetter {
	t.Helper()
	nc, err := n.connectNATS()
	must(t, err, "connect")
	defer nc.Close()
	js, err := jetstream.New(nc)
	must(t, err, "jetstream")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, contracts.StreamDead, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{contracts.SubjectDead(project)}})
	must(t, err, "dead letter consumer")
	info, err := c.Info(ctx)
	must(t, err, "dead letter consumer info")
	var out []contracts.DeadLetter
	for range info.NumPending {
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		must(t, err, "read dead letter")
		out = append(out, mustJSON[contracts.DeadLetter](t, string(m.Data())))
	}
	return out
}

// kill -9 of a worker process while it runs a job with max_attempts 2:
// after the ack wait another worker process reports the attempt
// worker_lost, announces the retry, and runs attempt 2 to success, its
// lines continuing the stream; no dead letter.
func TestKilledWorkerJobIsRetriedOnAnother(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	t.Parallel()
	up := startProcess(t, upArgs(t.TempDir(), "--without", "worker")...)
	workerArgs := func(id string) []string {
		return []string{"worker", "--nats-url", up.nats, "--nats-nkey", up.seed("worker"), "--data-dir", t.TempDir(), "--worker-id", id,
			"--ack-wait", "2s", "--retry-base", "100ms", "--kill-grace", "200ms"}
	}
	doomed := startProcess(t, workerArgs("w-doomed")...)

	nc, err := up.connectNATS()
	must(t, err, "connect")
	defer nc.Close()
	events := make(chan contracts.Event, 64)
	_, err = nc.Subscribe(contracts.SubjectEventsPrefix+".retried.>", func(m *nats.Msg) {
		events <- mustJSON[contracts.Event](t, string(m.Data))
	})
	must(t, err, "subscribe")
	must(t, nc.Flush(), "flush")
	next := func(want contracts.EventType) contracts.Event {
		t.Helper()
		for {
			select {
			case ev := <-events:
				if ev.Type == want {
					return ev
				}
				if ev.Type.Terminal() {
					t.Fatalf("unexpected end %+v while waiting for %s", ev, want)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("no %s event within 30s", want)
			}
		}
	}

	job := submit(t, up.http, "retried", map[string]any{
		"command": []string{"sh", "-c", "echo attempt; sleep 1; echo done"}, "max_attempts": 2,
	})
	if ev := next(contracts.EventStarted); ev.Worker != "w-doomed" || ev.Attempt != 1 {
		t.Fatalf("started %+v, want attempt 1 on w-doomed", ev)
	}
	doomed.kill()
	startProcess(t, workerArgs("w-survivor")...)

	r := next(contracts.EventRetrying)
	if r.Reason != contracts.ReasonWorkerLost || r.Attempt != 1 || r.Worker != "w-survivor" {
		t.Fatalf("retrying %+v, want worker_lost for attempt 1 reported by w-survivor", r)
	}
	if ev := next(contracts.EventStarted); ev.Attempt != 2 || ev.Worker != "w-survivor" {
		t.Fatalf("started %+v, want attempt 2 on w-survivor", ev)
	}
	end := next(contracts.EventSucceeded)
	if end.Attempt != 2 || end.JobID != job.JobID || end.Lines < 2 {
		t.Fatalf("end %+v, want attempt 2 succeeded with its lines after attempt 1's", end)
	}
	if dls := deadLetters(t, up, "retried"); len(dls) != 0 {
		t.Fatalf("dead letters %+v for a job that succeeded", dls)
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
	startProcess(t, "worker", "--nats-url", up.nats, "--nats-nkey", up.seed("worker"), "--data-dir", t.TempDir(), "--worker-id", "w-extra", "--concurrency", "2")

	nc, err := up.connectNATS()
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
