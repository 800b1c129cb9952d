package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/access/natskv"
	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/worker"
	"github.com/rdev-dev/rdev/services/worker/internal/executor"
)

// scripted is an executor whose n-th call (from 1) runs step(n).
type scripted struct {
	calls atomic.Int32
	step  func(ctx context.Context, n int, stdout io.Writer) (int, error)
}

func (s *scripted) Exec(ctx context.Context, _ executor.Spec, stdout, _ io.Writer) (int, error) {
	return s.step(ctx, int(s.calls.Add(1)), stdout)
}

// cancel does what the API does for a running job: CancelRequested on
// its state by compare-and-set, then the plain NATS request. With
// withMessage false only the state says so.
func (b bundle) cancel(t *testing.T, id string, withMessage bool) {
	t.Helper()
	ctx := context.Background()
	for {
		e, err := b.kv.Get(ctx, contracts.JobKey(id))
		if err != nil {
			t.Fatal(err)
		}
		var st contracts.JobState
		if err := json.Unmarshal(e.Value(), &st); err != nil {
			t.Fatal(err)
		}
		st.CancelRequested = true
		body, _ := json.Marshal(st)
		if _, err := b.kv.Update(ctx, contracts.JobKey(id), body, e.Revision()); err == nil {
			break
		}
	}
	if withMessage {
		if err := b.nc.Publish(contracts.SubjectCancel(id), nil); err != nil {
			t.Fatal(err)
		}
	}
}

// deadLetters returns every dead letter stored for project.
func (b bundle) deadLetters(t *testing.T, project string) []contracts.DeadLetter {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := b.js.OrderedConsumer(ctx, contracts.StreamDead, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{contracts.SubjectDead(project)}})
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []contracts.DeadLetter
	for range info.NumPending {
		m, err := c.Next(jetstream.FetchMaxWait(2 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var dl contracts.DeadLetter
		if err := json.Unmarshal(m.Data(), &dl); err != nil {
			t.Fatal(err)
		}
		if id := m.Headers().Get(contracts.HeaderMsgID); id != dl.ID {
			t.Errorf("dead letter %s has message id %q", dl.ID, id)
		}
		out = append(out, dl)
	}
	return out
}

// types lists the lifecycle events of job id, in order.
func (b bundle) types(id string) []string {
	b.events.mu.Lock()
	defer b.events.mu.Unlock()
	var out []string
	for _, ev := range b.events.events {
		if ev.JobID == id {
			out = append(out, fmt.Sprintf("%s/%d", ev.Type, ev.Attempt))
		}
	}
	return out
}

// alive reports whether pid is a live process (a zombie is dead).
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(stat), ") ")
	return !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}

// readPIDs waits for a file of pids written by a job.
func readPIDs(t *testing.T, path string, n int) []int {
	t.Helper()
	var f []string
	await.Until(t, fmt.Sprintf("%d pids in %s", n, path), func() bool {
		b, _ := os.ReadFile(path)
		f = strings.Fields(string(b))
		return len(f) >= n
	})
	var pids []int
	for _, s := range f[:n] {
		p, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, p)
	}
	return pids
}

