// Package worker is rdev's job runner service: it pulls jobs from the
// prioritized JetStream consumers, runs them through an executor and
// publishes every output line and lifecycle event. Run as many workers as
// needed against one NATS; they share the work.
package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/contracts/seal"
	"github.com/rdev-dev/rdev/pkg/state"
	"k8s.io/client-go/rest"

	"github.com/rdev-dev/rdev/services/worker/internal/dispatch"
	"github.com/rdev-dev/rdev/services/worker/internal/executor"
	"github.com/rdev-dev/rdev/services/worker/internal/k8sexec"
	"github.com/rdev-dev/rdev/services/worker/internal/localexec"
	"github.com/rdev-dev/rdev/services/worker/internal/natsjs"
	"github.com/rdev-dev/rdev/services/worker/internal/runner"
)

// Config tunes a worker. Zero values take the documented defaults.
type Config struct {
	// ID names the worker in job state and events; default host-pid-random.
	ID string
	// Concurrency is how many jobs run at once; default 4.
	Concurrency int
	// HighSlots is how many run slots, beyond Concurrency, only
	// high-priority jobs may use: a high job then starts as soon as it is
	// fetched even while lower ones fill every Concurrency slot, instead
	// of waiting for one to free. 0 keeps none; rdev's --high-slots
	// defaults to DefaultHighSlots.
	HighSlots int
	// FairEvery guarantees each lower priority at least one dispatch in
	// every FairEvery while it has work; default 10.
	FairEvery int
	// PrioritySlots caps how many jobs of the priorities listed run at
	// once on this worker (1 or more each), whatever slots are free: the
	// other levels take the rest. Capping low keeps CPU free for the
	// higher levels, which may still fill every slot; a capped level's
	// fair share is what its cap allows.
	PrioritySlots map[contracts.Priority]int
	// AckWait is how long a job may go unacknowledged (no heartbeat) before
	// JetStream redelivers it; default 30s. Heartbeats go every AckWait/3.
	AckWait time.Duration
	// DrainTimeout is how long running jobs may finish at shutdown before
	// they are killed and handed back to the queue; default 30s.
	DrainTimeout time.Duration
	// Workspaces is the directory holding one workspace per project for
	// the local executor.
	Workspaces string
	// JobEnv is the environment ("KEY=value") every job of the local
	// executor starts from, in place of localexec's minimal default; the
	// wiring puts the worker's PATH and the variables named for
	// passthrough here. Nothing else of the worker's environment reaches
	// jobs.
	JobEnv []string
	// JobHome is HOME for jobs of the local executor; "" is the project's
	// workspace.
	JobHome string
	// JobUser, when set, is the uid and gid local jobs run as (see
	// localexec.Config.User); nil runs them as the worker's own user.
	JobUser *JobUser
	// JobNice is added to the worker's niceness for local jobs of the
	// priorities listed (0 to 19 each, or JobNiceIdle), so that when the
	// CPU is short the system's own work and higher-priority jobs get it
	// first (see localexec.Config.Nice). The Kubernetes executor ignores
	// it: CPU between pods is a matter of their requests and limits.
	JobNice map[contracts.Priority]int
	// SecretsKey is the 32-byte key project secrets are sealed with (the
	// API's); without one a job that references a secret fails to start.
	SecretsKey []byte
	// KillGrace is the time between SIGTERM and SIGKILL when a job is
	// stopped; default 2s.
	KillGrace time.Duration
	// OutputWindow is how many output lines may await JetStream's
	// acknowledgement per job; default 1024.
	OutputWindow int
	// OutputLinger is how long a job printing steadily gathers its lines
	// before the next publish, so that a few share one instead of each
	// costing a publish and its round trip; a line after a quiet spell is
	// published at once. Default natsjs.DefaultLinger (5ms); negative
	// publishes whenever the last publish has ended.
	OutputLinger time.Duration
	// Executor selects where commands run: ExecutorLocal (default) or
	// ExecutorKubernetes.
	Executor string
	// Kubernetes configures the Kubernetes executor.
	Kubernetes KubernetesConfig
	// UnavailableDelay is how long a job waits in the queue before it is
	// tried again when the executor's backend (the Kubernetes API) is
	// unavailable; default 5s.
	UnavailableDelay time.Duration
	// RetryBase and RetryCap shape the exponential backoff with full
	// jitter between attempts of a job: the delay after attempt n is
	// uniform in [0, min(RetryCap, RetryBase·2^(n-1))]; defaults 1s, 5m.
	RetryBase, RetryCap time.Duration
	// SlotDelay is how long a job whose project runs its max_concurrent_jobs
	// already waits in the queue before it is offered again; default 500ms.
	SlotDelay time.Duration
	// SlotLease is how long a project slot stays leased to a job whose
	// worker stopped renewing it (it renews at every heartbeat); default
	// 4 heartbeats (AckWait·4/3).
	SlotLease time.Duration

	// exec and jitter replace the executor and the backoff's jitter in
	// tests (export_test.go).
	exec   executor.Executor
	jitter func() float64
}

