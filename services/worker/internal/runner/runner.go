// Package runner runs one dispatched job: it claims the job in the state
// store, publishes its lifecycle events, executes it while streaming every
// line, and settles the queue message so the job is neither lost nor run
// twice.
package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/worker/internal/executor"
	"github.com/rdev-dev/rdev/services/worker/internal/lines"
)

// States reads and writes job state with compare-and-set.
type States interface {
	// Get returns the state and its revision, or ErrStateNotFound.
	Get(ctx context.Context, jobID string) (contracts.JobState, uint64, error)
	// Put stores st if the stored revision is rev (0: absent) and returns
	// the new revision, or ErrStateConflict.
	Put(ctx context.Context, st contracts.JobState, rev uint64) (uint64, error)
}

// Events publishes lifecycle events durably; republishing the same event
// of the same attempt is harmless.
type Events interface {
	Publish(ctx context.Context, ev contracts.Event) error
	// PublishAsync sends ev at once and reports later, through wait,
	// whether it was stored. Output lines published after it are stored
	// after it.
	PublishAsync(ev contracts.Event) (wait func(context.Context) error, err error)
}

// Output opens the line sink of one attempt.
type Output interface {
	// LastSeq is the Seq of the stream's last stored line, 0 if none.
	LastSeq(ctx context.Context, streamID string) (uint64, error)
	// Open returns the sink for an attempt whose first line is firstSeq.
	Open(job contracts.Job, attempt int, firstSeq uint64) LineSink
}

// LineSink stores lines in order. Line is called from the stdout and
// stderr goroutines concurrently.
type LineSink interface {
	Line(ctx context.Context, fd contracts.FD, data []byte, partial bool) error
	// Close returns once every line is stored, with the last Seq.
	Close(ctx context.Context) (uint64, error)
}

// Sentinel errors of the States port.
var (
	ErrStateNotFound = errors.New("job state not found")
	ErrStateConflict = errors.New("job state changed concurrently")
)

// errTimedOut is the cancel cause of a job that ran past its timeout.
var errTimedOut = errors.New("job timed out")

// Config tunes a Runner.
type Config struct {
	// WorkerID names this worker in job state and events.
	WorkerID string
	// Heartbeat is how often a running job's message is kept alive with
	// InProgress; well below the consumers' AckWait. Default 10s.
	Heartbeat time.Duration
	// UnavailableDelay is how long a job waits in the queue before it is
	// delivered again when the executor's backend is unavailable
	// (executor.ErrUnavailable). Default 5s.
	UnavailableDelay time.Duration
	// Observer is told of retries and dead letters; default NopObserver.
	Observer Observer
}

// Runner runs dispatched jobs.
type Runner struct {
	cfg    Config
	exec   executor.Executor
	states States
	events Events
	output Output
	log    *slog.Logger
	now    func() time.Time
}

// New returns a Runner.
func New(cfg Config, exec executor.Executor, states States, events Events, output Output, log *slog.Logger) *Runner {
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 10 * time.Second
	}
	if cfg.UnavailableDelay <= 0 {
		cfg.UnavailableDelay = 5 * time.Second
	}
	if cfg.Observer == nil {
		cfg.Observer = NopObserver{}
	}
	return &Runner{cfg: cfg, exec: exec, states: states, events: events, output: output, log: log, now: time.Now}
}

