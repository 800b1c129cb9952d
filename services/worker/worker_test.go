package worker_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/access/natskv"
	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
	"github.com/rdev-dev/rdev/services/worker"
)

type bundle struct {
	srv    *server.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	events *history
	start  func(cfg worker.Config) (stop func())
	// build returns a worker that is not started.
	build func(cfg worker.Config) *worker.Worker
	// startConn starts a worker and returns a function that cuts its
	// NATS connection, leaving the worker running without it (a worker
	// vanished for the rest of the system); it is stopped at cleanup.
	startConn func(t *testing.T, cfg worker.Config) (cut func())
}

// history keeps every lifecycle event seen, in order.
type history struct {
	mu      sync.Mutex
	events  []contracts.Event
	changed chan struct{}
}

func (h *history) add(ev contracts.Event) {
	h.mu.Lock()
	h.events = append(h.events, ev)
	h.mu.Unlock()
	select {
	case h.changed <- struct{}{}:
	default:
	}
}

// find returns the events of job id with one of the types.
func (h *history) find(id string, types ...contracts.EventType) []contracts.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []contracts.Event
	for _, ev := range h.events {
		for _, ty := range types {
			if ev.JobID == id && ev.Type == ty {
				out = append(out, ev)
			}
		}
	}
	return out
}

