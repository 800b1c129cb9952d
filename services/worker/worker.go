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
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/worker/internal/dispatch"
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
	// FairEvery guarantees each lower priority at least one dispatch in
	// every FairEvery while it has work; default 10.
	FairEvery int
	// AckWait is how long a job may go unacknowledged (no heartbeat) before
	// JetStream redelivers it; default 30s. Heartbeats go every AckWait/3.
	AckWait time.Duration
	// DrainTimeout is how long running jobs may finish at shutdown before
	// they are killed and handed back to the queue; default 30s.
	DrainTimeout time.Duration
	// Workspaces is the directory holding one workspace per project for
	// the local executor.
	Workspaces string
	// KillGrace is the time between SIGTERM and SIGKILL when a job is
	// stopped; default 2s.
	KillGrace time.Duration
	// OutputWindow is how many output lines may await JetStream's
	// acknowledgement per job; default 1024.
	OutputWindow int
}

func (c *Config) setDefaults() {
	if c.ID == "" {
		host, _ := os.Hostname()
		b := make([]byte, 3)
		_, _ = rand.Read(b)
		c.ID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 30 * time.Second
	}
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	if c.Workspaces == "" {
		return errors.New("worker: a workspaces directory is required")
	}
	if c.AckWait > 0 && c.AckWait < 300*time.Millisecond {
		return fmt.Errorf("worker: ack wait %s is too short (minimum 300ms)", c.AckWait)
	}
	return nil
}

// Worker runs jobs until its context ends.
type Worker struct {
	cfg    Config
	js     jetstream.JetStream
	runner *runner.Runner
	log    *slog.Logger
}

// New builds a worker on nc, which must be made with
// nats.ReconnectBufSize(-1) (see natsjs.Output), and the state bucket.
// The JetStream topology must already be provisioned (pkg/topology).
func New(cfg Config, nc *nats.Conn, state jetstream.KeyValue, log *slog.Logger) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	// A publish whose ack never comes must fail so the output writer can
	// recover; a disconnect fails pending publishes at once anyway.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("worker: jetstream: %w", err)
	}
	exec, err := localexec.New(localexec.Config{Root: filepath.Clean(cfg.Workspaces), KillGrace: cfg.KillGrace})
	if err != nil {
		return nil, fmt.Errorf("worker: local executor: %w", err)
	}
	log = log.With("worker", cfg.ID)
	out := natsjs.NewOutput(nc, js, cfg.OutputWindow)
	run := runner.New(runner.Config{WorkerID: cfg.ID, Heartbeat: cfg.AckWait / 3}, exec,
		natsjs.NewStates(state), natsjs.NewEvents(js), outputPort{out}, log)
	return &Worker{cfg: cfg, js: js, runner: run, log: log}, nil
}

// ID returns the worker's id.
func (w *Worker) ID() string { return w.cfg.ID }

// Run takes jobs until ctx ends, then stops taking them, lets running jobs
// finish within the drain timeout, and hands the rest back to the queue.
func (w *Worker) Run(ctx context.Context) error {
	consumers, err := natsjs.JobConsumers(ctx, w.js, w.cfg.AckWait)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting: nothing was taken
		}
		return err
	}
	d := dispatch.New(dispatch.Config{
		Concurrency: w.cfg.Concurrency, FairEvery: w.cfg.FairEvery, Heartbeat: w.cfg.AckWait / 3,
	}, consumers, w.log)

	runCtx, cancelRuns := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRuns()
	stop := context.AfterFunc(ctx, func() {
		w.log.Info("worker draining", "timeout", w.cfg.DrainTimeout)
		time.AfterFunc(w.cfg.DrainTimeout, cancelRuns)
	})
	defer stop()
	w.log.Info("worker started", "concurrency", w.cfg.Concurrency, "priorities", contracts.Priorities())
	d.Run(ctx, runCtx, w.runner.Handle)
	w.log.Info("worker stopped")
	return nil
}

// outputPort adapts natsjs.Output to the runner's port.
type outputPort struct{ *natsjs.Output }

func (o outputPort) Open(job contracts.Job, attempt int, firstSeq uint64) runner.LineSink {
	return o.Output.Open(job, attempt, firstSeq)
}