// Handle runs the job in msg and settles msg. runCtx ends when the worker
// stops waiting for running jobs; the job is then killed and handed back
// to the queue for another worker.
func (r *Runner) Handle(runCtx context.Context, msg jetstream.Msg) {
	var job contracts.Job
	if err := json.Unmarshal(msg.Data(), &job); err != nil || job.V > contracts.Version || !contracts.ValidID(job.ID) ||
		!contracts.ValidID(job.StreamID) || !contracts.ValidProjectID(job.Project) || len(job.Command) == 0 {
		r.log.Error("undecodable job message; terminating it", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return
	}
	log := r.log.With("job_id", job.ID, "project", job.Project)
	log = withTrace(runCtx, log)
	// Settling must work even when runCtx has ended.
	ctx := context.WithoutCancel(runCtx)
	if err := r.handle(runCtx, ctx, msg, job, log, true); err != nil {
		log.Warn("job not settled; it will be delivered again", "err", err)
		_ = msg.NakWithDelay(time.Second)
	}
}

// handle runs and settles one job. With fast set, a first delivery that
// carries the state revision the API wrote is claimed without reading the
// state first; a conflict falls back to reading it.
func (r *Runner) handle(runCtx, ctx context.Context, msg jetstream.Msg, job contracts.Job, log *slog.Logger, fast bool) error {
	md, err := msg.Metadata()
	if err != nil {
		return fmt.Errorf("message metadata: %w", err)
	}
	var st contracts.JobState
	rev, _ := strconv.ParseUint(msg.Headers().Get(contracts.HeaderStateRevision), 10, 64)
	if fast && rev > 0 && md.NumDelivered == 1 {
		st = queuedState(job)
	} else {
		st, rev, err = r.states.Get(ctx, job.ID)
		switch {
		case errors.Is(err, ErrStateNotFound):
			// The API's write may have been lost after the job was queued.
			st, rev = queuedState(job), 0
		case err != nil:
			return fmt.Errorf("read state: %w", err)
		}
	}
	switch {
	case st.Status.Final():
		log.Info("job already finished; dropping its message")
		if err := r.announceEnd(ctx, st); err != nil {
			return err
		}
		return msg.DoubleAck(ctx)
	case st.Status == contracts.StatusRunning && md.NumDelivered == 1:
		// Another copy of this job id is running elsewhere.
		log.Info("duplicate delivery of a running job; dropping it")
		return msg.DoubleAck(ctx)
	case st.Status == contracts.StatusRunning:
		// Redelivered while marked running: its worker stopped heartbeating.
		lines, err := r.output.LastSeq(ctx, job.StreamID)
		if err != nil {
			return err
		}
		log.Warn("job's worker was lost", "worker", st.Worker)
		if err := r.finish(ctx, &st, rev, job, st.Attempt, outcome{event: contracts.EventFailed, reason: contracts.ReasonWorkerLost,
			message: "worker " + st.Worker + " stopped while running the job", lines: lines}); err != nil {
			return err
		}
		return msg.DoubleAck(ctx)
	}

	attempt := st.Attempt + 1
	started := r.now().UTC()
	st.Status, st.Attempt, st.Worker, st.StartedAt = contracts.StatusRunning, attempt, r.cfg.WorkerID, &started
	if rev, err = r.states.Put(ctx, st, rev); err != nil {
		if errors.Is(err, ErrStateConflict) {
			// The state changed since it was read (or queued): look again.
			return r.handle(runCtx, ctx, msg, job, log, false)
		}
		return fmt.Errorf("claim job: %w", err)
	}
	stopBeat := r.heartbeat(msg)
	defer stopBeat()

	// A first attempt has no lines yet: skip the round trip.
	var first uint64
	if attempt > 1 {
		if first, err = r.output.LastSeq(ctx, job.StreamID); err != nil {
			return r.handBack(ctx, msg, &st, rev, err)
		}
	}
	// The command starts without waiting for the started event's ack: it
	// is stored before the lines that follow it on the same connection, and
	// its ack is checked before the job can finish.
	startedEv := r.event(job, attempt, contracts.EventStarted, first)
	startedStored, err := r.events.PublishAsync(startedEv)
	if err != nil {
		return r.handBack(ctx, msg, &st, rev, err)
	}
	log.Info("job started", "attempt", attempt, "priority", job.Priority)

	out := r.run(runCtx, job, attempt, first+1)
	if err := startedStored(ctx); err != nil {
		if err := r.events.Publish(ctx, startedEv); err != nil {
			return r.handBack(ctx, msg, &st, rev, err)
		}
	}
	if out.handBack {
		return r.handBack(ctx, msg, &st, rev, errors.New("worker stopping"))
	}
	if out.unavailable != nil {
		// The command did not run: the attempt is not spent.
		st.Attempt = attempt - 1
		return r.handBackLater(ctx, msg, &st, rev, out.unavailable, r.cfg.UnavailableDelay)
	}
	if err := r.finish(ctx, &st, rev, job, attempt, out); err != nil {
		return err
	}
	log.Info("job finished", "status", st.Status, "exit_code", exitCodeAttr(out.exitCode), "duration", out.duration)
	return msg.DoubleAck(ctx)
}

// queuedState is the state the API stores for a job it queues.
func queuedState(job contracts.Job) contracts.JobState {
	return contracts.JobState{V: contracts.Version, JobID: job.ID, Project: job.Project, Kind: job.Kind,
		Priority: job.Priority, Status: contracts.StatusQueued, StreamID: job.StreamID,
		SubmittedAt: job.SubmittedAt, IdempotencyKey: job.IdempotencyKey}
}

// exitCodeAttr logs an exit code, or -1 when the command did not exit.
func exitCodeAttr(code *int) int {
	if code == nil {
		return -1
	}
	return *code
}

// outcome is how an attempt ended.
type outcome struct {
	event    contracts.EventType
	exitCode *int
	reason   string
	message  string
	lines    uint64
	duration time.Duration
	handBack bool
	// unavailable is set when the executor's backend could not run the
	// command (executor.ErrUnavailable): the job goes back to the queue.
	unavailable error
}

// run executes one attempt and streams its output.
func (r *Runner) run(runCtx context.Context, job contracts.Job, attempt int, firstSeq uint64) outcome {
	sink := r.output.Open(job, attempt, firstSeq)
	jobCtx, cancel := context.WithTimeoutCause(runCtx, job.Timeout(), errTimedOut)
	defer cancel()
	// Lines are stored even while the job is being killed.
	pubCtx := context.WithoutCancel(runCtx)
	emit := func(l lines.Line) error { return sink.Line(pubCtx, l.FD, l.Data, l.Partial) }
	stdout := lines.NewWriter(contracts.Stdout, contracts.MaxLineBytes, emit)
	stderr := lines.NewWriter(contracts.Stderr, contracts.MaxLineBytes, emit)

	start := r.now()
	code, err := r.exec.Exec(jobCtx, executor.Spec{
		JobID: job.ID, Project: job.Project, Command: job.Command, Env: job.Env, WorkDir: job.WorkDir,
	}, stdout, stderr)
	werr := errors.Join(stdout.Close(), stderr.Close())
	last, cerr := sink.Close(pubCtx)
	out := outcome{lines: last, duration: r.now().Sub(start)}

	switch {
	case err != nil && runCtx.Err() != nil && !errors.Is(context.Cause(jobCtx), errTimedOut):
		out.handBack = true
	case errors.Is(context.Cause(jobCtx), errTimedOut) && err != nil:
		out.event, out.reason = contracts.EventTimedOut, contracts.ReasonTimeout
		out.message = fmt.Sprintf("killed after %s", job.Timeout())
	case errors.Is(err, executor.ErrUnavailable):
		out.unavailable = err
	case errors.Is(err, executor.ErrStart):
		out.event, out.reason, out.message = contracts.EventFailed, contracts.ReasonStartFailed, err.Error()
	case errors.Is(err, executor.ErrNotReady):
		out.event, out.reason, out.message = contracts.EventFailed, contracts.ReasonPodNotReady, err.Error()
	case errors.Is(err, executor.ErrLost):
		out.event, out.reason, out.message = contracts.EventFailed, contracts.ReasonPodLost, err.Error()
	case err != nil:
		out.event, out.reason, out.message = contracts.EventFailed, contracts.ReasonExecutorError, err.Error()
	case werr != nil || cerr != nil:
		out.event, out.reason = contracts.EventFailed, contracts.ReasonExecutorError
		out.message = "output could not be stored: " + errors.Join(werr, cerr).Error()
		out.exitCode = &code
	case code == 0:
		out.event, out.exitCode = contracts.EventSucceeded, &code
	default:
		out.event, out.exitCode, out.reason = contracts.EventFailed, &code, contracts.ReasonExitCode
		out.message = fmt.Sprintf("exited with status %d", code)
	}
	if cerr != nil && !out.handBack && out.unavailable == nil {
		// Unstored output leaves last unknown; report what is stored.
		if n, err := r.output.LastSeq(pubCtx, job.StreamID); err == nil {
			out.lines = n
		}
	}
	return out
}

// finish ends the job: the final state by compare-and-set, then the
// terminal event. The state decides who ends a job: a worker that stalled
// past the ack wait, whose job another worker reported lost meanwhile,
// loses the compare-and-set and reports nothing. If the event cannot be
// published, the job's message is delivered again and the final state's
// event is published then (see announceEnd).
func (r *Runner) finish(ctx context.Context, st *contracts.JobState, rev uint64, job contracts.Job, attempt int, out outcome) error {
	done := r.now().UTC()
	st.Status, st.ExitCode, st.Reason, st.Message = contracts.StatusOf(out.event), out.exitCode, out.reason, out.message
	st.Lines, st.FinishedAt, st.Attempt = out.lines, &done, attempt
	if _, err := r.states.Put(ctx, *st, rev); err != nil {
		if errors.Is(err, ErrStateConflict) {
			r.log.Warn("job state changed while the job ran; its result is not reported", "job_id", job.ID,
				"status", st.Status)
			return nil
		}
		return fmt.Errorf("store final state: %w", err)
	}
	ev := r.event(job, attempt, out.event, out.lines)
	ev.ExitCode, ev.Reason, ev.Message, ev.DurationMS, ev.Time = out.exitCode, out.reason, out.message, out.duration.Milliseconds(), done
	return r.events.Publish(ctx, ev)
}

// announceEnd publishes the terminal event of a job whose final state is
// stored, for the case where the worker that ended it could not. Within
// the duplicate window a second publish of the same event is dropped.
func (r *Runner) announceEnd(ctx context.Context, st contracts.JobState) error {
	ev := contracts.Event{
		V: contracts.Version, Type: contracts.EndOf(st.Status), Status: st.Status, JobID: st.JobID,
		StreamID: st.StreamID, Project: st.Project, Attempt: st.Attempt, Worker: st.Worker,
		ExitCode: st.ExitCode, Reason: st.Reason, Message: st.Message, Lines: st.Lines,
	}
	if st.FinishedAt != nil {
		ev.Time = *st.FinishedAt
		if st.StartedAt != nil {
			ev.DurationMS = st.FinishedAt.Sub(*st.StartedAt).Milliseconds()
		}
	}
	return r.events.Publish(ctx, ev)
}

// handBack returns a job this worker will not finish to the queue, marked
// queued again so the next delivery starts a new attempt.
func (r *Runner) handBack(ctx context.Context, msg jetstream.Msg, st *contracts.JobState, rev uint64, cause error) error {
	return r.handBackLater(ctx, msg, st, rev, cause, 0)
}

// handBackLater is handBack with the next delivery delayed by delay.
func (r *Runner) handBackLater(ctx context.Context, msg jetstream.Msg, st *contracts.JobState, rev uint64, cause error,
	delay time.Duration) error {
	st.Status, st.Worker = contracts.StatusQueued, ""
	if _, err := r.states.Put(ctx, *st, rev); err != nil {
		return fmt.Errorf("hand back after %w: %w", cause, err)
	}
	r.log.Info("job handed back to the queue", "job_id", st.JobID, "cause", cause, "delay", delay)
	if delay > 0 {
		return msg.NakWithDelay(delay)
	}
	return msg.Nak()
}

func (r *Runner) event(job contracts.Job, attempt int, t contracts.EventType, lines uint64) contracts.Event {
	return contracts.Event{
		V: contracts.Version, Type: t, Status: contracts.StatusOf(t), JobID: job.ID, StreamID: job.StreamID,
		Project: job.Project, Attempt: attempt, Worker: r.cfg.WorkerID, Lines: lines, Time: r.now().UTC(),
	}
}

// heartbeat keeps msg from being redelivered while the job runs.
func (r *Runner) heartbeat(msg jetstream.Msg) (stop func()) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(r.cfg.Heartbeat)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				_ = msg.InProgress()
			case <-done:
				return
			}
		}
	}()
	return func() { close(done); <-stopped }
}