// A running job that is cancelled stops within a second: its process and
// the process it started are gone, every line it printed is stored
// before the terminal cancelled event, and it is not retried although it
// has attempts left.
func TestCancelKillsTheRunningJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ws := t.TempDir()
	b.start(worker.Config{Workspaces: ws, KillGrace: 200 * time.Millisecond})
	job := newJob("cancel1", "demo", "sh", "-c", "echo one; echo two; sleep 60 & echo $$ $! > pids; wait")
	job.MaxAttempts = 3
	b.submit(t, job)
	pids := readPIDs(t, filepath.Join(ws, "demo", "pids"), 2)
	b.next(t, job.ID, contracts.EventStarted)

	asked := time.Now()
	b.cancel(t, job.ID, true)
	ev := b.next(t, job.ID, contracts.EventCancelled, contracts.EventFailed, contracts.EventSucceeded, contracts.EventRetrying)
	if took := time.Since(asked); took > time.Second {
		t.Errorf("cancel took %s, want under 1s", took)
	}
	if ev.Type != contracts.EventCancelled || ev.Status != contracts.StatusCancelled || ev.Reason != contracts.ReasonCancelled ||
		ev.Lines != 2 || ev.Attempt != 1 {
		t.Fatalf("terminal event %+v, want cancelled after 2 lines on attempt 1", ev)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("process %d of the cancelled job is still running", pid)
		}
	}
	b.waitQueueEmpty(t)
	if st := b.state(t, job.ID); st.Status != contracts.StatusCancelled || st.Reason != contracts.ReasonCancelled || st.Lines != 2 {
		t.Fatalf("state %+v, want cancelled with 2 lines", st)
	}
	if got := b.types(job.ID); len(got) != 2 {
		t.Fatalf("events %v, want started/1 then cancelled/1 only", got)
	}
}

// With two workers, a cancel request reaches whichever runs the job
// within a second and leaves the other running job alone; a cancel
// recorded only in the state (the message lost) is found by the heartbeat.
func TestCancelReachesTheRightWorker(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := worker.Config{Concurrency: 2, KillGrace: 100 * time.Millisecond, AckWait: 900 * time.Millisecond}
	cfg.ID = "w1"
	b.start(cfg)
	cfg.ID = "w2"
	b.start(cfg)
	first := b.enqueue(t, "cx1", "sh", "-c", "echo up; sleep 60")
	second := b.enqueue(t, "cx2", "sh", "-c", "echo up; sleep 60")
	one, two := b.next(t, first.ID, contracts.EventStarted), b.next(t, second.ID, contracts.EventStarted)

	asked := time.Now()
	b.cancel(t, second.ID, true)
	ev := b.next(t, second.ID, contracts.EventCancelled, contracts.EventFailed)
	if took := time.Since(asked); took > time.Second {
		t.Errorf("cancel on %s took %s, want under 1s", two.Worker, took)
	}
	if ev.Type != contracts.EventCancelled || ev.Worker != two.Worker {
		t.Fatalf("terminal event %+v, want cancelled by %s", ev, two.Worker)
	}
	if evs := b.events.find(first.ID, contracts.EventCancelled, contracts.EventFailed, contracts.EventSucceeded); len(evs) != 0 {
		t.Fatalf("the other job ended: %+v", evs)
	}

	// Without the message: the heartbeat (every 300ms) reads the state.
	b.cancel(t, first.ID, false)
	if ev := b.next(t, first.ID, contracts.EventCancelled, contracts.EventFailed); ev.Type != contracts.EventCancelled || ev.Worker != one.Worker {
		t.Fatalf("terminal event %+v, want cancelled by %s", ev, one.Worker)
	}
	b.waitQueueEmpty(t)
}

// A job the API cancelled while it was queued (final state and terminal
// event written by the API) is dropped by the worker that receives it:
// it does not start and gets no second terminal event.
func TestJobCancelledWhileQueuedIsDropped(t *testing.T) {
	t.Parallel()
	b := setup(t)
	job := newJob("cq1", "demo", "sh", "-c", "echo must not run")
	b.submit(t, job)
	done := time.Now().UTC()
	st, _ := json.Marshal(contracts.JobState{V: 1, JobID: job.ID, Project: "demo", Status: contracts.StatusCancelled,
		Reason: contracts.ReasonCancelled, StreamID: job.StreamID, FinishedAt: &done})
	if _, err := b.kv.Put(context.Background(), contracts.JobKey(job.ID), st); err != nil {
		t.Fatal(err)
	}
	ev, _ := json.Marshal(contracts.Event{V: 1, Type: contracts.EventCancelled, Status: contracts.StatusCancelled,
		JobID: job.ID, StreamID: job.StreamID, Project: "demo", Reason: contracts.ReasonCancelled, Time: done})
	if _, err := b.js.Publish(context.Background(), contracts.SubjectEvent("demo", job.StreamID, contracts.EventCancelled), ev,
		jetstream.WithMsgID("api-cancel-"+job.ID)); err != nil {
		t.Fatal(err)
	}
	b.start(worker.Config{})
	b.waitQueueEmpty(t)
	probe := b.enqueue(t, "cq-probe", "true")
	b.next(t, probe.ID, contracts.EventSucceeded)
	if got := b.types(job.ID); len(got) != 1 || got[0] != "cancelled/0" {
		t.Fatalf("events %v, want only the API's cancelled event", got)
	}
}

