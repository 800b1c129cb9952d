package runner_test

// These are unit tests of the runner's decisions (claim, retry with
// backoff, dead letter, hand back, hold off, cancel): each outcome is a
// choice among the Delivery port's settlements and the writes to the
// other ports, so in-memory fakes of those ports are the right tool here
// and let every branch be reached without timing tricks. The same paths
// against real NATS JetStream and real executors are covered by the
// worker's tests (services/worker) and the adapters' own suites.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/state"
	"github.com/rdev-dev/rdev/services/worker/internal/executor"
	"github.com/rdev-dev/rdev/services/worker/internal/runner"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	retryBase   = 2 * time.Second
	jitter      = 0.5
	unavailable = 5 * time.Second
	slotDelay   = 500 * time.Millisecond
	heartbeat   = 10 * time.Second
	// patience is how long silent holders are asked again; short, so
	// that the lost-worker tests take a moment, not a heartbeat.
	patience = 600 * time.Millisecond
)

// fixture is a runner over in-memory ports.
type fixture struct {
	r       *runner.Runner
	states  *fakeStates
	events  *fakeEvents
	dead    *fakeDead
	holders *fakeHolders
	// exec runs a command; it succeeds by default.
	exec func(ctx context.Context, spec executor.Spec, stdout, stderr io.Writer) (int, error)
}

func setup(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{states: &fakeStates{recs: map[string]stateRec{}}, events: &fakeEvents{}, dead: &fakeDead{}, holders: &fakeHolders{}}
	f.exec = func(context.Context, executor.Spec, io.Writer, io.Writer) (int, error) { return 0, nil }
	f.r = runner.New(runner.Config{
		WorkerID: "w1", Heartbeat: heartbeat, UnavailableDelay: unavailable, RetryBase: retryBase, SlotDelay: slotDelay,
		Jitter: func() float64 { return jitter }, PersistBudget: time.Second, HolderPatience: patience,
	}, runner.Ports{
		Exec: execFunc(func(ctx context.Context, spec executor.Spec, stdout, stderr io.Writer) (int, error) {
			return f.exec(ctx, spec, stdout, stderr)
		}),
		States: f.states, Events: f.events, Output: fakeOutput{}, Dead: f.dead, Holders: f.holders,
	}, slog.New(slog.NewTextHandler(t.Output(), nil)))
	return f
}

// queue stores job's queued state as the API does and returns its
// first delivery, carrying the state's revision.
func (f *fixture) queue(t *testing.T, job contracts.Job) *fakeDelivery {
	t.Helper()
	rev, err := f.states.Update(t.Context(), job.ID, contracts.QueuedState(job), 0)
	if err != nil {
		t.Fatal(err)
	}
	return newDelivery(t, job, runner.DeliveryInfo{Sequence: 1, NumDelivered: 1, StateRevision: rev})
}

// store stores st as its job's state, written before the test.
func (f *fixture) store(t *testing.T, st contracts.JobState) {
	t.Helper()
	if _, err := f.states.Update(t.Context(), st.JobID, st, 0); err != nil {
		t.Fatal(err)
	}
}

// failing is an executor run that fails with err.
func failing(err error) func(context.Context, executor.Spec, io.Writer, io.Writer) (int, error) {
	return func(context.Context, executor.Spec, io.Writer, io.Writer) (int, error) {
		return -1, fmt.Errorf("%w: for the test", err)
	}
}

func testJob(id string) contracts.Job {
	return contracts.Job{
		V: contracts.Version, ID: id, Project: "proj", Kind: contracts.KindExec, Command: []string{"true"},
		Priority: contracts.PriorityNormal, TimeoutSeconds: 60, Attempt: 1, StreamID: "s-" + id,
		SubmittedAt: time.Now().UTC(),
	}
}

// A first delivery is claimed with one compare-and-set at the revision
// the message carries (no read), run, and acknowledged once ended.
func TestFirstAttemptClaimedAndAcked(t *testing.T) {
	t.Parallel()
	f := setup(t)
	d := f.queue(t, testJob("j1"))
	f.r.Handle(t.Context(), d)

	d.settled(t, "ack")
	if n := f.states.gets(); n != 0 {
		t.Errorf("claim read the state %d times; the revision in the message should spare the read", n)
	}
	st := f.states.get(t, "j1")
	if st.Status != contracts.StatusSucceeded || st.Attempt != 1 || st.Worker != "w1" {
		t.Errorf("state = %s attempt %d worker %q, want succeeded, 1, w1", st.Status, st.Attempt, st.Worker)
	}
	f.events.want(t, contracts.EventStarted, contracts.EventSucceeded)
}

