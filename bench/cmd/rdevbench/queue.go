package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/rdev-dev/rdev/bench/internal/proc"
	"github.com/rdev-dev/rdev/pkg/client"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// queueConcurrency is the jobs each rdev worker and the asynq server run
// at once.
const queueConcurrency = 16

// throughputE2E measures jobs per second end to end — one batch submit of
// N no-op jobs (`true`) to every job complete — with one and with two rdev
// workers, and in the same run asynq (a Go + Redis job queue) running N
// tasks whose handler execs the same `true` against a local Redis with
// the same concurrency, so both systems do the same work per job. It also
// reports how long the batch submit of N jobs held the API.
func throughputE2E(ctx context.Context, e *env, cfg config) ([]figure, error) {
	n := cfg.queueJobs
	var figs []figure
	rates := map[int]float64{}
	cpu := map[int]jobCPU{}
	for _, workers := range []int{1, 2} {
		dir, err := e.dataDir("e2e")
		if err != nil {
			return nil, err
		}
		up, err := e.start(ctx, fmt.Sprintf("e2e-%dw-up", workers), "up", "--http-addr", "127.0.0.1:0", "--nats-addr", "127.0.0.1:0",
			"--data-dir", dir, "--concurrency", fmt.Sprint(queueConcurrency))
		if err != nil {
			return nil, err
		}
		pids := []int{up.PID(), os.Getpid()} // rdevbench: the submitting and following client
		for i := 1; i < workers; i++ {
			wdir, err := e.dataDir("e2e-worker")
			if err != nil {
				return nil, err
			}
			w, err := e.start(ctx, fmt.Sprintf("e2e-%dw-worker%d", workers, i), "worker", "--nats-url", up.NATS, "--nats-nkey", seed(dir, "worker"),
				"--data-dir", wdir, "--concurrency", fmt.Sprint(queueConcurrency))
			if err != nil {
				return nil, err
			}
			pids = append(pids, w.PID())
		}
		// Warm up: one small batch, so the project, consumers and caches exist.
		if _, _, err := runBatch(ctx, up.HTTP, 20); err != nil {
			return nil, err
		}
		before, err := readCPUs(pids)
		if err != nil {
			return nil, err
		}
		submitted, total, err := runBatch(ctx, up.HTTP, n)
		if err != nil {
			return nil, err
		}
		after, err := readCPUs(pids)
		if err != nil {
			return nil, err
		}
		rates[workers] = float64(n) / total.Seconds()
		cpu[workers] = perJob(before, after, 0, n, total)
		figs = append(figs, fig(fmt.Sprintf("rdev, %d worker(s): jobs/s, batch submit to all complete", workers), rates[workers], "jobs/s"))
		figs = append(figs, cpu[workers].figures(fmt.Sprintf("rdev, %d worker(s)", workers), "job")...)
		figs = append(figs, loadFigure(fmt.Sprintf("load average after the %d-worker run", workers)))
		if workers == 1 {
			figs = append(figs, fig(fmt.Sprintf("batch submit of %d jobs (202 after all durable)", n), ms(submitted), "ms"))
			// Counted apart, after the timed run: the tap slows the server.
			counted, err := countedBatch(ctx, up.NATS, dir, up.HTTP, min(n, 1000))
			if err != nil {
				return nil, fmt.Errorf("count writes: %w", err)
			}
			figs = append(figs, counted...)
		}
		e.stopAll()
	}
	asynqRate, acpu, err := asynqMeasured(ctx, e, n)
	if err != nil {
		return nil, err
	}
	figs = append(figs, acpu.asynqFigures(asynqRate)...)
	figs = append(figs,
		target("rdev 1 worker / asynq", rates[1]/asynqRate, "x", ">=", 1.5),
		target("rdev 2 workers / asynq", rates[2]/asynqRate, "x", ">=", 1.5),
		fig("rdev 2 workers / 1 worker", rates[2]/rates[1], "x"),
		fig("CPU per job besides the command: rdev 1 worker / asynq", cpu[1].own.Seconds()/acpu.own.Seconds(), "x"),
		// When the machine is the limit, jobs/s is cores over CPU per job;
		// rdev spending nothing of its own would reach this multiple of
		// asynq's rate, whatever else it does.
		fig("rdev / asynq if rdev's own CPU per job were zero (CPU-bound)", (acpu.own+acpu.command).Seconds()/cpu[1].command.Seconds(), "x"),
		loadFigure("load average after asynq"))
	return figs, nil
}