// A failure that is not the command's own is retried while attempts
// remain: a watcher sees retrying for attempt 1, then attempt 2 begin with
// its started event, its lines continuing the stream; no dead letter.
func TestExecutorFailureIsRetried(t *testing.T) {
	t.Parallel()
	b := setup(t)
	exec := &scripted{step: func(_ context.Context, n int, out io.Writer) (int, error) {
		fmt.Fprintf(out, "attempt %d\n", n)
		if n == 1 {
			return -1, fmt.Errorf("pod vanished: %w", executor.ErrLost)
		}
		return 0, nil
	}}
	b.start(worker.WithExecutor(worker.Config{RetryBase: 50 * time.Millisecond}, exec))
	job := newJob("retry1", "demo", "anything")
	job.MaxAttempts = 2
	b.submit(t, job)
	ev := b.next(t, job.ID, contracts.EventSucceeded, contracts.EventFailed)
	if ev.Type != contracts.EventSucceeded || ev.Attempt != 2 || ev.Lines != 2 {
		t.Fatalf("terminal event %+v, want succeeded on attempt 2 after 2 lines", ev)
	}
	want := []string{"started/1", "retrying/1", "started/2", "succeeded/2"}
	if got := b.types(job.ID); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	r := b.events.find(job.ID, contracts.EventRetrying)[0]
	if r.Reason != contracts.ReasonPodLost || r.Status != contracts.StatusQueued || r.RetryInSeconds < 1 || r.Lines != 1 {
		t.Fatalf("retrying event %+v, want pod_lost, queued, a delay, 1 line", r)
	}
	b.waitQueueEmpty(t)
	if dl := b.deadLetters(t, "demo"); len(dl) != 0 {
		t.Fatalf("dead letters %+v for a job that succeeded", dl)
	}
}

// Attempts spent on executor errors: the job fails with the last reason,
// and one dead letter (published before the terminal event) says so.
func TestSpentAttemptsBecomeOneDeadLetter(t *testing.T) {
	t.Parallel()
	b := setup(t)
	exec := &scripted{step: func(context.Context, int, io.Writer) (int, error) {
		return -1, errors.New("exec stream broke")
	}}
	b.start(worker.WithExecutor(worker.Config{RetryBase: 20 * time.Millisecond}, exec))
	job := newJob("spent1", "demo", "anything")
	job.MaxAttempts = 3
	b.submit(t, job)
	ev := b.next(t, job.ID, contracts.EventSucceeded, contracts.EventFailed)
	if ev.Type != contracts.EventFailed || ev.Reason != contracts.ReasonExecutorError || ev.Attempt != 3 {
		t.Fatalf("terminal event %+v, want failed/executor_error on attempt 3", ev)
	}
	b.waitQueueEmpty(t)
	dls := b.deadLetters(t, "demo")
	if len(dls) != 1 {
		t.Fatalf("%d dead letters, want exactly 1: %+v", len(dls), dls)
	}
	if dl := dls[0]; dl.ID != job.ID || dl.Job == nil || dl.Job.ID != job.ID || dl.Reason != contracts.ReasonExecutorError ||
		dl.Attempts != 3 || dl.ExitCode != nil {
		t.Fatalf("dead letter %+v", dl)
	}
	if n := exec.calls.Load(); n != 3 {
		t.Fatalf("executor called %d times, want 3", n)
	}
}