// An executor that cannot run the command hands the job back after
// UnavailableDelay, queued, with the attempt not spent.
func TestUnavailableExecutorHandsBackWithoutSpendingAnAttempt(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.exec = failing(executor.ErrUnavailable)
	d := f.queue(t, testJob("j1"))
	f.r.Handle(t.Context(), d)

	d.settled(t, fmt.Sprint("nak ", unavailable))
	st := f.states.get(t, "j1")
	if st.Status != contracts.StatusQueued || st.Attempt != 0 || st.Worker != "" {
		t.Errorf("state = %s attempt %d worker %q, want queued, 0, none", st.Status, st.Attempt, st.Worker)
	}
	f.events.want(t, contracts.EventStarted)
}

// A failure that retries cover, with attempts left, requeues the job:
// the state says when the next attempt may start, a retrying event says
// so, and the message comes back after the backoff.
func TestRetryableFailureNaksWithBackoff(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.exec = failing(executor.ErrLost)
	job := testJob("j1")
	job.MaxAttempts = 3
	d := f.queue(t, job)
	f.r.Handle(t.Context(), d)

	delay := time.Duration(jitter * float64(retryBase)) // the first attempt's bound is the base
	d.settled(t, fmt.Sprint("nak ", delay))
	st := f.states.get(t, "j1")
	if st.Status != contracts.StatusQueued || st.Attempt != 1 || st.Reason != contracts.ReasonPodLost || st.NextAttemptAt == nil {
		t.Errorf("state = %s attempt %d reason %q next %v, want queued, 1, pod_lost, a time", st.Status, st.Attempt, st.Reason, st.NextAttemptAt)
	}
	f.events.want(t, contracts.EventStarted, contracts.EventRetrying)
	if n := f.dead.count(); n != 0 {
		t.Errorf("%d dead letters for a job with attempts left", n)
	}
}

// The last attempt's retryable failure gives the job up: final state,
// then the dead letter, then the failed event, then the ack.
func TestAttemptsExhaustedDeadLetterAndAck(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.exec = failing(executor.ErrLost)
	job := testJob("j1")
	job.MaxAttempts = 2
	st := contracts.QueuedState(job)
	st.Attempt = 1 // the first attempt failed and was requeued
	f.store(t, st)
	d := newDelivery(t, job, runner.DeliveryInfo{Sequence: 1, NumDelivered: 2})
	f.r.Handle(t.Context(), d)

	d.settled(t, "ack")
	if got := f.states.get(t, "j1"); got.Status != contracts.StatusFailed || got.Attempt != 2 {
		t.Errorf("state = %s attempt %d, want failed, 2", got.Status, got.Attempt)
	}
	dl := f.dead.only(t)
	if dl.ID != "j1" || dl.Attempts != 2 || dl.Reason != contracts.ReasonPodLost || dl.Job == nil {
		t.Errorf("dead letter = %+v, want j1 after 2 attempts, pod_lost, with its job", dl)
	}
	f.events.want(t, contracts.EventStarted, contracts.EventFailed)
}

// A message that is not a job goes to the dead letters under its
// subject's project, named by its stream sequence, and is terminated.
func TestUndecodableMessageDeadLetteredAndTerminated(t *testing.T) {
	t.Parallel()
	f := setup(t)
	d := &fakeDelivery{data: []byte("{not json"), subject: contracts.SubjectJob(contracts.PriorityNormal, "proj"),
		info: runner.DeliveryInfo{Sequence: 42, NumDelivered: 1}}
	f.r.Handle(t.Context(), d)

	d.settled(t, "term")
	dl := f.dead.only(t)
	if dl.ID != "42" || dl.Reason != contracts.ReasonUndecodable || string(dl.Raw) != "{not json" || f.dead.project(0) != "proj" {
		t.Errorf("dead letter = %+v in %q, want 42, undecodable, the raw body, in proj", dl, f.dead.project(0))
	}
}

// runningOn stores id's state as running attempt 1 on worker, and returns
// the job.
func (f *fixture) runningOn(t *testing.T, id, worker string) contracts.Job {
	t.Helper()
	job := testJob(id)
	st := contracts.QueuedState(job)
	st.Status, st.Attempt, st.Worker = contracts.StatusRunning, 1, worker
	f.store(t, st)
	return job
}

// stillRunningOn checks that id still runs on worker and that no event
// was published.
func (f *fixture) stillRunningOn(t *testing.T, id, worker string) {
	t.Helper()
	if got := f.states.get(t, id); got.Status != contracts.StatusRunning || got.Worker != worker {
		t.Errorf("state = %s on %q, want still running on %s", got.Status, got.Worker, worker)
	}
	f.events.want(t)
}

