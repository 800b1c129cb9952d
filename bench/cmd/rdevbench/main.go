// Command rdevbench measures rdev against the targets of its performance
// issue: submit-to-first-line latency, output throughput, worker and
// streamer memory under 1 GiB of output, the memory cost of idle SSE
// connections, and the cost of the command-line client. It builds the
// rdev binary, runs real rdev processes on free ports with temporary data
// directories, prints a table of figures with their targets and writes
// the same as JSON (bench/results/latest.json).
//
// Every figure is measured in the run that reports it, and every ratio or
// overhead uses a baseline measured in the same run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/rdev-dev/rdev/bench/internal/proc"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The SSE scenarios run copies of rdevbench as clients and baselines
	// (child).
	if ok, err := child(ctx, os.Args[1:]); ok {
		if err != nil {
			fmt.Fprintln(os.Stderr, "rdevbench", os.Args[1]+":", err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "rdevbench:", err)
		os.Exit(1)
	}
}

// config is every flag; -quick changes the defaults of the size flags.
type config struct {
	rdev            string
	quick           bool
	only            string
	out             string
	latencyRuns     int
	latencyWarmup   int
	lines           int
	cliRuns         int
	cliWarmup       int
	memBytes        int64
	idleConns       int
	idleStreams     int
	authRequests    int
	queueJobs       int
	priorityProbes  int
	priorityBacklog int
	priorityConc    int
	webhookEvents   int
	webhookRate     int
	delayedJobs     int
	delayedWaiting  int
	fairnessJobs    int
	scaleLines      int
	scaleClients    int
	scaleFanLines   int
	fanClients      int
	fanRate         int
	fanSatRate      int
	fanSeconds      int
	stormClients    int
	stormStreams    int
	scaleQueued     int
	scaleStreams    int
	scaleWindow     time.Duration
	lineJobs        int
	lineLines       int
	lineRate        int
}