// Defaults of Config: what a zero field means, and the defaults of
// rdev's flags.
const (
	DefaultConcurrency      = 4
	DefaultFairEvery        = 10
	DefaultHighSlots        = 1
	DefaultAckWait          = 30 * time.Second
	DefaultDrainTimeout     = 30 * time.Second
	DefaultKillGrace        = 2 * time.Second
	DefaultExecutor         = ExecutorLocal
	DefaultRetryBase        = time.Second
	DefaultRetryCap         = 5 * time.Minute
	DefaultSlotDelay        = 500 * time.Millisecond
	DefaultUnavailableDelay = 5 * time.Second
	DefaultKubeQPS          = 20
	DefaultKubeBurst        = 40
	DefaultPodReadyTimeout  = 2 * time.Minute
)

// The executors a worker can use.
const (
	ExecutorLocal      = "local"
	ExecutorKubernetes = "kubernetes"
)

// JobNiceIdle as a JobNice value runs a priority's local jobs in Linux's
// SCHED_IDLE class: they get only CPU nothing else wants.
const JobNiceIdle = localexec.NiceIdle

// JobUser is a uid and gid to run local jobs as.
type JobUser struct {
	UID, GID uint32
}

// KubernetesConfig configures the Kubernetes executor: each job runs in its
// project's pod. Zero values take the documented defaults.
type KubernetesConfig struct {
	// Kubeconfig lists kubeconfig files (KUBECONFIG syntax); "" uses the
	// in-cluster configuration.
	Kubeconfig string
	// REST, when set, is used instead of Kubeconfig (tests, embedding).
	REST *rest.Config
	// Namespace holds the project pods; default the kubeconfig context's
	// or service account's namespace, else "default".
	Namespace string
	// PodTemplate is a YAML file with the Pod created for a project that
	// has none; "" uses k8sexec.DefaultPodTemplate.
	PodTemplate string
	// CreatePods lets the worker create missing project pods.
	CreatePods bool
	// Workspace is the workspace directory inside the container; default
	// /workspace.
	Workspace string
	// QPS and Burst limit the worker's API requests; defaults 20 and 40.
	QPS   float32
	Burst int
	// ReadyTimeout bounds the wait for a pod to become Ready; default 2m.
	ReadyTimeout time.Duration
	// BreakerFailures consecutive API failures open the circuit breaker
	// (default 5) for BreakerOpenFor (default 10s).
	BreakerFailures uint32
	BreakerOpenFor  time.Duration
	// OnBreakerChange, when set, is told each breaker state change
	// ("closed", "open", "half-open"); for tests and metrics.
	OnBreakerChange func(from, to string)
}

func (c *Config) setDefaults() {
	if c.ID == "" {
		host, _ := os.Hostname()
		b := make([]byte, 3)
		_, _ = rand.Read(b)
		c.ID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
	}
	setDefault(&c.Concurrency, DefaultConcurrency)
	setDefault(&c.FairEvery, DefaultFairEvery)
	setDefault(&c.AckWait, DefaultAckWait)
	setDefault(&c.DrainTimeout, DefaultDrainTimeout)
	setDefault(&c.KillGrace, DefaultKillGrace)
	setDefault(&c.RetryBase, DefaultRetryBase)
	setDefault(&c.RetryCap, DefaultRetryCap)
	setDefault(&c.SlotDelay, DefaultSlotDelay)
	setDefault(&c.UnavailableDelay, DefaultUnavailableDelay)
	setDefault(&c.Kubernetes.QPS, DefaultKubeQPS)
	setDefault(&c.Kubernetes.Burst, DefaultKubeBurst)
	setDefault(&c.Kubernetes.ReadyTimeout, DefaultPodReadyTimeout)
	if c.Executor == "" {
		c.Executor = DefaultExecutor
	}
	if c.SlotLease <= 0 {
		c.SlotLease = c.AckWait * 4 / 3
	}
}

