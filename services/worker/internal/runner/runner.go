// Package runner runs one dispatched job: it claims the job in the state
// store, publishes its lifecycle events, executes it while streaming every
// line, and settles the queue message so the job is neither lost nor run
// twice. A failed attempt that was not the command's fault is retried
// after a backoff while attempts remain, then given up as a dead letter;
// a project's running jobs are bounded across workers by leases.
package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/state"
	"github.com/rdev-dev/rdev/services/worker/internal/executor"
	"github.com/rdev-dev/rdev/services/worker/internal/lines"
)

// States reads and writes job state with compare-and-set
// (state.Store.Jobs is one).
type States interface {
	// Get returns the state and its revision, or state.ErrNotFound.
	Get(ctx context.Context, jobID string) (contracts.JobState, uint64, error)
	// Update stores st as jobID's state if the stored revision is rev (0:
	// absent) and returns the new revision, or state.ErrConflict.
	Update(ctx context.Context, jobID string, st contracts.JobState, rev uint64) (uint64, error)
}

// Events publishes lifecycle events durably; republishing the same event
// of the same attempt is harmless.
type Events interface {
	Publish(ctx context.Context, ev contracts.Event) error
	// PublishAsync sends ev at once and reports later, through wait,
	// whether it was stored. Output lines published after it are stored
	// after it.
	PublishAsync(ev contracts.Event) (wait func(context.Context) error, err error)
	// Stored reports whether an event of ev's type is already stored for
	// ev's stream (whoever published it), so a terminal event is not
	// announced twice after the duplicate window.
	Stored(ctx context.Context, ev contracts.Event) (bool, error)
}

// DeadLetters stores jobs that are given up.
type DeadLetters interface {
	// Publish stores dl on contracts.SubjectDead(project) with dl.ID as
	// its message id, so a republish within the duplicate window is
	// stored once.
	Publish(ctx context.Context, project string, dl contracts.DeadLetter) error
}

// Slots leases a project's running-job slots, shared by every worker. A
// lease expires unless renewed, so the slots of a crashed worker free
// themselves.
type Slots interface {
	// Acquire leases a slot for jobID if fewer than limit unexpired leases
	// are held (renewing jobID's own lease if it has one) and reports
	// whether it got one.
	Acquire(ctx context.Context, project, jobID string, limit int) (bool, error)
	// Renew extends jobID's lease, taking it again if it expired.
	Renew(ctx context.Context, project, jobID string) error
	// Release gives jobID's lease up; releasing none is not an error.
	Release(ctx context.Context, project, jobID string) error
}

// Secrets resolves a job's secret references when it starts.
type Secrets interface {
	// Resolve returns the values of the secrets refs names (env name to
	// secret name) in the given incarnation of project, by env name. It
	// returns an error wrapping ErrSecretNotFound when one does not exist
	// (or does not open with the worker's key); other errors are
	// transient. Errors never hold a value.
	Resolve(ctx context.Context, project, incarnation string, refs map[string]string) (map[string]string, error)
}

// ErrSecretNotFound is returned, wrapped, by Secrets.Resolve for a secret
// that is not there: the job fails to start, as retrying will not help.
var ErrSecretNotFound = errors.New("secret not found")

// Limits says how many jobs of a project may run at once across all
// workers; 0 means no bound (also for an unknown project).
type Limits interface {
	MaxConcurrent(ctx context.Context, project string) (int, error)
}

// Holders asks the workers whether one of them still holds a job.
type Holders interface {
	// Held reports whether a worker (another delivery on this one
	// included) holds jobID now. No answer within a short wait means no.
	Held(ctx context.Context, jobID string) (bool, error)
}

// Delivery is one delivery of a job message: what the runner reads of it,
// and the outcomes it settles it with (the transport's acknowledgements,
// kept behind this port so the runner's decisions are its own). One
// goroutine settles a delivery; InProgress may be called meanwhile.
type Delivery interface {
	// Data is the message body, a contracts.Job.
	Data() []byte
	// Subject is where the job was published (contracts.SubjectJob).
	Subject() string
	// Info describes this delivery; an error means the transport cannot
	// say, and the message is settled without it.
	Info() (DeliveryInfo, error)
	// Ack acknowledges the message and returns once the server confirmed
	// it: the job leaves the queue. Acknowledging an acknowledged
	// delivery is not an error.
	Ack(ctx context.Context) error
	// Nak hands the message back for another delivery at once.
	Nak() error
	// NakWithDelay hands the message back for another delivery after
	// delay.
	NakWithDelay(delay time.Duration) error
	// Term drops the message for good; it is not delivered again.
	Term() error
	// InProgress tells the transport the job is still being worked on, so
	// it is not delivered again meanwhile.
	InProgress() error
}

// DeliveryInfo is what a delivery says about itself.
type DeliveryInfo struct {
	// Sequence is the message's position in the jobs stream; it names a
	// dead letter of a message that is not a job.
	Sequence uint64
	// NumDelivered counts the deliveries of the message, this one
	// included.
	NumDelivered uint64
	// StateRevision is the revision of the job's state when it was queued
	// (contracts.HeaderStateRevision), 0 when the message does not say.
	StateRevision uint64
}