func parse(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("rdevbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.rdev, "rdev", "", "use this rdev binary instead of building ./cmd/rdev")
	fs.BoolVar(&c.quick, "quick", false, "smoke run: smaller defaults for every scenario (flags set explicitly win)")
	fs.StringVar(&c.only, "only", "latency,throughput,memory,idle,auth,tracing,e2e,priority,cli,webhooks,delayed,batchget", "scenarios to run, comma separated")
	fs.StringVar(&c.out, "out", "", "JSON results file (default <repo>/bench/results/latest.json)")
	fs.IntVar(&c.latencyRuns, "latency-runs", 300, "latency: measured runs (-quick 50)")
	fs.IntVar(&c.latencyWarmup, "latency-warmup", 20, "latency: warm-up runs, not measured (-quick 5)")
	fs.IntVar(&c.lines, "lines", 1_000_000, "throughput and cli (rdev logs): lines printed by the command (-quick 100000)")
	fs.IntVar(&c.cliRuns, "cli-runs", 200, "cli: measured `rdev run -- echo hi` processes (-quick 30)")
	fs.IntVar(&c.cliWarmup, "cli-warmup", 10, "cli: warm-up runs, not measured (-quick 3)")
	fs.Int64Var(&c.memBytes, "mem-bytes", 1<<30, "memory: bytes of output (-quick 64 MiB)")
	fs.IntVar(&c.idleConns, "idle-conns", 1000, "idle: SSE connections to open (-quick 200)")
	fs.IntVar(&c.idleStreams, "idle-streams", 10, "idle: sleeping jobs the connections spread over")
	fs.IntVar(&c.authRequests, "auth-requests", 20_000, "auth and tracing: submits per configuration and round (tracing: half; -quick 3000)")
	fs.IntVar(&c.queueJobs, "queue-jobs", 10_000, "e2e, batchget and floor: no-op jobs per run, rdev and asynq (-quick 1000)")
	fs.IntVar(&c.priorityProbes, "priority-probes", 300, "priority: high-priority jobs timed idle and busy; p99 of 100 is one probe (-quick 30)")
	fs.IntVar(&c.priorityBacklog, "priority-backlog", 10_000, "priority: low-priority jobs queued ahead (multiple of 1000)")
	fs.IntVar(&c.priorityConc, "priority-concurrency", queueConcurrency, "priority: the worker's --concurrency")
	fs.IntVar(&c.webhookEvents, "webhook-events", 10_000, "webhooks: terminal events per run, paced and burst (-quick 2000)")
	fs.IntVar(&c.webhookRate, "webhook-rate", 1000, "webhooks: events a second of the paced run")
	fs.IntVar(&c.delayedJobs, "delayed-jobs", 10_000, "delayed: jobs due in the same second (-quick 1000)")
	fs.IntVar(&c.delayedWaiting, "delayed-waiting", 100_000, "delayed: delayed jobs waiting while the CPU is measured (-quick 10000)")
	fs.IntVar(&c.fairnessJobs, "fairness-jobs", 2000, "fairness: high-priority jobs queued (and half as many low) (-quick 600)")
	fs.IntVar(&c.scaleLines, "scale-lines", 200_000, "scaleout: messages per publish run and lines of the printing job (-quick 50000)")
	fs.IntVar(&c.scaleClients, "scale-clients", 200, "scaleout: SSE clients following one job (-quick 50)")
	fs.IntVar(&c.scaleFanLines, "scale-fan-lines", 5000, "scaleout: lines of the job the SSE clients follow (-quick 2000)")
	fs.IntVar(&c.fanClients, "fan-clients", 1000, "fanout: SSE clients of one stream, and of 10 streams together (multiple of 10; -quick 200)")
	fs.IntVar(&c.fanRate, "fan-rate", 1000, "fanout: lines a second of the latency run")
	fs.IntVar(&c.fanSatRate, "fan-sat-rate", 3000, "fanout: lines a second of the saturation run")
	fs.IntVar(&c.fanSeconds, "fan-seconds", 15, "fanout: seconds each run prints (-quick 5)")
	fs.IntVar(&c.stormClients, "storm-clients", 20_000, "storm: SSE clients connecting at once over two streamers (-quick 2000)")
	fs.IntVar(&c.stormStreams, "storm-streams", 200, "storm: live jobs the clients follow (-quick 50)")
	fs.IntVar(&c.scaleQueued, "scale-queued", 100_000, "scale: no-op jobs queued before a worker drains them (-quick 10000)")
	fs.IntVar(&c.scaleStreams, "scale-streams", 10_000, "scale: streams followed at once, one SSE client each (-quick 1000)")
	fs.DurationVar(&c.scaleWindow, "scale-window", time.Minute, "scale: how long the worker's rate on the deep queue is measured (-quick 15s)")
	fs.IntVar(&c.lineJobs, "linecpu-jobs", 10, "linecpu: jobs printing at once")
	fs.IntVar(&c.lineLines, "linecpu-lines", 10_000, "linecpu: lines each job prints (-quick 2000)")
	fs.IntVar(&c.lineRate, "linecpu-rate", 1000, "linecpu: lines a second each job prints")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		quick := map[string]func(){
			"latency-runs":    func() { c.latencyRuns = 50 },
			"latency-warmup":  func() { c.latencyWarmup = 5 },
			"lines":           func() { c.lines = 100_000 },
			"cli-runs":        func() { c.cliRuns = 30 },
			"cli-warmup":      func() { c.cliWarmup = 3 },
			"mem-bytes":       func() { c.memBytes = 64 << 20 },
			"idle-conns":      func() { c.idleConns = 200 },
			"auth-requests":   func() { c.authRequests = 3000 },
			"queue-jobs":      func() { c.queueJobs = 1000 },
			"priority-probes": func() { c.priorityProbes = 30 },
			"webhook-events":  func() { c.webhookEvents = 2000 },
			"delayed-jobs":    func() { c.delayedJobs = 1000 },
			"delayed-waiting": func() { c.delayedWaiting = 10_000 },
			"fairness-jobs":   func() { c.fairnessJobs = 600 },
			"scale-lines":     func() { c.scaleLines = 50_000 },
			"scale-clients":   func() { c.scaleClients = 50 },
			"scale-fan-lines": func() { c.scaleFanLines = 2000 },
			"fan-clients":     func() { c.fanClients = 200 },
			"fan-seconds":     func() { c.fanSeconds = 5 },
			"storm-clients":   func() { c.stormClients = 2000 },
			"storm-streams":   func() { c.stormStreams = 50 },
			"scale-queued":    func() { c.scaleQueued = 10_000 },
			"scale-streams":   func() { c.scaleStreams = 1000 },
			"scale-window":    func() { c.scaleWindow = 15 * time.Second },
			"linecpu-lines":   func() { c.lineLines = 2000 },
		}
		for name, apply := range quick {
			if !set[name] {
				apply()
			}
		}
	}
	for _, s := range strings.Split(c.only, ",") {
		if !slices.Contains(scenarioNames, s) {
			return c, fmt.Errorf("-only: unknown scenario %q (want some of %s)", s, strings.Join(scenarioNames, ","))
		}
	}
	if c.cliRuns < 1 || c.cliWarmup < 0 {
		return c, errors.New("-cli-runs must be positive, -cli-warmup not negative")
	}
	if c.latencyRuns < 1 || c.lines < 1 || c.memBytes < 1 || c.idleConns < 1 || c.idleStreams < 1 || c.authRequests < 1 || c.queueJobs < 1 ||
		c.priorityProbes < 1 || c.priorityBacklog < 1000 || c.priorityConc < 1 || c.webhookEvents < 1 || c.webhookRate < 1 ||
		c.delayedJobs < 1 || c.delayedJobs > 10_000 || c.delayedWaiting < 1 ||
		c.fairnessJobs < 20 || c.scaleLines < 1 || c.scaleClients < 1 || c.scaleClients > 5000 || c.scaleFanLines < 1 ||
		c.fanClients < 10 || c.fanClients%10 != 0 || c.fanRate < 1 || c.fanSatRate < 1 || c.fanSeconds < 1 ||
		c.stormClients < 2 || c.stormStreams < 1 || c.stormStreams > 2000 ||
		c.scaleQueued < 1 || c.scaleStreams < 1 || c.scaleStreams > 15_000 || c.scaleWindow <= 0 ||
		c.lineJobs < 1 || c.lineLines < 1 || c.lineRate < 1 {
		return c, errors.New("sizes must be positive")
	}
	return c, nil
}