// setDefault sets a zero or negative *v to def.
func setDefault[T int | float32 | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	switch c.Executor {
	case "", ExecutorLocal:
		if c.Workspaces == "" {
			return errors.New("worker: a workspaces directory is required")
		}
	case ExecutorKubernetes:
		if c.Kubernetes.QPS < 0 || c.Kubernetes.Burst < 0 {
			return errors.New("worker: kubernetes QPS and burst must not be negative")
		}
	default:
		return fmt.Errorf("worker: unknown executor %q (want %s or %s)", c.Executor, ExecutorLocal, ExecutorKubernetes)
	}
	if c.HighSlots < 0 {
		return errors.New("worker: high slots must not be negative")
	}
	if err := CheckPrioritySlots(c.PrioritySlots); err != nil {
		return fmt.Errorf("worker: priority slots: %w", err)
	}
	if c.RetryBase < 0 || c.RetryCap < 0 || c.SlotDelay < 0 || c.SlotLease < 0 {
		return errors.New("worker: retry base, retry cap, slot delay and slot lease must not be negative")
	}
	if c.SlotLease > 0 && c.AckWait > 0 && c.SlotLease <= c.AckWait/3 {
		return fmt.Errorf("worker: slot lease %s must outlast a heartbeat (ack wait / 3)", c.SlotLease)
	}
	if c.AckWait > 0 && c.AckWait < 300*time.Millisecond {
		return fmt.Errorf("worker: ack wait %s is too short (minimum 300ms)", c.AckWait)
	}
	return nil
}

// CheckPrioritySlots reports the first problem with a
// Config.PrioritySlots: an unknown priority, or fewer than one slot.
func CheckPrioritySlots(slots map[contracts.Priority]int) error {
	for p, n := range slots {
		if _, err := contracts.ParsePriority(string(p)); err != nil || p == "" {
			return fmt.Errorf("unknown priority %q (want high, normal or low)", p)
		}
		if n < 1 {
			return fmt.Errorf("%s=%d: want 1 slot or more (pause a level to stop it)", p, n)
		}
	}
	return nil
}

// levelSlots is slots by priority as dispatch.Config.LevelSlots: by level
// index, highest first, 0 for no cap.
func levelSlots(slots map[contracts.Priority]int) []int {
	if len(slots) == 0 {
		return nil
	}
	levels := contracts.Priorities()
	out := make([]int, len(levels))
	for i, p := range levels {
		out[i] = slots[p]
	}
	return out
}

// Deps are what the process builds once and the worker uses.
type Deps struct {
	// Conn must be made with nats.ReconnectBufSize(-1) (see
	// natsjs.Output); the JetStream topology must be provisioned
	// (pkg/topology).
	Conn *nats.Conn
	// State is the contracts.BucketState bucket.
	State jetstream.KeyValue
	// High, when set, is a connection of its own for the highest
	// priority level: its pulls and acknowledgements, and the state
	// writes (claim, end) of its jobs. They then do not queue behind the
	// lower levels' traffic on Conn and on State's connection, which held
	// a high job's claim up to 12 ms while 10,000 low jobs drained
	// (performance.md). Nil keeps every level on Conn and State.
	High *nats.Conn
	// Projects, when set, are the project records: per-project
	// concurrency limits and pod settings. Nil applies none.
	Projects Projects
	Log      *slog.Logger
	// Telemetry says where spans and metrics go; default nowhere.
	Telemetry Telemetry
}

// Projects is what the worker reads of the access bucket: project records
// only (natskv.Projects), because its NATS user may read nothing else
// there.
type Projects interface {
	// Project returns a project or an error wrapping access.ErrNotFound.
	Project(ctx context.Context, id string) (access.Project, error)
	// WatchProjects calls fn with the id of every project changed after
	// it returns, until ctx ends.
	WatchProjects(ctx context.Context, fn func(id string)) error
}