// asynqMeasured runs n tasks through asynq on a fresh redis-server and
// returns its tasks/s and CPU per task (its client and server run in
// rdevbench, so its CPU is rdevbench's own plus redis-server's).
func asynqMeasured(ctx context.Context, e *env, n int) (float64, jobCPU, error) {
	sock, err := startRedis(ctx, e)
	if err != nil {
		return 0, jobCPU{}, err
	}
	rc := redis.NewClient(&redis.Options{Network: "unix", Addr: sock})
	defer rc.Close()
	redisBefore, err := redisCPU(ctx, rc)
	if err != nil {
		return 0, jobCPU{}, err
	}
	before, err := readCPUs([]int{os.Getpid()}) // the `true`s are its children
	if err != nil {
		return 0, jobCPU{}, err
	}
	rate, took, err := asynqRun(ctx, sock, n)
	if err != nil {
		return 0, jobCPU{}, fmt.Errorf("asynq: %w", err)
	}
	after, err := readCPUs([]int{os.Getpid()})
	if err != nil {
		return 0, jobCPU{}, err
	}
	redisAfter, err := redisCPU(ctx, rc)
	if err != nil {
		return 0, jobCPU{}, err
	}
	return rate, perJob(before, after, redisAfter-redisBefore, n, took), nil
}

// asynqFigures reports asynq's rate and its CPU per task c.
func (c jobCPU) asynqFigures(rate float64) []figure {
	return append([]figure{fig("asynq, 1 server: tasks/s, enqueue to all processed (handler execs `true`)", rate, "tasks/s")},
		c.figures("asynq (redis-server included)", "task")...)
}

// jobCPU is the processor time a run cost per job, and how busy it kept
// the machine.
type jobCPU struct {
	own     time.Duration // the queue's processes (and the bench client), per job
	command time.Duration // the jobs' own processes (`true`), per job
	busy    float64       // all of it over the run's wall time and the cores
}

// perJob divides the CPU used between two readings by n jobs; extra is
// CPU of a process not read from /proc (redis-server's, from INFO).
func perJob(before, after cpuTotals, extra time.Duration, n int, wall time.Duration) jobCPU {
	own := after.own - before.own + extra
	cmd := after.children - before.children
	return jobCPU{own: own / time.Duration(n), command: cmd / time.Duration(n),
		busy: (own + cmd).Seconds() / wall.Seconds() / float64(runtime.NumCPU())}
}

func (c jobCPU) figures(who, unit string) []figure {
	return []figure{
		fig(who+": CPU per "+unit+" of its own (user + system)", ms(c.own), "ms"),
		fig(who+": CPU per "+unit+" of the command (`true`, exec and run)", ms(c.command), "ms"),
		fig(who+": machine busy (CPU / wall time / cores)", c.busy, "x"),
	}
}

// cpuTotals is the processor time of some processes, and of the children
// they waited for.
type cpuTotals struct{ own, children time.Duration }

func readCPUs(pids []int) (cpuTotals, error) {
	var t cpuTotals
	for _, pid := range pids {
		c, err := proc.ReadCPU(pid)
		if err != nil {
			return t, err
		}
		t.own += c.Own
		t.children += c.Children
	}
	return t, nil
}

// redisCPU is the processor time redis-server has used (INFO cpu).
func redisCPU(ctx context.Context, rc *redis.Client) (time.Duration, error) {
	info, err := rc.InfoMap(ctx, "cpu").Result()
	if err != nil {
		return 0, fmt.Errorf("redis INFO cpu: %w", err)
	}
	var total float64
	for _, f := range []string{"used_cpu_sys", "used_cpu_user"} {
		v, err := strconv.ParseFloat(info["CPU"][f], 64)
		if err != nil {
			return 0, fmt.Errorf("redis INFO cpu %s: %w", f, err)
		}
		total += v
	}
	return time.Duration(total * float64(time.Second)), nil
}

// runBatch submits n no-op jobs in one batch and waits for the batch's
// complete event; it returns how long the submit took and the total.
func runBatch(ctx context.Context, base string, n int) (submit, total time.Duration, err error) {
	return runBatchOn(ctx, base, base, n)
}

// runBatchVia is runBatch through an api and a streamer of their own; it
// returns the total.
func runBatchVia(ctx context.Context, apiBase, streamBase string, n int) (time.Duration, error) {
	_, total, err := runBatchOn(ctx, apiBase, streamBase, n)
	return total, err
}