// A job delivered again while its state says running, and a worker still
// holds it (a late heartbeat, not a lost worker), is left to that worker:
// its message comes back later, and nothing is written.
func TestRunningCopyOfAHeldJobIsDelayed(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.holders.held = true
	job := f.runningOn(t, "j1", "w2")
	d := newDelivery(t, job, runner.DeliveryInfo{Sequence: 1, NumDelivered: 3})
	f.r.Handle(t.Context(), d)

	d.settled(t, fmt.Sprint("nak ", min(slotDelay<<3, 3*heartbeat)))
	f.stillRunningOn(t, "j1", "w2")
}

// Without a holder, the same delivery finds the worker lost: the attempt
// fails worker_lost, and with no attempts left the job ends. The holders
// are asked again for the patience first: silence once is not death.
func TestRunningCopyOfALostJobEnds(t *testing.T) {
	t.Parallel()
	f := setup(t)
	job := f.runningOn(t, "j1", "w2")
	d := newDelivery(t, job, runner.DeliveryInfo{Sequence: 1, NumDelivered: 2})
	start := time.Now()
	f.r.Handle(t.Context(), d)

	d.settled(t, "ack")
	if got := f.states.get(t, "j1"); got.Status != contracts.StatusFailed || got.Reason != contracts.ReasonWorkerLost {
		t.Errorf("state = %s %q, want failed worker_lost", got.Status, got.Reason)
	}
	f.events.want(t, contracts.EventFailed)
	if took, asks := time.Since(start), f.holders.asks(); took < patience || asks < 2 {
		t.Errorf("lost after %s and %d asks, want the holders asked again for %s first", took, asks, patience)
	}
}

// A holder that cannot answer at first (on the far side of a partition
// that is healing) but answers within the patience keeps its job, as in
// TestRunningCopyOfAHeldJobIsDelayed: nothing is written.
func TestRunningCopyOfAJobWhoseHolderAnswersLateIsDelayed(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.holders.answerFrom = 2
	job := f.runningOn(t, "j1", "w2")
	d := newDelivery(t, job, runner.DeliveryInfo{Sequence: 1, NumDelivered: 2})
	f.r.Handle(t.Context(), d)

	d.settled(t, fmt.Sprint("nak ", min(slotDelay<<2, 3*heartbeat)))
	f.stillRunningOn(t, "j1", "w2")
}

// Cancel stops a running job: it ends cancelled and its message is
// acknowledged.
func TestCancelStopsARunningJob(t *testing.T) {
	t.Parallel()
	f := setup(t)
	started := make(chan struct{})
	f.exec = func(ctx context.Context, _ executor.Spec, _, _ io.Writer) (int, error) {
		close(started)
		<-ctx.Done()
		return -1, context.Cause(ctx)
	}
	d := f.queue(t, testJob("j1"))
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.r.Handle(t.Context(), d)
	}()
	<-started
	if !f.r.Cancel("j1") {
		t.Error("Cancel of a running job reported it not held")
	}
	<-done

	d.settled(t, "ack")
	if got := f.states.get(t, "j1"); got.Status != contracts.StatusCancelled {
		t.Errorf("state = %s, want cancelled", got.Status)
	}
	f.events.want(t, contracts.EventStarted, contracts.EventCancelled)
	if f.r.Cancel("j1") {
		t.Error("Cancel of an ended job reported it held")
	}
}

// A job whose state is final is not run again: its message is dropped.
func TestFinishedJobIsNotRunAgain(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.exec = func(context.Context, executor.Spec, io.Writer, io.Writer) (int, error) {
		t.Error("a finished job ran again")
		return 0, nil
	}
	job := testJob("j1")
	st := contracts.QueuedState(job)
	st.Status, st.Attempt = contracts.StatusSucceeded, 1
	f.store(t, st)
	f.events.stored = []contracts.EventType{contracts.EventSucceeded}
	d := newDelivery(t, job, runner.DeliveryInfo{Sequence: 1, NumDelivered: 2})
	f.r.Handle(t.Context(), d)
	d.settled(t, "ack")
}

// fakeDelivery records how the runner settles it.
type fakeDelivery struct {
	data    []byte
	subject string
	info    runner.DeliveryInfo
	mu      sync.Mutex
	outcome []string
}

func newDelivery(t *testing.T, job contracts.Job, info runner.DeliveryInfo) *fakeDelivery {
	t.Helper()
	b, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeDelivery{data: b, subject: contracts.SubjectJob(job.Priority, job.Project), info: info}
}

func (d *fakeDelivery) settle(s string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.outcome = append(d.outcome, s)
	return nil
}