// Worker runs jobs between Start and Shutdown.
type Worker struct {
	cfg      Config
	nc       *nats.Conn
	js       jetstream.JetStream
	state    jetstream.KeyValue
	high     *highLane // nil without Deps.High
	projects Projects
	tel      Telemetry
	exec     executor.Executor
	out      *natsjs.Output
	log      *slog.Logger
	in       *instruments
	// health is what readiness checks besides NATS.
	health health
	// pods hands the Kubernetes executor the project records Start opens.
	pods *projectPods
	// running counts the jobs being handled, for Waiting.
	running atomic.Int64

	mu          sync.Mutex
	stopped     bool
	done        chan struct{} // closed when the dispatcher has stopped; nil before Start
	stopTaking  context.CancelFunc
	cancelRuns  context.CancelFunc
	controlSubs []*nats.Subscription
}

// New builds a worker; Start makes it take jobs.
func New(cfg Config, deps Deps) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Conn == nil || deps.State == nil || deps.Log == nil {
		return nil, errors.New("worker: a NATS connection, the state bucket and a logger are required")
	}
	cfg.setDefaults()
	nc, state, log := deps.Conn, deps.State, deps.Log
	// A publish whose ack never comes must fail so the output writer can
	// recover; a disconnect fails pending publishes at once anyway.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("worker: jetstream: %w", err)
	}
	log = log.With("worker", cfg.ID)
	in, err := newInstruments(deps.Telemetry)
	if err != nil {
		return nil, fmt.Errorf("worker: metrics: %w", err)
	}
	var high *highLane
	if deps.High != nil {
		if high, err = newHighLane(deps.High); err != nil {
			return nil, err
		}
	}
	w := &Worker{high: high, cfg: cfg, nc: nc, js: js, state: state, projects: deps.Projects, tel: deps.Telemetry, log: log, in: in, pods: &projectPods{}}
	cfg.Kubernetes.OnBreakerChange = w.health.watchBreaker(cfg.Kubernetes.OnBreakerChange)
	exec := cfg.exec
	if exec == nil {
		if exec, err = newExecutor(cfg, w.pods, log); err != nil {
			return nil, err
		}
	}
	w.exec = execSpans{exec, in.tracer}
	w.out = natsjs.NewOutput(nc, js, cfg.OutputWindow)
	if cfg.OutputLinger != 0 {
		w.out.SetLinger(cfg.OutputLinger)
	}
	return w, nil
}

// newRunner builds the job runner, with the per-project limits read from
// the project records (watched until ctx ends).
func (w *Worker) newRunner(ctx context.Context) (*runner.Runner, error) {
	var limits runner.Limits
	if w.projects == nil {
		w.log.Warn("no project records: per-project concurrency limits and pod settings are not applied")
	} else {
		l, err := natsjs.NewLimits(ctx, w.projects, w.log)
		if err != nil {
			return nil, fmt.Errorf("worker: %w", err)
		}
		limits = l
		w.pods.limits.Store(l)
	}
	var secrets runner.Secrets
	if w.cfg.SecretsKey != nil {
		box, err := seal.New(w.cfg.SecretsKey)
		if err != nil {
			return nil, fmt.Errorf("worker: secrets key: %w", err)
		}
		kv, err := w.js.KeyValue(ctx, contracts.BucketSecrets)
		if err != nil {
			return nil, fmt.Errorf("worker: secrets bucket: %w", err)
		}
		secrets = natsjs.NewSecrets(kv, box)
	}
	c := w.cfg
	store := state.New(w.state)
	var jobStates runner.States = store.Jobs
	if w.high != nil {
		var err error
		if jobStates, err = w.high.states(ctx, store.Jobs); err != nil {
			return nil, err
		}
	}
	return runner.New(runner.Config{
		WorkerID: c.ID, Heartbeat: c.AckWait / 3, UnavailableDelay: c.UnavailableDelay,
		RetryBase: c.RetryBase, RetryCap: c.RetryCap, SlotDelay: c.SlotDelay, Jitter: c.jitter, Observer: w.in,
	}, runner.Ports{
		Exec: w.exec, States: states{jobStates, w.in}, Events: natsjs.NewEvents(w.js), Output: outputPort{w.out, w.in},
		Dead: natsjs.NewDeadLetters(w.js), Slots: natsjs.NewSlots(store.Slots, c.SlotLease), Limits: limits,
		Batches: store.Batches, Holders: natsjs.NewHolders(w.nc, w.cfg.ID, time.Second), Secrets: secrets,
	}, w.log), nil
}