// Output opens the line sink of one attempt.
type Output interface {
	// LastSeq is the Seq of the stream's last stored line, 0 if none.
	LastSeq(ctx context.Context, project, streamID string) (uint64, error)
	// Open returns the sink for an attempt whose first line is firstSeq.
	Open(job contracts.Job, attempt int, firstSeq uint64) LineSink
}

// LineSink stores lines in order. Line is called from the stdout and
// stderr goroutines concurrently.
type LineSink interface {
	Line(ctx context.Context, fd contracts.FD, data []byte, partial bool) error
	// Close returns once every line is stored, with the last Seq. On an
	// error the Seq is that of the last line stored.
	Close(ctx context.Context) (uint64, error)
}

// errTimedOut is the cancel cause of a job that ran past its timeout.
var errTimedOut = errors.New("job timed out")

// Config tunes a Runner.
type Config struct {
	// WorkerID names this worker in job state and events.
	WorkerID string
	// Heartbeat is how often a running job's message is kept alive with
	// InProgress, its slot lease renewed and its state checked for a
	// cancel request; well below the consumers' AckWait. Default 10s.
	Heartbeat time.Duration
	// UnavailableDelay is how long a job waits in the queue before it is
	// delivered again when the executor's backend is unavailable
	// (executor.ErrUnavailable). Default 5s.
	UnavailableDelay time.Duration
	// RetryBase and RetryCap shape the backoff between attempts (see
	// Backoff); defaults 1s and 5m.
	RetryBase, RetryCap time.Duration
	// SlotDelay is how long a job whose project has no free slot waits in
	// the queue before it is delivered again; default 500ms.
	SlotDelay time.Duration
	// Jitter draws the backoff's jitter in [0, 1); default uniform random.
	Jitter func() float64
	// Observer is told of retries and dead letters; default NopObserver.
	Observer Observer
	// PersistBudget is how long a write of the settle path (state, event,
	// dead letter, acknowledgement) is retried through a NATS outage
	// before the job is left to be delivered again; default one minute.
	PersistBudget time.Duration
	// HolderPatience is how long the holders of a job redelivered while
	// running must stay silent before its worker is taken for lost:
	// a live holder cut off for a moment (a network partition healing,
	// its NATS routes and their interest forming again) answers within
	// it. Default Heartbeat, the longest a live holder goes without
	// keeping its message alive.
	HolderPatience time.Duration
}

func (c *Config) setDefaults() {
	if c.Heartbeat <= 0 {
		c.Heartbeat = 10 * time.Second
	}
	if c.UnavailableDelay <= 0 {
		c.UnavailableDelay = 5 * time.Second
	}
	if c.RetryBase <= 0 {
		c.RetryBase = time.Second
	}
	if c.RetryCap <= 0 {
		c.RetryCap = 5 * time.Minute
	}
	c.RetryCap = max(c.RetryCap, c.RetryBase)
	if c.SlotDelay <= 0 {
		c.SlotDelay = 500 * time.Millisecond
	}
	if c.Jitter == nil {
		c.Jitter = rand.Float64
	}
	if c.Observer == nil {
		c.Observer = NopObserver{}
	}
	if c.PersistBudget <= 0 {
		c.PersistBudget = defaultPersistBudget
	}
	if c.HolderPatience <= 0 {
		c.HolderPatience = c.Heartbeat
	}
}

// Ports are the runner's collaborators. Limits may be nil: no project is
// bounded; Slots is then unused.
type Ports struct {
	Exec   executor.Executor
	States States
	Events Events
	Output Output
	Dead   DeadLetters
	Slots  Slots
	Limits Limits
	// Batches may be nil when no job is of an atomic batch.
	Batches Batches
	// Holders may be nil: a job redelivered while running is then always
	// taken for lost.
	Holders Holders
	// Secrets may be nil: a job that references a secret then fails to
	// start.
	Secrets Secrets
}

// Runner runs dispatched jobs.
type Runner struct {
	cfg     Config
	backoff Backoff
	exec    executor.Executor
	states  States
	events  Events
	output  Output
	dead    DeadLetters
	slots   Slots
	limits  Limits
	batches Batches
	holders Holders
	secrets Secrets
	// batchState caches settled batches.
	batchState batchStates
	log        *slog.Logger
	now        func() time.Time
	cancels    cancels
}

// New returns a Runner.
func New(cfg Config, p Ports, log *slog.Logger) *Runner {
	cfg.setDefaults()
	return &Runner{
		cfg: cfg, backoff: Backoff{Base: cfg.RetryBase, Cap: cfg.RetryCap, Jitter: cfg.Jitter},
		exec: p.Exec, output: p.Output, slots: p.Slots, limits: p.Limits, batches: p.Batches, holders: p.Holders, secrets: p.Secrets,
		states: persistentStates{p.States, cfg.PersistBudget}, events: persistentEvents{p.Events, cfg.PersistBudget},
		dead: persistentDead{p.Dead, cfg.PersistBudget},
		log:  log, now: time.Now,
	}
}