// setup gives a real NATS server with the topology, a subscription to
// every lifecycle event, and a way to run workers against it.
func setup(t *testing.T) bundle {
	t.Helper()
	srv, nc, js := natstest.Provisioned(t)
	b := bundle{srv: srv, nc: nc, js: js}
	kv, err := js.KeyValue(context.Background(), contracts.BucketState)
	if err != nil {
		t.Fatal(err)
	}
	events := &history{changed: make(chan struct{}, 1)}
	sub, err := nc.Subscribe(contracts.SubjectEventsPrefix+".>", func(m *nats.Msg) {
		var ev contracts.Event
		if json.Unmarshal(m.Data, &ev) == nil {
			events.add(ev)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	projects := openProjects(t, js)
	build := func(cfg worker.Config) (*worker.Worker, *nats.Conn) {
		wnc, err := nats.Connect(srv.ClientURL(), nats.ReconnectBufSize(-1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(wnc.Close)
		if cfg.Workspaces == "" {
			cfg.Workspaces = t.TempDir()
		}
		w, err := worker.New(cfg, worker.Deps{Conn: wnc, State: kv, Projects: projects, Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		return w, wnc
	}
	b.build = func(cfg worker.Config) *worker.Worker { w, _ := build(cfg); return w }
	launch := func(cfg worker.Config) (stop, cut func()) {
		w, wnc := build(cfg)
		if err := w.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		var once sync.Once
		stop = func() {
			once.Do(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				if err := w.Shutdown(ctx); err != nil {
					t.Errorf("worker did not stop within 20s: %v", err)
				}
				wnc.Close()
			})
		}
		t.Cleanup(stop)
		return stop, wnc.Close
	}
	start := func(cfg worker.Config) func() { stop, _ := launch(cfg); return stop }
	b.startConn = func(_ *testing.T, cfg worker.Config) func() { _, cut := launch(cfg); return cut }
	b.kv, b.events, b.start = kv, events, start
	return b
}

// openProjects opens the project records as cmd/rdev does for a worker.
func openProjects(t *testing.T, js jetstream.JetStream) *natskv.Projects {
	t.Helper()
	kv, err := js.KeyValue(context.Background(), contracts.BucketAccess)
	if err != nil {
		t.Fatal(err)
	}
	projects, err := natskv.OpenProjects(context.Background(), kv)
	if err != nil {
		t.Fatal(err)
	}
	return projects
}

// enqueue does what the API does: state first, then the job.
func (b bundle) enqueue(t *testing.T, id string, argv ...string) contracts.Job {
	t.Helper()
	return b.submit(t, newJob(id, "demo", argv...))
}

// newJob is a job of project as the API builds it.
func newJob(id, project string, argv ...string) contracts.Job {
	return contracts.Job{V: 1, ID: id, Project: project, Kind: contracts.KindExec, Command: argv,
		Priority: contracts.PriorityNormal, TimeoutSeconds: 60, Attempt: 1, StreamID: "s" + id, SubmittedAt: time.Now().UTC()}
}

// submit stores job's queued state and publishes it, as the API does.
func (b bundle) submit(t *testing.T, job contracts.Job) contracts.Job {
	t.Helper()
	st, _ := json.Marshal(contracts.JobState{V: 1, JobID: job.ID, Project: job.Project, Priority: job.Priority, Status: contracts.StatusQueued,
		StreamID: job.StreamID, MaxAttempts: job.MaxAttempts, BatchID: job.BatchID})
	if _, err := b.kv.Put(context.Background(), contracts.JobKey(job.ID), st); err != nil {
		t.Fatal(err)
	}
	b.publish(t, job, job.ID)
	return job
}

func (b bundle) publish(t *testing.T, job contracts.Job, msgID string) {
	t.Helper()
	body, _ := json.Marshal(job)
	if _, err := b.js.Publish(context.Background(), contracts.SubjectJob(job.Priority, job.Project), body, jetstream.WithMsgID(msgID)); err != nil {
		t.Fatal(err)
	}
}

// next waits for the first event of job id with one of the types.
func (b bundle) next(t *testing.T, id string, types ...contracts.EventType) contracts.Event {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		if evs := b.events.find(id, types...); len(evs) > 0 {
			return evs[0]
		}
		select {
		case <-b.events.changed:
		case <-time.After(50 * time.Millisecond):
		case <-timeout:
			t.Fatalf("no %v event for %s within 15s", types, id)
		}
	}
}

// waitQueueEmpty waits until every job message is acknowledged: a worker
// acks after publishing the terminal event.
func (b bundle) waitQueueEmpty(t *testing.T) {
	t.Helper()
	await.Until(t, "an empty queue", func() bool { return natstest.Msgs(t, b.js, contracts.StreamJobs) == 0 })
}

func (b bundle) state(t *testing.T, id string) contracts.JobState {
	t.Helper()
	e, err := b.kv.Get(context.Background(), contracts.JobKey(id))
	if err != nil {
		t.Fatal(err)
	}
	var st contracts.JobState
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// A second copy of a job id (published past the duplicate window, or by
// mistake) never runs it twice, and a message that cannot be decoded is
// removed without stopping the worker.
func TestDuplicatesAndPoisonMessages(t *testing.T) {
	t.Parallel()
	b := setup(t)
	job := b.enqueue(t, "dup1", "sh", "-c", "sleep 0.3; echo once")
	b.publish(t, job, "dup1-again")
	if _, err := b.js.Publish(context.Background(), contracts.SubjectJob(contracts.PriorityHigh, "demo"), []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	b.start(worker.Config{Concurrency: 2})
	done := b.next(t, "dup1", contracts.EventSucceeded, contracts.EventFailed)
	if done.Type != contracts.EventSucceeded || done.Lines != 1 {
		t.Fatalf("terminal event %+v", done)
	}
	after := b.enqueue(t, "after1", "echo", "still working")
	b.next(t, after.ID, contracts.EventSucceeded)
	b.waitQueueEmpty(t)
	if n := len(b.events.find("dup1", contracts.EventStarted)); n != 1 {
		t.Fatalf("dup1 started %d times, want once", n)
	}
	if st := b.state(t, "dup1"); st.Status != contracts.StatusSucceeded || st.Attempt != 1 {
		t.Fatalf("state %+v: want succeeded on attempt 1", st)
	}
}

// A job already finished is not run again when its message comes back.
func TestFinishedJobIsNotRerun(t *testing.T) {
	t.Parallel()
	b := setup(t)
	job := b.enqueue(t, "fin1", "echo", "hi")
	b.start(worker.Config{})
	b.next(t, job.ID, contracts.EventSucceeded)
	b.publish(t, job, "fin1-replayed")
	probe := b.enqueue(t, "probe1", "true")
	b.next(t, probe.ID, contracts.EventSucceeded)
	b.waitQueueEmpty(t)
	if n := len(b.events.find(job.ID, contracts.EventStarted)); n != 1 {
		t.Fatalf("the finished job started %d times, want once", n)
	}
	if st := b.state(t, job.ID); st.Status != contracts.StatusSucceeded || st.Attempt != 1 {
		t.Fatalf("state %+v: the finished job ran again", st)
	}
}

// Stopping a worker lets running jobs finish within the drain timeout;
// one that outlives it is killed and handed back, and another worker runs
// it as attempt 2, its lines continuing the same stream.
func TestDrainHandsBackToAnotherWorker(t *testing.T) {
	t.Parallel()
	b := setup(t)
	stop := b.start(worker.Config{ID: "first", DrainTimeout: 300 * time.Millisecond, KillGrace: 100 * time.Millisecond})
	quick := b.enqueue(t, "quick1", "sh", "-c", "sleep 0.1; echo quick")
	long := b.enqueue(t, "long1", "sh", "-c", "echo begin; sleep 0.8; echo end")
	b.next(t, quick.ID, contracts.EventStarted)
	b.next(t, long.ID, contracts.EventStarted)
	stop()

	if st := b.state(t, long.ID); st.Status != contracts.StatusQueued {
		t.Fatalf("long job after drain: %+v, want queued again", st)
	}
	if st := b.state(t, quick.ID); st.Status != contracts.StatusSucceeded || st.Worker != "first" || st.Attempt != 1 {
		t.Fatalf("quick job after drain: %+v, want finished by the first worker", st)
	}
	b.start(worker.Config{ID: "second"})
	ev := b.next(t, long.ID, contracts.EventSucceeded, contracts.EventFailed)
	if ev.Type != contracts.EventSucceeded || ev.Attempt != 2 || ev.Worker != "second" || ev.Lines < 3 {
		t.Fatalf("long job: %+v, want succeeded on attempt 2 by the second worker after ≥ 3 lines", ev)
	}
}

// A worker whose job was reported lost meanwhile (another worker saw it
// stall past the ack wait) does not add a second ending to the stream.
func TestLateResultOfALostJobIsNotReported(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.start(worker.Config{})
	job := b.enqueue(t, "late1", "sh", "-c", "sleep 0.5; echo done")
	b.next(t, job.ID, contracts.EventStarted)
	lost, _ := json.Marshal(contracts.JobState{V: 1, JobID: job.ID, Project: "demo", Status: contracts.StatusFailed,
		Reason: contracts.ReasonWorkerLost, StreamID: job.StreamID, Attempt: 1})
	if _, err := b.kv.Put(context.Background(), contracts.JobKey(job.ID), lost); err != nil {
		t.Fatal(err)
	}
	b.waitQueueEmpty(t)
	if evs := b.events.find(job.ID, contracts.EventSucceeded, contracts.EventFailed); len(evs) != 0 {
		t.Fatalf("late result reported: %+v", evs)
	}
	if st := b.state(t, job.ID); st.Status != contracts.StatusFailed || st.Reason != contracts.ReasonWorkerLost {
		t.Fatalf("state %+v: the late result overwrote worker_lost", st)
	}
}

// A job whose final state was stored but whose terminal event was not (its
// worker died in between) gets the event published when its message comes
// back, and is not run again.
func TestFinalStateWithoutEventIsAnnounced(t *testing.T) {
	t.Parallel()
	b := setup(t)
	code := 0
	started, finished := time.Now().UTC().Add(-time.Second), time.Now().UTC()
	final, _ := json.Marshal(contracts.JobState{V: 1, JobID: "ended1", Project: "demo", Status: contracts.StatusSucceeded,
		StreamID: "sended1", Attempt: 1, Worker: "gone", ExitCode: &code, Lines: 3, StartedAt: &started, FinishedAt: &finished})
	if _, err := b.kv.Put(context.Background(), contracts.JobKey("ended1"), final); err != nil {
		t.Fatal(err)
	}
	b.publish(t, contracts.Job{V: 1, ID: "ended1", Project: "demo", Kind: contracts.KindExec, Command: []string{"false"},
		Priority: contracts.PriorityNormal, Attempt: 1, StreamID: "sended1"}, "ended1")
	b.start(worker.Config{})
	ev := b.next(t, "ended1", contracts.EventSucceeded, contracts.EventFailed)
	if ev.Type != contracts.EventSucceeded || ev.Lines != 3 || ev.ExitCode == nil || *ev.ExitCode != 0 || ev.Worker != "gone" || ev.DurationMS < 900 {
		t.Fatalf("announced %+v, want the stored ending", ev)
	}
	b.waitQueueEmpty(t)
	if n := len(b.events.find("ended1", contracts.EventStarted)); n != 0 {
		t.Fatalf("the ended job started again %d times", n)
	}
}

// started returns the first n started events seen, in order.
func (h *history) started(n int) []contracts.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []contracts.Event
	for _, ev := range h.events {
		if ev.Type == contracts.EventStarted && len(out) < n {
			out = append(out, ev)
		}
	}
	return out
}