func runBatchOn(ctx context.Context, base, streamBase string, n int) (submit, total time.Duration, err error) {
	items := make([]contracts.BatchItem, n)
	for i := range items {
		items[i] = contracts.BatchItem{Command: []string{"true"}}
	}
	t0 := time.Now()
	r, err := postBatch(ctx, base, "bench", items)
	if err != nil {
		return 0, 0, err
	}
	submit = time.Since(t0)
	if r.Accepted != n {
		return 0, 0, fmt.Errorf("batch accepted %d of %d jobs: %+v", r.Accepted, n, r.Items[:min(len(r.Items), 3)])
	}
	s, err := follow(ctx, streamBase, r.EventsURL)
	if err != nil {
		return 0, 0, err
	}
	defer s.Close()
	for {
		ev, err := s.Next()
		if err != nil {
			return 0, 0, fmt.Errorf("batch events ended before complete: %w", err)
		}
		if ev.Name == contracts.SSEComplete {
			done, err := ev.BatchComplete()
			if err != nil {
				return 0, 0, err
			}
			if done.Counts[contracts.StatusSucceeded] != n {
				return 0, 0, fmt.Errorf("batch ended with %v, want %d succeeded", done.Counts, n)
			}
			return submit, time.Since(t0), nil
		}
	}
}

// postBatch submits a batch to project, creating the project on first use.
func postBatch(ctx context.Context, base, project string, items []contracts.BatchItem) (contracts.BatchResponse, error) {
	c := api(base, adminKey)
	r, err := c.SubmitBatch(ctx, project, items, false)
	if client.IsCode(err, "project_not_found") {
		if err = createProject(ctx, base, contracts.ProjectRequest{ID: project}); err == nil {
			r, err = c.SubmitBatch(ctx, project, items, false)
		}
	}
	if err != nil {
		return r, fmt.Errorf("batch: %w", err)
	}
	return r, nil
}