// newExecutor builds the executor cfg selects; the Kubernetes executor
// reads the projects' pod settings from pods.
func newExecutor(cfg Config, pods k8sexec.ProjectPods, log *slog.Logger) (executor.Executor, error) {
	if cfg.Executor != ExecutorKubernetes {
		exec, err := localexec.New(localexec.Config{Root: filepath.Clean(cfg.Workspaces), KillGrace: cfg.KillGrace,
			BaseEnv: cfg.JobEnv, Home: cfg.JobHome, User: (*localexec.User)(cfg.JobUser), Nice: cfg.JobNice})
		if err != nil {
			return nil, fmt.Errorf("worker: local executor: %w", err)
		}
		return exec, nil
	}
	k := cfg.Kubernetes
	rc, ns := k.REST, ""
	if rc == nil {
		var err error
		if rc, ns, err = k8sexec.RESTConfig(k8sexec.ClientConfig{Kubeconfig: k.Kubeconfig, QPS: k.QPS, Burst: k.Burst}); err != nil {
			return nil, fmt.Errorf("worker: %w", err)
		}
	}
	if k.Namespace != "" {
		ns = k.Namespace
	}
	if ns == "" {
		ns = "default"
	}
	ecfg := k8sexec.Config{
		Namespace: ns, CreatePods: k.CreatePods, Workspace: k.Workspace, ReadyTimeout: k.ReadyTimeout,
		KillGrace: cfg.KillGrace, BreakerFailures: k.BreakerFailures, BreakerOpenFor: k.BreakerOpenFor,
		OnBreakerChange: k.OnBreakerChange, Projects: pods,
		Log: log.With("executor", ExecutorKubernetes),
	}
	if k.PodTemplate != "" {
		tmpl, err := k8sexec.LoadPodTemplate(k.PodTemplate)
		if err != nil {
			return nil, fmt.Errorf("worker: %w", err)
		}
		ecfg.PodTemplate = tmpl
	}
	exec, err := k8sexec.New(ecfg, rc)
	if err != nil {
		return nil, fmt.Errorf("worker: kubernetes executor: %w", err)
	}
	log.Info("kubernetes executor configured", "host", rc.Host, "namespace", ns, "create_pods", k.CreatePods,
		"pod_template", k.PodTemplate)
	return exec, nil
}

// projectPods is the Kubernetes executor's k8sexec.ProjectPods. The
// executor is built in New, the project records it reads (natsjs.Limits)
// are opened in Start; until then, and when there is no access bucket,
// pods are created from the template as it is.
type projectPods struct {
	limits atomic.Pointer[natsjs.Limits]
}

func (p *projectPods) PodSettings(ctx context.Context, project string) (access.PodSettings, error) {
	l := p.limits.Load()
	if l == nil {
		return access.PodSettings{}, nil
	}
	return l.PodSettings(ctx, project)
}

// ID returns the worker's id.
func (w *Worker) ID() string { return w.cfg.ID }

// Start subscribes to cancel requests and starts taking jobs; it returns
// once the worker takes them. They are taken until Shutdown.
func (w *Worker) Start(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done != nil || w.stopped {
		return nil
	}
	// Lives until the dispatcher stops: running jobs still need it while
	// draining.
	life, end := context.WithCancel(context.WithoutCancel(ctx))
	run, err := w.newRunner(life)
	if err == nil {
		err = w.subscribeControl(run)
	}
	var consumers []jetstream.Consumer
	if err == nil {
		consumers, err = natsjs.JobConsumers(ctx, w.js, w.cfg.AckWait)
	}
	if err == nil && w.high != nil {
		consumers[0], err = w.high.consumer(ctx)
	}
	var unregister func()
	if err == nil {
		if unregister, err = w.in.registerGauges(w.tel.MeterProvider, w.js, w.cfg.Concurrency, w.cfg.HighSlots, w.cfg.PrioritySlots); err != nil {
			err = fmt.Errorf("worker: queue metrics: %w", err)
		}
	}
	if err != nil {
		w.unsubscribe()
		end()
		return err
	}
	d := dispatch.New(dispatch.Config{
		Concurrency: w.cfg.Concurrency, HighSlots: w.cfg.HighSlots, FairEvery: w.cfg.FairEvery, Heartbeat: w.cfg.AckWait / 3,
		LevelSlots: levelSlots(w.cfg.PrioritySlots),
	}, consumers, w.log)
	// Paused levels are not dispatched, from the first dispatch on.
	err = natsjs.WatchPauses(life, w.js, func(p contracts.Priority, paused bool) {
		if i := slices.Index(contracts.Priorities(), p); i >= 0 {
			d.Pause(i, paused)
		}
	})
	if err != nil {
		unregister()
		w.unsubscribe()
		end()
		return fmt.Errorf("worker: %w", err)
	}
	take, stopTaking := context.WithCancel(life)
	runCtx, cancelRuns := context.WithCancel(life)
	w.stopTaking, w.cancelRuns, w.done = stopTaking, cancelRuns, make(chan struct{})
	w.in.zero(ctx)
	w.log.Info("worker started", "concurrency", w.cfg.Concurrency, "high_slots", w.cfg.HighSlots, "priorities", contracts.Priorities())
	go func(done chan struct{}) {
		defer close(done)
		defer end()
		defer unregister()
		defer w.unsubscribe()
		d.Run(take, runCtx, w.count(w.in.handler(natsjs.Deliveries(run.Handle))))
		w.log.Info("worker stopped")
	}(w.done)
	return nil
}