// retry_on_exit_codes: a listed exit code is retried until attempts are
// spent (then a dead letter); another code fails at once, and a plain
// non-zero exit without the list is just failed (no dead letter). A
// timeout is never retried.
func TestExitCodesAndTimeouts(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.start(worker.Config{Concurrency: 4, RetryBase: 20 * time.Millisecond, KillGrace: 100 * time.Millisecond})
	listed := newJob("code3", "demo", "sh", "-c", "echo try; exit 3")
	listed.MaxAttempts, listed.RetryOnExitCodes = 3, []int{3, 75}
	other := newJob("code4", "demo", "sh", "-c", "exit 4")
	other.MaxAttempts, other.RetryOnExitCodes = 3, []int{3}
	plain := newJob("code5", "demo", "sh", "-c", "exit 5")
	plain.MaxAttempts = 3
	slow := newJob("slow1", "demo", "sleep", "30")
	slow.MaxAttempts, slow.TimeoutSeconds = 3, 1
	for _, j := range []contracts.Job{listed, other, plain, slow} {
		b.submit(t, j)
	}
	ev := b.next(t, listed.ID, contracts.EventFailed, contracts.EventSucceeded)
	if ev.Attempt != 3 || ev.ExitCode == nil || *ev.ExitCode != 3 || ev.Lines != 3 {
		t.Fatalf("listed code: %+v, want failed with 3 on attempt 3 after 3 lines", ev)
	}
	for _, j := range []contracts.Job{other, plain} {
		if ev := b.next(t, j.ID, contracts.EventFailed, contracts.EventSucceeded); ev.Attempt != 1 || ev.Reason != contracts.ReasonExitCode {
			t.Fatalf("%s: %+v, want failed on attempt 1", j.ID, ev)
		}
	}
	if ev := b.next(t, slow.ID, contracts.EventTimedOut, contracts.EventFailed); ev.Type != contracts.EventTimedOut || ev.Attempt != 1 {
		t.Fatalf("slow: %+v, want timed_out on attempt 1", ev)
	}
	b.waitQueueEmpty(t)
	for _, j := range []contracts.Job{other, plain, slow} {
		if r := b.events.find(j.ID, contracts.EventRetrying); len(r) != 0 {
			t.Errorf("%s retried: %+v", j.ID, r)
		}
	}
	dls := b.deadLetters(t, "demo")
	if len(dls) != 1 || dls[0].ID != listed.ID || dls[0].Reason != contracts.ReasonExitCode || dls[0].Attempts != 3 ||
		dls[0].ExitCode == nil || *dls[0].ExitCode != 3 {
		t.Fatalf("dead letters %+v, want one for %s (exit 3, 3 attempts)", dls, listed.ID)
	}
}

// The backoff grows: with the jitter pinned at its top, the wait before
// attempt n+1 is at least base·2^(n-1), each longer than the one before.
func TestBackoffGrowsBetweenAttempts(t *testing.T) {
	t.Parallel()
	b := setup(t)
	exec := &scripted{step: func(_ context.Context, n int, _ io.Writer) (int, error) {
		if n < 4 {
			return -1, fmt.Errorf("pod not ready: %w", executor.ErrNotReady)
		}
		return 0, nil
	}}
	base := 100 * time.Millisecond
	b.start(worker.WithJitter(worker.WithExecutor(worker.Config{RetryBase: base, RetryCap: time.Minute}, exec),
		func() float64 { return 0.999 }))
	job := newJob("backoff1", "demo", "anything")
	job.MaxAttempts = 4
	b.submit(t, job)
	if ev := b.next(t, job.ID, contracts.EventSucceeded, contracts.EventFailed); ev.Type != contracts.EventSucceeded || ev.Attempt != 4 {
		t.Fatalf("terminal event %+v, want succeeded on attempt 4", ev)
	}
	retrying := b.events.find(job.ID, contracts.EventRetrying)
	started := b.events.find(job.ID, contracts.EventStarted)
	if len(retrying) != 3 || len(started) != 4 {
		t.Fatalf("%d retrying and %d started events, want 3 and 4", len(retrying), len(started))
	}
	var prev time.Duration
	for i, r := range retrying {
		gap := started[i+1].Time.Sub(r.Time)
		bound := time.Duration(float64(base<<i) * 0.999)
		if r.Reason != contracts.ReasonPodNotReady || gap < bound || gap <= prev {
			t.Errorf("attempt %d: next started %s after retrying (reason %s), want ≥ %s and longer than %s",
				r.Attempt, gap, r.Reason, bound, prev)
		}
		prev = gap
	}
}