// settled checks that the delivery was settled exactly once, as want.
func (d *fakeDelivery) settled(t *testing.T, want string) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.outcome) != 1 || d.outcome[0] != want {
		t.Errorf("delivery settled with %v, want [%s]", d.outcome, want)
	}
}

func (d *fakeDelivery) Data() []byte                       { return d.data }
func (d *fakeDelivery) Subject() string                    { return d.subject }
func (d *fakeDelivery) Info() (runner.DeliveryInfo, error) { return d.info, nil }
func (d *fakeDelivery) Ack(context.Context) error          { return d.settle("ack") }
func (d *fakeDelivery) Nak() error                         { return d.settle("nak") }
func (d *fakeDelivery) NakWithDelay(delay time.Duration) error {
	return d.settle(fmt.Sprint("nak ", delay))
}
func (d *fakeDelivery) Term() error       { return d.settle("term") }
func (d *fakeDelivery) InProgress() error { return nil }

// fakeStates is a compare-and-set map with the state store's errors.
type fakeStates struct {
	mu   sync.Mutex
	recs map[string]stateRec
	read int
}

type stateRec struct {
	st  contracts.JobState
	rev uint64
}

func (s *fakeStates) Get(_ context.Context, id string) (contracts.JobState, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.read++
	r, ok := s.recs[id]
	if !ok {
		return contracts.JobState{}, 0, state.ErrNotFound
	}
	return r.st, r.rev, nil
}

func (s *fakeStates) Update(_ context.Context, id string, st contracts.JobState, rev uint64) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.recs[id].rev != rev {
		return 0, state.ErrConflict
	}
	s.recs[id] = stateRec{st, rev + 1}
	return rev + 1, nil
}

func (s *fakeStates) get(t *testing.T, id string) contracts.JobState {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.recs[id]
	if !ok {
		t.Fatalf("no state for %s", id)
	}
	return r.st
}

func (s *fakeStates) gets() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.read
}

// fakeEvents records published events; stored lists the event types
// already stored before the test.
type fakeEvents struct {
	mu     sync.Mutex
	types  []contracts.EventType
	stored []contracts.EventType
}

func (e *fakeEvents) Publish(_ context.Context, ev contracts.Event) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.types = append(e.types, ev.Type)
	return nil
}

func (e *fakeEvents) PublishAsync(ev contracts.Event) (func(context.Context) error, error) {
	err := e.Publish(context.Background(), ev)
	return func(context.Context) error { return nil }, err
}

func (e *fakeEvents) Stored(_ context.Context, ev contracts.Event) (bool, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Contains(e.stored, ev.Type) || slices.Contains(e.types, ev.Type), nil
}

func (e *fakeEvents) want(t *testing.T, want ...contracts.EventType) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if !slices.Equal(e.types, want) {
		t.Errorf("events %v, want %v", e.types, want)
	}
}

// fakeDead records dead letters and their projects.
type fakeDead struct {
	mu       sync.Mutex
	letters  []contracts.DeadLetter
	projects []string
}

func (d *fakeDead) Publish(_ context.Context, project string, dl contracts.DeadLetter) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.letters, d.projects = append(d.letters, dl), append(d.projects, project)
	return nil
}

func (d *fakeDead) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.letters)
}

func (d *fakeDead) only(t *testing.T) contracts.DeadLetter {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.letters) != 1 {
		t.Fatalf("%d dead letters, want 1", len(d.letters))
	}
	return d.letters[0]
}

func (d *fakeDead) project(i int) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.projects[i]
}

// fakeHolders answers whether another worker holds a job: held, or
// from the answerFrom-th ask on when answerFrom is set.
type fakeHolders struct {
	held       bool
	answerFrom int
	mu         sync.Mutex
	asked      int
}

func (h *fakeHolders) Held(context.Context, string) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.asked++
	return h.held || (h.answerFrom > 0 && h.asked >= h.answerFrom), nil
}

func (h *fakeHolders) asks() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.asked
}

// fakeOutput keeps nothing: the decisions do not depend on the lines.
type fakeOutput struct{}

func (fakeOutput) LastSeq(context.Context, string, string) (uint64, error) { return 0, nil }
func (fakeOutput) Open(contracts.Job, int, uint64) runner.LineSink         { return &countSink{} }

type countSink struct {
	mu sync.Mutex
	n  uint64
}

func (s *countSink) Line(context.Context, contracts.FD, []byte, bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	return nil
}

func (s *countSink) Close(context.Context) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n, nil
}

// execFunc is an executor.Executor from a function.
type execFunc func(ctx context.Context, spec executor.Spec, stdout, stderr io.Writer) (int, error)

func (f execFunc) Exec(ctx context.Context, spec executor.Spec, stdout, stderr io.Writer) (int, error) {
	return f(ctx, spec, stdout, stderr)
}