// Holds reports whether this worker holds jobID for a delivery, not
// counting asker's own when asker is this worker: the answer to another
// worker that received jobID's message while the job's state says it
// runs here.
func (r *Runner) Holds(jobID, asker string) bool {
	n := r.cancels.count(jobID)
	if asker == r.cfg.WorkerID {
		n--
	}
	return n > 0
}

// Cancel stops jobID if this worker runs it (or is about to claim it),
// and reports whether it does. The job ends cancelled. The caller is the
// cancel-request subscription; the job's state (CancelRequested) is the
// durable record, checked at every heartbeat too.
func (r *Runner) Cancel(jobID string) bool { return r.cancels.cancel(jobID) }

// delivery is one job message being handled.
type delivery struct {
	msg Delivery
	job contracts.Job
	log *slog.Logger
	// drain ends when the worker stops waiting for running jobs.
	drain context.Context
	// stop cancels the job's run context (drain plus its own cancel).
	stop context.CancelCauseFunc
}

// Handle runs the job in msg and settles msg. runCtx ends when the worker
// stops waiting for running jobs; the job is then killed and handed back
// to the queue for another worker.
func (r *Runner) Handle(runCtx context.Context, msg Delivery) {
	// Settling must work even when runCtx has ended.
	ctx := context.WithoutCancel(runCtx)
	job, err := decodeJob(msg.Data())
	if err != nil {
		r.undecodable(ctx, msg, err)
		return
	}
	log := withTrace(runCtx, r.log.With("job_id", job.ID, "project", job.Project))
	jobCtx, stop := context.WithCancelCause(runCtx)
	defer stop(nil)
	// Registered before the claim: a cancel request sent once the job is
	// marked running finds it.
	defer r.cancels.add(job.ID, stop)()
	d := &delivery{msg: msg, job: job, log: log, drain: runCtx, stop: stop}
	if err := r.handle(ctx, jobCtx, d, true); err != nil {
		log.Warn("job not settled; it will be delivered again", "err", err)
		_ = msg.NakWithDelay(time.Second)
	}
}

// decodeJob decodes and checks a job message.
func decodeJob(data []byte) (contracts.Job, error) {
	var job contracts.Job
	if err := json.Unmarshal(data, &job); err != nil {
		return job, fmt.Errorf("decode job: %w", err)
	}
	switch {
	case job.V > contracts.Version:
		return job, fmt.Errorf("job message version %d is newer than %d", job.V, contracts.Version)
	case !contracts.ValidID(job.ID), !contracts.ValidID(job.StreamID):
		return job, errors.New("job or stream id is invalid")
	case !contracts.ValidProjectID(job.Project):
		return job, errors.New("project id is invalid")
	case len(job.Command) == 0:
		return job, errors.New("job has no command")
	}
	return job, nil
}