// A worker that vanishes while it runs a job (its connection cut, so its
// heartbeats stop): the job is redelivered after the ack wait, reported
// worker_lost, and retried by the other worker as attempt 2.
func TestLostWorkerIsRetriedElsewhere(t *testing.T) {
	t.Parallel()
	b := setup(t)
	exec := &scripted{step: func(ctx context.Context, n int, out io.Writer) (int, error) {
		fmt.Fprintf(out, "attempt %d\n", n)
		if n == 1 {
			<-ctx.Done() // the vanished worker's run, stopped at cleanup
			return -1, context.Cause(ctx)
		}
		return 0, nil
	}}
	cfg := worker.WithExecutor(worker.Config{AckWait: 600 * time.Millisecond, DrainTimeout: 100 * time.Millisecond,
		RetryBase: 20 * time.Millisecond}, exec)
	cfg.ID = "doomed"
	cut := b.startConn(t, cfg)
	job := newJob("lost1", "demo", "anything")
	job.MaxAttempts = 2
	b.submit(t, job)
	b.next(t, job.ID, contracts.EventStarted)
	// Cut once attempt 1's line is stored, so the stream has it for sure.
	out, err := b.js.Stream(context.Background(), contracts.StreamOutput)
	if err != nil {
		t.Fatal(err)
	}
	await.Until(t, "a line of attempt 1", func() bool {
		_, err := out.GetLastMsgForSubject(context.Background(), contracts.SubjectOutput(job.Project, job.StreamID))
		return err == nil
	})
	cut()
	cfg.ID = "survivor"
	b.start(cfg)
	cutAt := time.Now()
	ev := b.next(t, job.ID, contracts.EventSucceeded, contracts.EventFailed)
	t.Logf("retried and ended %s after the cut", time.Since(cutAt))
	if ev.Type != contracts.EventSucceeded || ev.Attempt != 2 || ev.Worker != "survivor" || ev.Lines != 2 {
		t.Fatalf("terminal event %+v, want succeeded on attempt 2 by survivor after 2 lines", ev)
	}
	r := b.events.find(job.ID, contracts.EventRetrying)
	if len(r) != 1 || r[0].Reason != contracts.ReasonWorkerLost || r[0].Attempt != 1 {
		t.Fatalf("retrying events %+v, want one worker_lost for attempt 1", r)
	}
}