var scenarioNames = []string{"latency", "throughput", "memory", "idle", "auth", "tracing", "e2e", "priority", "cli", "webhooks", "delayed", "fairness", "scaleout", "fanout", "batchget", "storm", "scale", "basemem", "linecpu", "floor", "latencyfloor"}

// env is what every scenario shares.
type env struct {
	bin     string // the rdev binary
	tmp     string // the running scenario's data directories live here
	logs    string // process logs go here
	started []*proc.Process
	// cleanup stops helpers that are not rdev processes (redis-server).
	cleanup []func()
}

// start runs one rdev process, stopped when the run ends.
// seed is the nkey seed file `rdev up --data-dir dir` writes for role:
// its embedded NATS server admits no anonymous client.
func seed(dir, role string) string { return filepath.Join(dir, "nats", role+".nk") }

func (e *env) start(ctx context.Context, name string, args ...string) (*proc.Process, error) {
	p, err := proc.Start(ctx, name, e.bin, filepath.Join(e.logs, name+".log"), args...)
	if err != nil {
		return nil, err
	}
	e.started = append(e.started, p)
	return p, nil
}

// dataDir returns a fresh directory under the run's temporary directory.
func (e *env) dataDir(name string) (string, error) { return os.MkdirTemp(e.tmp, name+"-") }