// count keeps w.running while next handles a job.
func (w *Worker) count(next dispatch.Handler) dispatch.Handler {
	return func(ctx context.Context, msg jetstream.Msg) {
		w.running.Add(1)
		defer w.running.Add(-1)
		next(ctx, msg)
	}
}

// Shutdown stops taking jobs, lets running jobs finish within the drain
// timeout, and hands the rest back to the queue. When ctx ends first (a
// forced stop) it cancels the running jobs and returns at once; JetStream
// redelivers whatever was not handed back.
func (w *Worker) Shutdown(ctx context.Context) error {
	w.mu.Lock()
	first := !w.stopped
	w.stopped = true
	done := w.done
	w.mu.Unlock()
	if done == nil {
		return nil // never started
	}
	if first {
		w.health.draining.Store(true)
		w.log.Info("worker draining", "timeout", w.cfg.DrainTimeout)
		w.stopTaking()
		time.AfterFunc(w.cfg.DrainTimeout, w.cancelRuns)
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		w.cancelRuns()
		return fmt.Errorf("worker: %w", ctx.Err())
	}
}

// Waiting says how many jobs Shutdown waits for.
func (w *Worker) Waiting() string {
	if n := w.running.Load(); n > 0 {
		return fmt.Sprintf("%d running jobs", n)
	}
	return ""
}

func (w *Worker) unsubscribe() {
	for _, sub := range w.controlSubs {
		_ = sub.Unsubscribe()
	}
	w.controlSubs = nil
}

// subscribeControl makes run stop any job it runs that someone cancels,
// and answer other workers asking whether it holds a job. The
// subscriptions are in place (flushed to the server) before the first
// job is claimed, so a cancel request published after a claim finds it.
func (w *Worker) subscribeControl(run *runner.Runner) error {
	cancels, err := w.nc.Subscribe(contracts.SubjectCancelPrefix+".*", func(m *nats.Msg) {
		jobID := strings.TrimPrefix(m.Subject, contracts.SubjectCancelPrefix+".")
		if run.Cancel(jobID) {
			w.log.Info("cancel requested; stopping the job", "job_id", jobID)
		}
	})
	if err != nil {
		return fmt.Errorf("worker: subscribe to cancel requests: %w", err)
	}
	w.controlSubs = append(w.controlSubs, cancels)
	holds, err := w.nc.Subscribe(contracts.SubjectHoldsPrefix+".*", func(m *nats.Msg) {
		if run.Holds(strings.TrimPrefix(m.Subject, contracts.SubjectHoldsPrefix+"."), string(m.Data)) {
			_ = m.Respond([]byte("1"))
		}
	})
	if err != nil {
		return fmt.Errorf("worker: subscribe to holder questions: %w", err)
	}
	w.controlSubs = append(w.controlSubs, holds)
	if err := w.nc.Flush(); err != nil {
		return fmt.Errorf("worker: subscribe to control messages: %w", err)
	}
	return nil
}

// outputPort adapts natsjs.Output to the runner's port.
type outputPort struct {
	*natsjs.Output
	in *instruments
}

func (o outputPort) Open(job contracts.Job, attempt int, firstSeq uint64) runner.LineSink {
	return &sink{LineSink: o.Output.Open(job, attempt, firstSeq), in: o.in}
}