// A message that is not a job goes to the dead letters (under its
// subject's project, or "_"), raw, and leaves the queue.
func TestUndecodableMessageBecomesDeadLetter(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	if _, err := b.js.Publish(ctx, contracts.SubjectJob(contracts.PriorityHigh, "poison"), []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.js.Publish(ctx, contracts.SubjectJobsPrefix+".low.Not_A_Project", []byte(`{"v":1}`)); err != nil {
		t.Fatal(err)
	}
	b.start(worker.Config{})
	b.waitQueueEmpty(t)
	dl := b.deadLetters(t, "poison")
	if len(dl) != 1 || string(dl[0].Raw) != "{not json" || dl[0].Reason != contracts.ReasonUndecodable || dl[0].Job != nil || dl[0].ID == "" {
		t.Fatalf("dead letters of poison: %+v", dl)
	}
	if dl := b.deadLetters(t, "_"); len(dl) != 1 || string(dl[0].Raw) != `{"v":1}` || dl[0].Reason != contracts.ReasonUndecodable {
		t.Fatalf("dead letters of _: %+v", dl)
	}
}

// runningCount follows started and terminal events of a project and
// records the most jobs running at once.
type runningCount struct {
	mu        sync.Mutex
	now, most int
}

func (b bundle) countRunning(t *testing.T, project string) *runningCount {
	t.Helper()
	rc := &runningCount{}
	sub, err := b.nc.Subscribe(contracts.SubjectEventsPrefix+"."+project+".>", func(m *nats.Msg) {
		var ev contracts.Event
		if json.Unmarshal(m.Data, &ev) != nil {
			return
		}
		rc.mu.Lock()
		defer rc.mu.Unlock()
		switch {
		case ev.Type == contracts.EventStarted:
			rc.now++
			rc.most = max(rc.most, rc.now)
		case ev.Type.Terminal() || ev.Type == contracts.EventRetrying:
			rc.now--
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return rc
}

func (rc *runningCount) max() int { rc.mu.Lock(); defer rc.mu.Unlock(); return rc.most }

// createProject stores a project with a concurrency bound in the access
// bucket, as the API does.
func (b bundle) createProject(t *testing.T, id string, maxJobs int) {
	t.Helper()
	if err := b.accessStore(t).CreateProject(context.Background(), access.Project{ID: id, MaxConcurrentJobs: maxJobs}); err != nil {
		t.Fatal(err)
	}
}

// accessStore opens the access bucket as the API does.
func (b bundle) accessStore(t *testing.T) *natskv.Store {
	t.Helper()
	ctx := context.Background()
	kv, err := b.js.KeyValue(ctx, contracts.BucketAccess)
	if err != nil {
		t.Fatal(err)
	}
	store, err := natskv.Open(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	return store
}

// max_concurrent_jobs 2 holds across two workers with room for 6: never
// more than 2 of the project's jobs run at once, and all complete.
func TestProjectConcurrencyAcrossWorkers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.createProject(t, "lim", 2)
	rc := b.countRunning(t, "lim")
	for _, id := range []string{"wa", "wb"} {
		b.start(worker.Config{ID: id, Concurrency: 3, SlotDelay: 50 * time.Millisecond})
	}
	var ids []string
	for i := range 8 {
		ids = append(ids, b.submit(t, newJob(fmt.Sprint("lim", i), "lim", "sh", "-c", "sleep 0.2; echo done")).ID)
	}
	for _, id := range ids {
		if ev := b.next(t, id, contracts.EventSucceeded, contracts.EventFailed); ev.Type != contracts.EventSucceeded || ev.Attempt != 1 {
			t.Fatalf("job %s: %+v, want succeeded on attempt 1", id, ev)
		}
	}
	b.waitQueueEmpty(t)
	if m := rc.max(); m != 2 {
		t.Fatalf("at most %d jobs of the project ran at once, want exactly 2", m)
	}
	for _, id := range ids {
		if n := len(b.events.find(id, contracts.EventStarted)); n != 1 {
			t.Errorf("job %s started %d times", id, n)
		}
	}
}

// A project at its limit does not hold up another project's jobs queued
// behind its own at the same priority.
func TestBlockedProjectDoesNotBlockOthers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.createProject(t, "busy", 1)
	rc := b.countRunning(t, "busy")
	b.start(worker.Config{Concurrency: 4, SlotDelay: 100 * time.Millisecond, KillGrace: 100 * time.Millisecond})
	var busy []string
	for i := range 4 {
		busy = append(busy, b.submit(t, newJob(fmt.Sprint("busy", i), "busy", "sleep", "3")).ID)
	}
	b.next(t, busy[0], contracts.EventStarted)
	free := b.submit(t, newJob("free1", "free", "echo", "hi"))
	b.next(t, free.ID, contracts.EventSucceeded)
	// Ordering, not a stopwatch: it finished while the first busy job (3 s)
	// still ran, so it did not wait behind the project's queue.
	if ended := b.events.find(busy[0], contracts.EventSucceeded, contracts.EventFailed); len(ended) != 0 {
		t.Fatalf("the other project's job finished only after %s ended: blocked behind it", busy[0])
	}
	if m := rc.max(); m != 1 {
		t.Fatalf("%d busy jobs ran at once, want 1", m)
	}
}