// undecodable gives up a message that is not a job this worker can run:
// it goes to the dead letters (under its subject's project, else "_")
// before it leaves the queue, so it is not lost.
func (r *Runner) undecodable(ctx context.Context, msg Delivery, cause error) {
	info, err := msg.Info()
	if err != nil {
		r.log.Error("undecodable job message without metadata; terminating it", "subject", msg.Subject(), "err", cause)
		_ = msg.Term()
		return
	}
	project := "_"
	if p, ok := strings.CutPrefix(msg.Subject(), contracts.SubjectJobsPrefix+"."); ok {
		if _, p, ok = strings.Cut(p, "."); ok && contracts.ValidProjectID(p) {
			project = p
		}
	}
	dl := contracts.DeadLetter{
		V: contracts.Version, ID: strconv.FormatUint(info.Sequence, 10), Raw: msg.Data(),
		Reason: contracts.ReasonUndecodable, Message: cause.Error(), Time: r.now().UTC(),
	}
	if err := r.dead.Publish(ctx, project, dl); err != nil {
		r.log.Warn("undecodable job message not stored as a dead letter; it will be delivered again",
			"subject", msg.Subject(), "err", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	r.log.Error("undecodable job message moved to the dead letters", "subject", msg.Subject(), "dead_letter", dl.ID, "err", cause)
	_ = msg.Term()
}

// handle runs and settles one job. With fast set, a first delivery that
// carries the state revision the API wrote is claimed without reading the
// state first; a conflict falls back to reading it. ctx settles the job;
// jobCtx runs it.
func (r *Runner) handle(ctx, jobCtx context.Context, d *delivery, fast bool) error {
	msg, job, log := d.msg, d.job, d.log
	md, err := msg.Info()
	if err != nil {
		return fmt.Errorf("message metadata: %w", err)
	}
	var st contracts.JobState
	rev := md.StateRevision
	if fast && rev > 0 && md.NumDelivered == 1 {
		st = contracts.QueuedState(job)
	} else {
		st, rev, err = r.states.Get(ctx, job.ID)
		switch {
		case errors.Is(err, state.ErrNotFound):
			// The API's write may have been lost after the job was queued.
			st, rev = contracts.QueuedState(job), 0
		case err != nil:
			return fmt.Errorf("read state: %w", err)
		}
	}
	switch {
	case st.Status.Final():
		log.Info("job already finished; dropping its message")
		if err := r.announceEnd(ctx, job, st); err != nil {
			return err
		}
		return r.ack(ctx, msg)
	case st.Status == contracts.StatusRunning && md.NumDelivered == 1 && r.holders == nil:
		// Another copy of this job id is running elsewhere.
		log.Info("duplicate delivery of a running job; dropping it")
		return r.ack(ctx, msg)
	case st.Status == contracts.StatusRunning:
		return r.lost(ctx, d, st, rev)
	case st.CancelRequested:
		// Cancelled while queued but not ended by the canceller.
		return r.settle(ctx, d, &st, rev, "", st.Attempt, cancelledOutcome("cancelled before it started", st.Lines))
	}

	switch wait, expired := r.timing(job, st); {
	case expired != nil:
		return r.settle(ctx, d, &st, rev, "", st.Attempt, *expired)
	case wait > 0:
		log.Debug("delayed job delivered before its run_at; it waits in the queue", "wait", wait)
		return msg.NakWithDelay(wait)
	}

	// A job of an all-or-nothing batch runs only once the batch commits.
	switch verdict, err := r.batchGate(ctx, job); {
	case err != nil:
		return err
	case verdict == batchWait:
		log.Debug("atomic batch not committed yet; job waits in the queue", "batch_id", job.BatchID)
		return msg.NakWithDelay(r.cfg.SlotDelay)
	case verdict == batchAborted:
		return r.settle(ctx, d, &st, rev, "", st.Attempt, cancelledOutcome("its atomic batch was aborted", st.Lines))
	}

	// The project's slot is leased before the claim: a job without one
	// goes back to the queue without a started event or a spent attempt.
	limited, err := r.acquireSlot(ctx, job)
	if err != nil {
		return err
	}
	if limited < 0 {
		log.Debug("project at its concurrency limit; job waits in the queue", "delay", r.cfg.SlotDelay)
		return msg.NakWithDelay(r.cfg.SlotDelay)
	}
	if limited > 0 {
		defer r.releaseSlot(ctx, job)
	}

	attempt := st.Attempt + 1
	started := r.now().UTC()
	st.Status, st.Attempt, st.Worker, st.StartedAt, st.NextAttemptAt = contracts.StatusRunning, attempt, r.cfg.WorkerID, &started, nil
	if rev, err = r.states.Update(ctx, st.JobID, st, rev); err != nil {
		if errors.Is(err, state.ErrConflict) {
			// The state changed since it was read (or queued): look again.
			return r.handle(ctx, jobCtx, d, false)
		}
		return fmt.Errorf("claim job: %w", err)
	}
	stopBeat := r.heartbeat(ctx, d, limited > 0)
	defer stopBeat()

	// A first attempt has no lines yet: skip the round trip.
	var first uint64
	if attempt > 1 {
		if first, err = r.output.LastSeq(ctx, job.Project, job.StreamID); err != nil {
			return r.handBack(ctx, d, &st, rev, attempt, attempt, err, 0)
		}
	}
	// The command starts without waiting for the started event's ack: it
	// is stored before the lines that follow it on the same connection, and
	// its ack is checked before the job can finish.
	startedEv := r.event(job, attempt, contracts.EventStarted, first)
	startedStored, err := r.events.PublishAsync(startedEv)
	if err != nil {
		return r.handBack(ctx, d, &st, rev, attempt, attempt, err, 0)
	}
	log.Info("job started", "attempt", attempt, "priority", job.Priority)

	out := r.run(jobCtx, d, attempt, first+1)
	if err := startedStored(ctx); err != nil {
		// The command ran: its outcome matters more than its started
		// event, so a started event that cannot be stored does not stop it
		// from being settled.
		if err := r.events.Publish(ctx, startedEv); err != nil {
			log.Warn("started event not stored", "err", err)
		}
	}
	switch {
	case out.handBack:
		return r.handBack(ctx, d, &st, rev, attempt, attempt, errors.New("worker stopping"), 0)
	case out.unavailable != nil:
		// The command did not run: the attempt is not spent.
		return r.handBack(ctx, d, &st, rev, attempt, attempt-1, out.unavailable, r.cfg.UnavailableDelay)
	}
	return r.settle(ctx, d, &st, rev, r.cfg.WorkerID, attempt, out)
}

// lost handles a job delivered while marked running: its worker stopped
// heartbeating, or this is another copy of the job (the API queues a job
// again when a submit is retried; a consumer's new leader may deliver a
// message again as if for the first time). A worker that still holds the
// job keeps it: this delivery comes back later, when the job has ended.
// Otherwise the attempt failed with worker_lost (retried while attempts
// remain), or ends cancelled if someone asked for that.
func (r *Runner) lost(ctx context.Context, d *delivery, st contracts.JobState, rev uint64) error {
	if r.holders != nil {
		// Redelivered because a heartbeat was late (a NATS blip), not
		// because the worker died: it will settle the job itself.
		if r.held(ctx, d.job.ID) {
			// Back off per delivery: a short job is done soon, a long one
			// is not asked about every second.
			delay := 3 * r.cfg.Heartbeat
			if md, err := d.msg.Info(); err == nil {
				delay = min(r.cfg.SlotDelay<<min(md.NumDelivered, 10), delay)
			}
			d.log.Info("job delivered while a worker still holds it; leaving it to that worker", "worker", st.Worker, "delay", delay)
			return d.msg.NakWithDelay(delay)
		}
	}
	lines, err := r.output.LastSeq(ctx, d.job.Project, d.job.StreamID)
	if err != nil {
		return err
	}
	d.log.Warn("job's worker was lost", "worker", st.Worker, "attempt", st.Attempt)
	// The lost worker's lease, if any, is of no use to anyone now.
	if limit, err := r.limit(ctx, d.job.Project); err == nil && limit > 0 {
		r.releaseSlot(ctx, d.job)
	}
	out := outcome{event: contracts.EventFailed, reason: contracts.ReasonWorkerLost,
		message: "worker " + st.Worker + " stopped while running the job", lines: lines}
	if st.CancelRequested {
		out = cancelledOutcome("cancelled; its worker was lost", lines)
	}
	return r.settle(ctx, d, &st, rev, st.Worker, st.Attempt, out)
}

// held reports whether a worker holds jobID, asking again while none
// answers for up to HolderPatience: silence once is not death. A holder
// on the far side of a partition that just healed is out of reach until
// the routes between the NATS servers, and its subscription's interest
// over them, are back, and failing its job then would end a job that is
// still running (or run it twice).
func (r *Runner) held(ctx context.Context, jobID string) bool {
	deadline := r.now().Add(r.cfg.HolderPatience)
	for {
		if held, err := r.holders.Held(ctx, jobID); err == nil && held {
			return true
		}
		wait := min(holderAskEvery, deadline.Sub(r.now()))
		if wait <= 0 {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
	}
}

// holderAskEvery is how often a silent job's holders are asked again.
const holderAskEvery = 250 * time.Millisecond

// settle ends an attempt that owner ran: retried if its failure allows and
// attempts remain, else the job ends (as a dead letter too when the
// retries were spent). The message is acknowledged or handed back.
func (r *Runner) settle(ctx context.Context, d *delivery, st *contracts.JobState, rev uint64, owner string, attempt int,
	out outcome) error {
	if out.event == contracts.EventFailed && retryable(d.job, out.reason, out.exitCode) && attempt < d.job.Attempts() {
		return r.retry(ctx, d, st, rev, owner, attempt, out)
	}
	if err := r.finish(ctx, d, st, rev, owner, attempt, out); err != nil {
		return err
	}
	d.log.Info("job finished", "status", st.Status, "attempt", attempt, "exit_code", exitCodeAttr(out.exitCode),
		"duration", out.duration)
	return r.ack(ctx, d.msg)
}

// ack acknowledges msg, retried like the writes: an acknowledgement lost
// in a blip would have the settled job delivered again.
func (r *Runner) ack(ctx context.Context, msg Delivery) error {
	return persist(ctx, r.cfg.PersistBudget, func() error { return msg.Ack(ctx) })
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
	// claude is the session a Claude Code job reported, if any.
	claude *contracts.ClaudeSession
}

func cancelledOutcome(message string, lines uint64) outcome {
	return outcome{event: contracts.EventCancelled, reason: contracts.ReasonCancelled, message: message, lines: lines}
}

// run executes one attempt under runCtx and streams its output.
func (r *Runner) run(runCtx context.Context, d *delivery, attempt int, firstSeq uint64) outcome {
	job := d.job
	sink := r.output.Open(job, attempt, firstSeq)
	jobCtx, cancel := context.WithTimeoutCause(runCtx, job.Timeout(), errTimedOut)
	defer cancel()
	// Lines are stored even while the job is being killed.
	pubCtx := context.WithoutCancel(runCtx)
	emit := func(l lines.Line) error { return sink.Line(pubCtx, l.FD, l.Data, l.Partial) }
	var session *sessionRecorder
	if job.Kind == contracts.KindClaude {
		session = &sessionRecorder{}
		store := emit
		emit = func(l lines.Line) error {
			if l.FD == contracts.Stdout {
				session.line(l.Data, l.Partial) // stdout's goroutine only
			}
			return store(l)
		}
	}
	stdout := lines.NewWriter(contracts.Stdout, contracts.MaxLineBytes, emit)
	stderr := lines.NewWriter(contracts.Stderr, contracts.MaxLineBytes, emit)

	start := r.now()
	secretEnv, err := r.resolveSecrets(jobCtx, job)
	var code int
	if err == nil {
		code, err = r.exec.Exec(jobCtx, executor.Spec{
			JobID: job.ID, Project: job.Project, Command: job.Command, Env: job.Env, SecretEnv: secretEnv, WorkDir: job.WorkDir,
			MergeStderr: job.Stderr == contracts.StderrMerge, Priority: job.Priority,
		}, stdout, stderr)
	}
	clear(secretEnv)
	werr := errors.Join(stdout.Close(), stderr.Close())
	last, cerr := sink.Close(pubCtx)
	out := outcome{lines: last, duration: r.now().Sub(start)}
	if session != nil {
		out.claude = session.Session()
	}

	cause := context.Cause(jobCtx)
	switch {
	case err != nil && errors.Is(cause, errCancelled):
		out.event, out.reason, out.message = contracts.EventCancelled, contracts.ReasonCancelled, "cancelled while running"
	case err != nil && errors.Is(cause, errTimedOut):
		out.event, out.reason = contracts.EventTimedOut, contracts.ReasonTimeout
		out.message = fmt.Sprintf("killed after %s", job.Timeout())
	case err != nil && d.drain.Err() != nil:
		out.handBack = true
	case errors.Is(err, executor.ErrUnavailable), errors.Is(err, errSecretsUnavailable):
		out.unavailable = err
	case errors.Is(err, executor.ErrStart):
		out.event, out.reason, out.message = contracts.EventFailed, contracts.ReasonStartFailed, err.Error()
	case errors.Is(err, executor.ErrNotReady):
		out.event, out.reason, out.message = contracts.EventFailed, contracts.ReasonPodNotReady, err.Error()
	case errors.Is(err, executor.ErrLost):
		out.event, out.reason, out.message = contracts.EventFailed, contracts.ReasonPodLost, err.Error()
	case err != nil:
		out.event, out.reason, out.message = contracts.EventFailed, contracts.ReasonExecutorError, err.Error()
	case cerr != nil && d.drain.Err() != nil:
		// The worker is stopping and its connection went first: the
		// next attempt continues the stream after what is stored.
		out.handBack = true
	case werr != nil || cerr != nil:
		out.event, out.reason = contracts.EventFailed, contracts.ReasonOutputLost
		out.message = fmt.Sprintf("exited with status %d, but its output could not all be stored (%d lines are): %v",
			code, last, errors.Join(werr, cerr))
		out.exitCode = &code
	case code == 0:
		out.event, out.exitCode = contracts.EventSucceeded, &code
	default:
		out.event, out.exitCode, out.reason = contracts.EventFailed, &code, contracts.ReasonExitCode
		out.message = fmt.Sprintf("exited with status %d", code)
	}
	return out
}

// commit stores change applied to the job's state by compare-and-set, as
// long as owner still runs attempt: when the state changed meanwhile
// without taking the job from owner (someone asked to cancel it), change
// is applied to the fresh state and stored again. It returns
// state.ErrConflict when the job is no longer owner's.
func (r *Runner) commit(ctx context.Context, st *contracts.JobState, rev uint64, owner string, attempt int,
	change func(*contracts.JobState)) error {
	for range 10 {
		next := *st
		change(&next)
		_, err := r.states.Update(ctx, next.JobID, next, rev)
		if err == nil {
			*st = next
			return nil
		}
		if !errors.Is(err, state.ErrConflict) {
			return err
		}
		fresh, frev, err := r.states.Get(ctx, st.JobID)
		if err != nil {
			return fmt.Errorf("read state after a conflict: %w", err)
		}
		if fresh.Status != contracts.StatusRunning || fresh.Worker != owner || fresh.Attempt != attempt {
			return state.ErrConflict
		}
		*st, rev = fresh, frev
	}
	return state.ErrConflict
}

// ended records out as the final state of attempt.
func (r *Runner) ended(attempt int, out outcome) func(*contracts.JobState) {
	return func(st *contracts.JobState) {
		done := r.now().UTC()
		st.Status, st.ExitCode, st.Reason, st.Message = contracts.StatusOf(out.event), out.exitCode, out.reason, out.message
		st.Lines, st.FinishedAt, st.Attempt, st.NextAttemptAt = out.lines, &done, attempt, nil
		if out.claude != nil {
			st.Claude = out.claude
		}
	}
}

// finish ends the job: the final state by compare-and-set, then (when its
// retries are spent) the dead letter, then the terminal event. The state
// decides who ends a job: a worker that stalled past the ack wait, whose
// job another worker reported lost meanwhile, loses the compare-and-set
// and reports nothing. If the dead letter or the event cannot be
// published, the job's message is delivered again and the final state's
// are published then (see announceEnd).
func (r *Runner) finish(ctx context.Context, d *delivery, st *contracts.JobState, rev uint64, owner string, attempt int,
	out outcome) error {
	if err := r.commit(ctx, st, rev, owner, attempt, r.ended(attempt, out)); err != nil {
		if errors.Is(err, state.ErrConflict) {
			d.log.Warn("job state changed while the job ran; its result is not reported", "status", contracts.StatusOf(out.event))
			return nil
		}
		return fmt.Errorf("store final state: %w", err)
	}
	if err := r.deadLetter(ctx, d.job, *st); err != nil {
		return err
	}
	ev := r.event(d.job, attempt, out.event, out.lines)
	ev.ExitCode, ev.Reason, ev.Message, ev.DurationMS, ev.Time = out.exitCode, out.reason, out.message, out.duration.Milliseconds(), *st.FinishedAt
	return r.events.Publish(ctx, ev)
}

// resolveSecrets returns the values of job's secret references. A secret
// that is missing (or a worker without secrets) fails the start; a store
// that cannot answer hands the job back, like an unavailable executor.
func (r *Runner) resolveSecrets(ctx context.Context, job contracts.Job) (map[string]string, error) {
	if len(job.SecretEnv) == 0 {
		return nil, nil
	}
	if r.secrets == nil {
		return nil, fmt.Errorf("%w: the job references project secrets, but this worker has no secrets key (--secrets-key-file or --secrets-key)", executor.ErrStart)
	}
	vals, err := r.secrets.Resolve(ctx, job.Project, job.ProjectIncarnation, job.SecretEnv)
	switch {
	case errors.Is(err, ErrSecretNotFound):
		return nil, fmt.Errorf("%w: %w", executor.ErrStart, err)
	case err != nil:
		return nil, fmt.Errorf("%w: %w", errSecretsUnavailable, err)
	}
	return vals, nil
}

// errSecretsUnavailable marks a secrets store that could not answer.
var errSecretsUnavailable = errors.New("project secrets unavailable")

// deadLetter publishes the dead letter of a job that ended in st, if its
// retries were spent. Its env values are redacted: a dead letter is kept
// for weeks and shown to admins (secrets are references, kept as they are).
func (r *Runner) deadLetter(ctx context.Context, job contracts.Job, st contracts.JobState) error {
	if !deadLetterDue(job, st) {
		return nil
	}
	job.Env = contracts.RedactEnv(job.Env)
	dl := contracts.DeadLetter{V: contracts.Version, ID: job.ID, Job: &job, Reason: st.Reason, Message: st.Message,
		Attempts: st.Attempt, ExitCode: st.ExitCode, Time: r.now().UTC()}
	if st.FinishedAt != nil {
		dl.Time = *st.FinishedAt
	}
	if err := r.dead.Publish(ctx, job.Project, dl); err != nil {
		return fmt.Errorf("publish dead letter: %w", err)
	}
	r.cfg.Observer.DeadLettered(ctx, job, st.Reason)
	r.log.Warn("job given up: attempts spent", "job_id", job.ID, "attempts", st.Attempt, "reason", st.Reason)
	return nil
}

// announceEnd publishes the terminal event (and dead letter) of a job
// whose final state is stored, for the case where the worker that ended
// it could not. A terminal event already stored (by that worker, or by
// the API for a job cancelled while queued) is not published again; the
// dead letter precedes the event, so it is stored too.
func (r *Runner) announceEnd(ctx context.Context, job contracts.Job, st contracts.JobState) error {
	ev := contracts.Event{
		V: contracts.Version, Type: contracts.EndOf(st.Status), Status: st.Status, JobID: st.JobID,
		StreamID: st.StreamID, Project: st.Project, Attempt: st.Attempt, Worker: st.Worker,
		ExitCode: st.ExitCode, Reason: st.Reason, Message: st.Message, Lines: st.Lines, BatchID: st.BatchID,
	}
	if st.FinishedAt != nil {
		ev.Time = *st.FinishedAt
		if st.StartedAt != nil {
			ev.DurationMS = st.FinishedAt.Sub(*st.StartedAt).Milliseconds()
		}
	}
	stored, err := r.events.Stored(ctx, ev)
	if err != nil {
		return fmt.Errorf("look for the terminal event: %w", err)
	}
	if stored {
		return nil
	}
	if err := r.deadLetter(ctx, job, st); err != nil {
		return err
	}
	return r.events.Publish(ctx, ev)
}

// retry puts a job whose attempt failed back in the queue for the next
// attempt after a backoff: the state (queued, NextAttemptAt) first, then
// a retrying event, then the delayed Nak. A job someone asked to cancel
// ends cancelled instead.
func (r *Runner) retry(ctx context.Context, d *delivery, st *contracts.JobState, rev uint64, owner string, attempt int,
	out outcome) error {
	delay := r.backoff.Delay(attempt)
	at := r.now().UTC().Add(delay)
	cancelled := cancelledOutcome("cancelled", out.lines)
	err := r.commit(ctx, st, rev, owner, attempt, func(next *contracts.JobState) {
		if next.CancelRequested {
			r.ended(attempt, cancelled)(next)
			return
		}
		next.Status, next.Worker, next.Attempt, next.NextAttemptAt = contracts.StatusQueued, "", attempt, &at
		next.ExitCode, next.Reason, next.Message, next.Lines = out.exitCode, out.reason, out.message, out.lines
	})
	if errors.Is(err, state.ErrConflict) {
		d.log.Warn("job state changed while the job ran; it is not retried here")
		return r.ack(ctx, d.msg)
	}
	if err != nil {
		return fmt.Errorf("requeue for a retry: %w", err)
	}
	if st.Status == contracts.StatusCancelled {
		return r.announceCancel(ctx, d, st, attempt)
	}
	ev := r.event(d.job, attempt, contracts.EventRetrying, out.lines)
	ev.Status, ev.ExitCode, ev.Reason, ev.Message = contracts.StatusQueued, out.exitCode, out.reason, out.message
	ev.RetryInSeconds, ev.DurationMS = int((delay+time.Second-1)/time.Second), out.duration.Milliseconds()
	if err := r.events.Publish(ctx, ev); err != nil {
		// The job is queued again whatever happens; only the notice is lost.
		d.log.Warn("retrying event not published", "err", err)
	}
	r.cfg.Observer.Retried(ctx, d.job, out.reason)
	d.log.Info("job attempt failed; retrying", "attempt", attempt, "reason", out.reason, "delay", delay)
	return d.msg.NakWithDelay(delay)
}

// handBack returns a job this worker will not finish to the queue, marked
// queued again with attempt as its last attempt (so the next delivery
// starts attempt+1), delivered again after delay. A job someone asked to
// cancel ends cancelled instead.
func (r *Runner) handBack(ctx context.Context, d *delivery, st *contracts.JobState, rev uint64, running, attempt int,
	cause error, delay time.Duration) error {
	cancelled := cancelledOutcome("cancelled", st.Lines)
	err := r.commit(ctx, st, rev, r.cfg.WorkerID, running, func(next *contracts.JobState) {
		if next.CancelRequested {
			r.ended(running, cancelled)(next)
			return
		}
		next.Status, next.Worker, next.Attempt = contracts.StatusQueued, "", attempt
	})
	if errors.Is(err, state.ErrConflict) {
		d.log.Warn("job state changed while the job ran; not handed back")
		return r.ack(ctx, d.msg)
	}
	if err != nil {
		return fmt.Errorf("hand back after %w: %w", cause, err)
	}
	if st.Status == contracts.StatusCancelled {
		if n, err := r.output.LastSeq(ctx, d.job.Project, d.job.StreamID); err == nil {
			st.Lines = n
		}
		return r.announceCancel(ctx, d, st, running)
	}
	d.log.Info("job handed back to the queue", "cause", cause, "delay", delay)
	if delay > 0 {
		return d.msg.NakWithDelay(delay)
	}
	return d.msg.Nak()
}

// announceCancel publishes the cancelled event of a job whose state was
// just made final and acknowledges its message.
func (r *Runner) announceCancel(ctx context.Context, d *delivery, st *contracts.JobState, attempt int) error {
	ev := r.event(d.job, attempt, contracts.EventCancelled, st.Lines)
	ev.Reason, ev.Message = st.Reason, st.Message
	if err := r.events.Publish(ctx, ev); err != nil {
		return err
	}
	d.log.Info("job cancelled", "attempt", attempt)
	return r.ack(ctx, d.msg)
}

func (r *Runner) event(job contracts.Job, attempt int, t contracts.EventType, lines uint64) contracts.Event {
	return contracts.Event{
		V: contracts.Version, Type: t, Status: contracts.StatusOf(t), JobID: job.ID, StreamID: job.StreamID,
		Project: job.Project, Attempt: attempt, Worker: r.cfg.WorkerID, Lines: lines, Time: r.now().UTC(), BatchID: job.BatchID,
	}
}

// limit is the project's concurrency bound, 0 for none.
func (r *Runner) limit(ctx context.Context, project string) (int, error) {
	if r.limits == nil {
		return 0, nil
	}
	n, err := r.limits.MaxConcurrent(ctx, project)
	if err != nil {
		return 0, fmt.Errorf("read concurrency limit of %s: %w", project, err)
	}
	return n, nil
}

// acquireSlot leases a slot for the job when its project is bounded. It
// returns the bound (0: unbounded, nothing leased), or -1 when the project
// has no free slot.
func (r *Runner) acquireSlot(ctx context.Context, job contracts.Job) (int, error) {
	limit, err := r.limit(ctx, job.Project)
	if err != nil || limit == 0 {
		return 0, err
	}
	ok, err := r.slots.Acquire(ctx, job.Project, job.ID, limit)
	if err != nil {
		return 0, fmt.Errorf("lease a slot of %s: %w", job.Project, err)
	}
	if !ok {
		return -1, nil
	}
	return limit, nil
}

func (r *Runner) releaseSlot(ctx context.Context, job contracts.Job) {
	if err := r.slots.Release(ctx, job.Project, job.ID); err != nil {
		// The lease expires by itself.
		r.log.Warn("slot lease not released", "job_id", job.ID, "project", job.Project, "err", err)
	}
}

// heartbeat keeps the job's message from being redelivered while it runs,
// renews its slot lease, and stops the job if its state says someone
// asked to cancel it (the cancel request message may have been missed).
func (r *Runner) heartbeat(ctx context.Context, d *delivery, leased bool) (stop func()) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(r.cfg.Heartbeat)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				_ = d.msg.InProgress()
				if leased {
					if err := r.slots.Renew(ctx, d.job.Project, d.job.ID); err != nil {
						d.log.Warn("slot lease not renewed", "err", err)
					}
				}
				if st, _, err := r.states.Get(ctx, d.job.ID); err == nil && st.CancelRequested {
					d.stop(errCancelled)
				}
			case <-done:
				return
			}
		}
	}()
	return func() { close(done); <-stopped }
}