// asynqRun enqueues n tasks and processes them with one asynq server of
// queueConcurrency whose handler execs `true`; it returns tasks/s from the
// first enqueue to the last task done, and that time.
func asynqRun(ctx context.Context, sock string, n int) (float64, time.Duration, error) {
	opt := asynq.RedisClientOpt{Network: "unix", Addr: sock}
	var done atomic.Int64
	finished := make(chan struct{})
	mux := asynq.NewServeMux()
	mux.HandleFunc("noop", func(ctx context.Context, _ *asynq.Task) error {
		if err := exec.CommandContext(ctx, "true").Run(); err != nil {
			return err
		}
		if done.Add(1) == int64(n) {
			close(finished)
		}
		return nil
	})
	srv := asynq.NewServer(opt, asynq.Config{Concurrency: queueConcurrency, LogLevel: asynq.ErrorLevel})
	c := asynq.NewClient(opt)
	defer c.Close()
	t0 := time.Now()
	if err := srv.Start(mux); err != nil {
		return 0, 0, err
	}
	defer srv.Shutdown()
	for i := range n {
		if _, err := c.EnqueueContext(ctx, asynq.NewTask("noop", []byte(fmt.Sprint(i)))); err != nil {
			return 0, 0, err
		}
	}
	select {
	case <-finished:
	case <-time.After(10 * time.Minute):
		return 0, 0, fmt.Errorf("%d of %d tasks done after 10 minutes", done.Load(), n)
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
	took := time.Since(t0)
	return float64(n) / took.Seconds(), took, nil
}

// priorityLatency measures how long high-priority jobs wait to start
// (submitted → started, from their events) while 10,000 low-priority no-op
// jobs are queued ahead of them, as a ratio of the same on an idle queue,
// measured in the same run on the same node. The worker runs with its
// defaults (one slot kept for high priority: --high-slots); RDEV_HIGH_SLOTS
// and RDEV_JOB_NICE in rdevbench's environment reach it.
func priorityLatency(ctx context.Context, e *env, cfg config) ([]figure, error) {
	load := loadFigure("load average (1 min) at start")
	dir, err := e.dataDir("priority")
	if err != nil {
		return nil, err
	}
	up, err := e.start(ctx, "priority-up", "up", "--http-addr", "127.0.0.1:0", "--nats-addr", "127.0.0.1:0",
		"--data-dir", dir, "--concurrency", fmt.Sprint(cfg.priorityConc))
	if err != nil {
		return nil, err
	}
	probe := func(k int) ([]time.Duration, error) {
		var out []time.Duration
		for range k {
			a, err := submitPrio(ctx, up.HTTP, "high")
			if err != nil {
				return nil, err
			}
			d, err := dispatchDelay(ctx, up.HTTP, a.EventsURL)
			if err != nil {
				return nil, err
			}
			out = append(out, d)
		}
		slices.Sort(out)
		return out, nil
	}
	if _, err := probe(10); err != nil { // warm up
		return nil, err
	}
	idle, err := probe(cfg.priorityProbes)
	if err != nil {
		return nil, err
	}
	// Queue the low jobs in batches of 1,000 (each submit waits for
	// durability), then probe while they drain.
	items := make([]contracts.BatchItem, 1000)
	for i := range items {
		items[i] = contracts.BatchItem{Command: []string{"true"}, SubmitOptions: contracts.SubmitOptions{Priority: "low"}}
	}
	var wg sync.WaitGroup
	var qerr error
	wg.Go(func() {
		for range cfg.priorityBacklog / 1000 {
			if _, err := postBatch(ctx, up.HTTP, "bench", items); err != nil {
				qerr = fmt.Errorf("low batch: %w", err)
				return
			}
		}
	})
	wg.Wait()
	if qerr != nil {
		return nil, qerr
	}
	// What the low level gets meanwhile: the other side of the trade.
	lowBefore, err := lowWaiting(ctx, up.HTTP)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	busy, err := probe(cfg.priorityProbes)
	if err != nil {
		return nil, err
	}
	lowAfter, err := lowWaiting(ctx, up.HTTP)
	if err != nil {
		return nil, err
	}
	if lowAfter == 0 {
		return nil, fmt.Errorf("the %d low jobs drained before the busy probes ended: raise -priority-backlog", cfg.priorityBacklog)
	}
	lowRate := float64(lowBefore-lowAfter) / time.Since(start).Seconds()
	ratio := float64(pct(busy, 99)) / float64(pct(idle, 99))
	return []figure{
		load,
		fig("worker concurrency", float64(cfg.priorityConc), "slots"),
		fig("high-priority dispatch p50, idle queue", ms(pct(idle, 50)), "ms"),
		fig(fmt.Sprintf("high-priority dispatch p50, %d low jobs queued", cfg.priorityBacklog), ms(pct(busy, 50)), "ms"),
		fig("high-priority dispatch p99, idle queue", ms(pct(idle, 99)), "ms"),
		fig(fmt.Sprintf("high-priority dispatch p99, %d low jobs queued", cfg.priorityBacklog), ms(pct(busy, 99)), "ms"),
		target("p99 ratio busy / idle", ratio, "x", "<=", 2),
		fig("low jobs run per second during the busy probes", lowRate, "jobs/s"),
		loadFigure("load average (1 min) at end"),
	}, nil
}

// lowWaiting returns how many low jobs wait in the queue.
func lowWaiting(ctx context.Context, base string) (int, error) {
	ql, err := api(base, adminKey).Queues(ctx)
	if err != nil {
		return 0, fmt.Errorf("queues: %w", err)
	}
	for _, q := range ql.Queues {
		if q.Priority == contracts.PriorityLow {
			return q.Waiting, nil
		}
	}
	return 0, errors.New("queues: no low level")
}

func submitPrio(ctx context.Context, base, priority string) (contracts.SubmitResponse, error) {
	return submitAs(ctx, base, adminKey, "bench", contracts.CommandRequest{Command: []string{"true"},
		SubmitOptions: contracts.SubmitOptions{Priority: priority}})
}

// dispatchDelay reads a job's stream and returns started.time -
// queued.time, both stamped by rdev (API and worker on this machine).
func dispatchDelay(ctx context.Context, base, url string) (time.Duration, error) {
	s, err := follow(ctx, base, url)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	var queued time.Time
	for {
		e, err := s.Next()
		if err != nil {
			return 0, fmt.Errorf("stream ended before started: %w", err)
		}
		if e.Name != contracts.SSEStatus {
			continue
		}
		ev, err := e.Status()
		if err != nil {
			return 0, err
		}
		switch ev.Type {
		case contracts.EventQueued:
			queued = ev.Time
		case contracts.EventStarted:
			if queued.IsZero() {
				return 0, errors.New("started before queued")
			}
			return ev.Time.Sub(queued), nil
		}
	}
}