// stopAll stops every process still running, newest first (workers and
// streamers before the server they connect to).
func (e *env) stopAll() {
	for i := len(e.started) - 1; i >= 0; i-- {
		e.started[i].Stop()
	}
	e.started = nil
	for _, c := range e.cleanup {
		c()
	}
	e.cleanup = nil
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	cfg, err := parse(args, os.Stderr)
	if err != nil {
		return err
	}
	// Every rdev process started inherits the admin key submit sends.
	if err := os.Setenv("RDEV_BOOTSTRAP_API_KEY", adminKey); err != nil {
		return err
	}
	root, err := repoRoot()
	if err != nil {
		return err
	}
	if cfg.out == "" {
		cfg.out = filepath.Join(root, "bench", "results", "latest.json")
	}
	tmp, err := os.MkdirTemp("/tmp", "rdevbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	e := &env{bin: cfg.rdev, logs: filepath.Join(filepath.Dir(cfg.out), "logs")}
	defer e.stopAll()
	if err := os.MkdirAll(e.logs, 0o755); err != nil {
		return err
	}
	if e.bin == "" {
		e.bin = filepath.Join(tmp, "rdev")
		fmt.Fprintln(stdout, "building ./cmd/rdev ...")
		b := exec.CommandContext(ctx, "go", "build", "-o", e.bin, "./cmd/rdev")
		b.Dir, b.Stdout, b.Stderr = root, os.Stderr, os.Stderr
		if err := b.Run(); err != nil {
			return fmt.Errorf("build rdev: %w", err)
		}
	}

	start := time.Now()
	rep := newReport(cfg, root)
	fmt.Fprintf(stdout, "%s\nmachine: %s\nprocess logs: %s\n\n", rep.Command, rep.Machine, e.logs)
	scenarios := map[string]func(context.Context, *env, config) ([]figure, error){
		"cli":     cliCost,
		"latency": latency, "throughput": throughput, "memory": memory, "idle": idle, "auth": authCost, "tracing": tracingCost,
		"e2e": throughputE2E, "priority": priorityLatency, "webhooks": webhooks, "delayed": delayedJobs,
		"fairness": fairness, "scaleout": scaleOut, "fanout": fanout, "batchget": batchGet, "storm": storm, "scale": scale,
		"basemem": basemem, "linecpu": lineCPU, "floor": jetStreamFloor, "latencyfloor": latencyFloor,
	}
	selected := strings.Split(cfg.only, ",")
	for _, name := range scenarioNames {
		if !slices.Contains(selected, name) {
			continue
		}
		fmt.Fprintf(stdout, "running %s ...\n", name)
		t0 := time.Now()
		// Each scenario's data goes when it ends: the memory scenario
		// leaves gigabytes of stored output.
		e.tmp = filepath.Join(tmp, name)
		if err := os.Mkdir(e.tmp, 0o755); err != nil {
			return err
		}
		figs, err := scenarios[name](ctx, e, cfg)
		e.stopAll()
		if rerr := os.RemoveAll(e.tmp); rerr != nil && err == nil {
			err = rerr
		}
		rep.add(name, figs, err)
		if err != nil {
			fmt.Fprintf(stdout, "  %s failed after %s: %v\n", name, time.Since(t0).Round(time.Millisecond), err)
		} else {
			fmt.Fprintf(stdout, "  done in %s\n", time.Since(t0).Round(time.Millisecond))
		}
		if ctx.Err() != nil {
			break
		}
	}
	rep.Duration = time.Since(start).Round(time.Second).String()
	fmt.Fprintln(stdout)
	rep.print(stdout)
	if err := rep.write(cfg.out); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "\nwrote", cfg.out)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if len(rep.Errors) > 0 {
		return fmt.Errorf("%d scenario(s) failed", len(rep.Errors))
	}
	return nil
}

// repoRoot walks up from the working directory to the one holding go.work.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.work in the working directory or above it: run from the rdev repository")
		}
		dir = parent
	}
}
