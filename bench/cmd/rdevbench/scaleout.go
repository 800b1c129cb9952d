package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/bench/internal/proc"
	"github.com/rdev-dev/rdev/pkg/client"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// fairness measures the low level's share of job starts while the high
// level is saturated, with one worker (the baseline: the rule as one
// worker applies it) and with four worker processes sharing the queues,
// against the share --fair-every configures (1 in 10). Both backlogs are
// queued before any worker starts; the share is counted over the first
// half of the high backlog's worth of starts, when both levels still have
// work.
func fairness(ctx context.Context, e *env, cfg config) ([]figure, error) {
	figs := []figure{loadFigure("load average (1 min) at start")}
	const fairEvery = 10
	for _, workers := range []int{1, 4} {
		share, err := lowShare(ctx, e, cfg.fairnessJobs, workers, fairEvery)
		if err != nil {
			return figs, err
		}
		name := fmt.Sprintf("low share of starts, %d worker(s), high saturated (configured %.2f)", workers, 1/float64(fairEvery))
		figs = append(figs, target(name+": |share - configured|", abs(share-1/float64(fairEvery)), "", "<=", 0.03),
			fig(name, share, "share"))
		e.stopAll()
	}
	return figs, nil
}

func lowShare(ctx context.Context, e *env, high, workers, fairEvery int) (float64, error) {
	dir, err := e.dataDir("fairness")
	if err != nil {
		return 0, err
	}
	up, err := e.start(ctx, fmt.Sprintf("fairness-%dw-up", workers), "up", "--http-addr", "127.0.0.1:0", "--nats-addr", "127.0.0.1:0",
		"--data-dir", dir, "--without", "worker")
	if err != nil {
		return 0, err
	}
	low := high / 2
	items := make([]contracts.BatchItem, 0, high+low)
	for i := range high + low {
		p := "high"
		if i%3 == 2 {
			p = "low"
		}
		items = append(items, contracts.BatchItem{Command: []string{"true"}, SubmitOptions: contracts.SubmitOptions{Priority: p}})
	}
	r, err := postBatch(ctx, up.HTTP, "fair", items)
	if err != nil {
		return 0, err
	}
	if r.Accepted != len(items) {
		return 0, fmt.Errorf("batch accepted %d of %d", r.Accepted, len(items))
	}
	isLow := map[string]bool{}
	for _, it := range r.Items {
		isLow[it.JobID] = items[it.Index].Priority == "low"
	}
	s, err := follow(ctx, up.HTTP, r.EventsURL)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	for i := range workers {
		wdir, err := e.dataDir("fairness-worker")
		if err != nil {
			return 0, err
		}
		if _, err := e.start(ctx, fmt.Sprintf("fairness-%dw-worker%d", workers, i), "worker", "--nats-url", up.NATS,
			"--nats-nkey", seed(dir, "worker"), "--data-dir", wdir, "--concurrency", "4", "--fair-every", strconv.Itoa(fairEvery)); err != nil {
			return 0, err
		}
	}
	type start struct {
		at  time.Time
		low bool
	}
	var starts []start
	for len(starts) < len(items) {
		ev, err := s.Next()
		if err != nil {
			return 0, fmt.Errorf("batch events ended after %d starts: %w", len(starts), err)
		}
		if ev.Name == contracts.SSEComplete {
			break
		}
		if ev.Name != contracts.SSEStatus {
			continue
		}
		st, err := ev.Status()
		if err != nil {
			return 0, err
		}
		if st.Type == contracts.EventStarted {
			starts = append(starts, start{st.Time, isLow[st.JobID]})
		}
	}
	// The events of several workers arrive in the order stored; the
	// workers' own times order the decisions.
	slices.SortStableFunc(starts, func(a, b start) int { return a.at.Compare(b.at) })
	window := high / 2
	if len(starts) < window {
		return 0, fmt.Errorf("%d starts, want at least %d", len(starts), window)
	}
	lows := 0
	for _, st := range starts[:window] {
		if st.low {
			lows++
		}
	}
	return float64(lows) / float64(window), nil
}

// scaleOut measures, on a 3-node NATS cluster of nats-server processes
// with every stream and bucket at R3, what one process of each kind does
// per CPU core: jobs/s and lines/s of a worker, SSE deliveries of a
// streamer, and the cluster's JetStream publish rate at R1 and R3. CPU is
// each process's own user+system time from /proc over the measured span
// (a worker's jobs are child processes, counted apart). Baselines in the
// same run: forking `true` from this process at the worker's concurrency,
// and the R1 publish rate beside R3.
func scaleOut(ctx context.Context, e *env, cfg config) ([]figure, error) {
	figs := []figure{loadFigure("load average (1 min) at start")}
	url, _, err := startNATS(ctx, e, "scaleout", 3)
	if err != nil {
		return nil, err
	}
	payload := sampleLine(cfg.lines)
	for _, replicas := range []int{1, 3} {
		rate, err := publishRate(ctx, url, nil, replicas, cfg.scaleLines, payload)
		if err != nil {
			return figs, fmt.Errorf("publish at R%d: %w", replicas, err)
		}
		figs = append(figs, fig(fmt.Sprintf("NATS cluster: JetStream PublishAsync, R%d file stream (%d B messages)", replicas, len(payload)), rate, "msgs/s"))
		p50, err := publishLatency(ctx, url, replicas, 200, payload)
		if err != nil {
			return figs, fmt.Errorf("publish latency at R%d: %w", replicas, err)
		}
		figs = append(figs, fig(fmt.Sprintf("NATS cluster: one JetStream publish waiting for its ack, R%d, p50", replicas), ms(p50), "ms"))
	}
	args := func(cmd string, extra ...string) []string {
		return append([]string{cmd, "--nats-url", url, "--replicas", "3"}, extra...)
	}
	apiP, err := e.start(ctx, "scaleout-api", args("api", "--http-addr", "127.0.0.1:0")...)
	if err != nil {
		return figs, err
	}
	streamer, err := e.start(ctx, "scaleout-streamer", args("streamer", "--http-addr", "127.0.0.1:0")...)
	if err != nil {
		return figs, err
	}
	wdir, err := e.dataDir("scaleout-worker")
	if err != nil {
		return figs, err
	}
	worker, err := e.start(ctx, "scaleout-worker", args("worker", "--data-dir", wdir, "--concurrency", strconv.Itoa(queueConcurrency))...)
	if err != nil {
		return figs, err
	}

	// Jobs per worker core.
	forks, err := forkRate(ctx, cfg.queueJobs, queueConcurrency)
	if err != nil {
		return figs, err
	}
	if _, err := runBatchVia(ctx, apiP.HTTP, streamer.HTTP, 20); err != nil { // warm up
		return figs, err
	}
	before, err := proc.ReadCPU(worker.PID())
	if err != nil {
		return figs, err
	}
	apiBefore, err := proc.ReadCPU(apiP.PID())
	if err != nil {
		return figs, err
	}
	total, err := runBatchVia(ctx, apiP.HTTP, streamer.HTTP, cfg.queueJobs)
	if err != nil {
		return figs, err
	}
	after, err := proc.ReadCPU(worker.PID())
	if err != nil {
		return figs, err
	}
	apiAfter, err := proc.ReadCPU(apiP.PID())
	if err != nil {
		return figs, err
	}
	n := float64(cfg.queueJobs)
	figs = append(figs,
		fig("api: CPU per job submitted in a batch (own)", ms(apiAfter.Own-apiBefore.Own)/n, "ms"),
		fig("baseline: fork+exec+wait of `true` from one process, 16 at once", forks, "execs/s"),
		fig(fmt.Sprintf("worker: no-op jobs/s, batch of %d, submit to all complete", cfg.queueJobs), n/total.Seconds(), "jobs/s"),
		fig("worker: CPU per job (own)", ms(after.Own-before.Own)/n, "ms"),
		fig("worker: CPU per job (its jobs' processes)", ms(after.Children-before.Children)/n, "ms"),
		fig("worker: no-op jobs per core-second (own CPU)", n/(after.Own-before.Own).Seconds(), "jobs/s/core"))

	// Lines per worker core: one job printing as fast as it can.
	lines := cfg.scaleLines
	before, err = proc.ReadCPU(worker.PID())
	if err != nil {
		return figs, err
	}
	done, err := printJob(ctx, apiP.HTTP, streamer.HTTP, lines)
	if err != nil {
		return figs, err
	}
	after, err = proc.ReadCPU(worker.PID())
	if err != nil {
		return figs, err
	}
	dur := time.Duration(done.DurationMS) * time.Millisecond
	figs = append(figs,
		fig(fmt.Sprintf("worker: lines/s of one job printing %d lines (stored at R3)", lines), float64(lines)/dur.Seconds(), "lines/s"),
		fig("worker: lines per core-second (own CPU)", float64(lines)/(after.Own-before.Own).Seconds(), "lines/s/core"))

	// The same lines from many streams at once: each stream has one
	// publish in flight, so one stream is bound by the round trip to its
	// leader and many share the cluster. The one-stream figure above is
	// the baseline.
	streams := queueConcurrency
	before, err = proc.ReadCPU(worker.PID())
	if err != nil {
		return figs, err
	}
	span, err := printJobs(ctx, apiP.HTTP, streamer.HTTP, streams, lines/streams)
	if err != nil {
		return figs, err
	}
	after, err = proc.ReadCPU(worker.PID())
	if err != nil {
		return figs, err
	}
	all := float64(lines / streams * streams)
	figs = append(figs,
		fig(fmt.Sprintf("worker: lines/s of %d jobs printing %d lines each at once (stored at R3)", streams, lines/streams), all/span.Seconds(), "lines/s"),
		fig(fmt.Sprintf("worker: lines per core-second, %d streams (own CPU)", streams), all/(after.Own-before.Own).Seconds(), "lines/s/core"))

	// Single submits, one job per request, from 16 clients at once; the
	// batch figure above (the same jobs, one request) is the baseline.
	apiBefore, err = proc.ReadCPU(apiP.PID())
	if err != nil {
		return figs, err
	}
	singles := cfg.queueJobs / 5
	rate, lat, err := submitSingles(ctx, apiP.HTTP, singles, queueConcurrency)
	if err != nil {
		return figs, err
	}
	apiAfter, err = proc.ReadCPU(apiP.PID())
	if err != nil {
		return figs, err
	}
	figs = append(figs,
		fig(fmt.Sprintf("api: single submits/s, %d no-op jobs from %d clients", singles, queueConcurrency), rate, "jobs/s"),
		fig("api: single submit p50", ms(lat[len(lat)/2]), "ms"),
		fig("api: single submit p99", ms(lat[len(lat)*99/100]), "ms"),
		fig("api: CPU per single submit (own)", ms(apiAfter.Own-apiBefore.Own)/float64(singles), "ms"),
		fig("api: single submits per core-second (own CPU)", float64(singles)/(apiAfter.Own-apiBefore.Own).Seconds(), "jobs/s/core"))
	// One client, one submit at a time: the latency of a submit on an R3
	// cluster without queueing behind other submits, once the worker has
	// run the jobs above (their writes would share the cluster with it).
	if err := awaitIdle(ctx, apiP.HTTP, "bench", 5*time.Minute); err != nil {
		return figs, err
	}
	figs = append(figs, loadFigure("load average (1 min) before the one-client submits"))
	_, lat, err = submitSingles(ctx, apiP.HTTP, 200, 1)
	if err != nil {
		return figs, err
	}
	figs = append(figs,
		fig("api: single submit p50, one client", ms(lat[len(lat)/2]), "ms"),
		fig("api: single submit p99, one client", ms(lat[len(lat)*99/100]), "ms"))

	// SSE deliveries per streamer core: clients follow one printing job.
	clients := cfg.scaleClients
	sb, err := proc.ReadCPU(streamer.PID())
	if err != nil {
		return figs, err
	}
	span, err = fanOut(ctx, apiP.HTTP, streamer.HTTP, clients, cfg.scaleFanLines)
	if err != nil {
		return figs, err
	}
	sa, err := proc.ReadCPU(streamer.PID())
	if err != nil {
		return figs, err
	}
	mem, err := proc.ReadMem(streamer.PID())
	if err != nil {
		return figs, err
	}
	deliveries := float64(clients * cfg.scaleFanLines)
	figs = append(figs,
		fig(fmt.Sprintf("streamer: SSE deliveries/s, %d clients on one job of %d lines", clients, cfg.scaleFanLines), deliveries/span.Seconds(), "lines/s"),
		fig("streamer: deliveries per core-second (own CPU)", deliveries/(sa.Own-sb.Own).Seconds(), "lines/s/core"),
		fig(fmt.Sprintf("streamer: RSS with %d clients", clients), float64(mem.RSS)/(1<<20), "MiB"))

	// The one-client submits again with no worker: above, the worker runs
	// each job while the next submit is in flight, and its writes and
	// process start share the cores and the cluster with it. The
	// difference is what running the jobs costs a lone submit.
	worker.Stop()
	_, lat, err = submitSingles(ctx, apiP.HTTP, 200, 1)
	if err != nil {
		return figs, err
	}
	figs = append(figs,
		fig("api: single submit p50, one client, no worker running", ms(lat[len(lat)/2]), "ms"),
		fig("api: single submit p99, one client, no worker running", ms(lat[len(lat)*99/100]), "ms"),
		loadFigure("load average (1 min) at end"))
	return figs, nil
}

// printJob runs `seq 1 lines` and reads its stream through the streamer to
// the complete event.
func printJob(ctx context.Context, apiBase, streamBase string, lines int) (contracts.Event, error) {
	a, err := submit(ctx, apiBase, "bench", []string{"seq", "1", strconv.Itoa(lines)}, time.Hour)
	if err != nil {
		return contracts.Event{}, err
	}
	s, err := follow(ctx, streamBase, a.EventsURL)
	if err != nil {
		return contracts.Event{}, err
	}
	defer s.Close()
	for {
		ev, err := s.Next()
		if err != nil {
			return contracts.Event{}, fmt.Errorf("stream ended before complete: %w", err)
		}
		if ev.Name == contracts.SSEComplete {
			return checkComplete(ev, uint64(lines))
		}
	}
}

// publishLatency publishes n messages one at a time, each waiting for
// its ack, to a fresh stream of the given replicas and returns the p50:
// the floor under a submit, which waits for two stored writes in a row.
func publishLatency(ctx context.Context, url string, replicas, n int, payload []byte) (time.Duration, error) {
	nc, err := nats.Connect(url, nats.Name("rdevbench-latency"))
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, err
	}
	const name = "RDEVBENCH_LATENCY"
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{"bench.latency"}, Storage: jetstream.FileStorage, Replicas: replicas}); err != nil {
		return 0, err
	}
	defer js.DeleteStream(context.WithoutCancel(ctx), name)
	lat := make([]time.Duration, n)
	for i := range n {
		t0 := time.Now()
		if _, err := js.Publish(ctx, "bench.latency", payload); err != nil {
			return 0, err
		}
		lat[i] = time.Since(t0)
	}
	slices.Sort(lat)
	return lat[n/2], nil
}

// printJobs runs n jobs of `seq 1 lines` at once and returns the time
// from the first submit to the last complete event, each stream checked
// for every line.
func printJobs(ctx context.Context, apiBase, streamBase string, n, lines int) (time.Duration, error) {
	var wg sync.WaitGroup
	errs := make([]error, n)
	t0 := time.Now()
	for i := range n {
		wg.Go(func() { _, errs[i] = printJob(ctx, apiBase, streamBase, lines) })
	}
	wg.Wait()
	return time.Since(t0), errors.Join(errs...)
}

// awaitIdle waits until project has no queued or running job.
func awaitIdle(ctx context.Context, base, project string, limit time.Duration) error {
	c := api(base, adminKey)
	deadline := time.Now().Add(limit)
	for {
		busy := false
		for _, st := range []contracts.Status{contracts.StatusQueued, contracts.StatusRunning} {
			l, err := c.ListJobs(ctx, project, client.JobFilter{Status: st}, client.Page{Limit: 1})
			if err != nil {
				return fmt.Errorf("list %s jobs: %w", st, err)
			}
			busy = busy || len(l.Jobs) > 0
		}
		if !busy {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("project %s still has jobs queued or running after %v", project, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// submitSingles submits n no-op jobs one per request from conc clients at
// once and returns the rate of accepted submits and every submit's
// latency, sorted. The jobs run meanwhile, as they would.
func submitSingles(ctx context.Context, base string, n, conc int) (float64, []time.Duration, error) {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		lat  = make([]time.Duration, 0, n)
		next = make(chan struct{})
		errs = make([]error, conc)
	)
	t0 := time.Now()
	for i := range conc {
		wg.Go(func() {
			for range next {
				s := time.Now()
				if _, err := submit(ctx, base, "bench", []string{"true"}, time.Minute); err != nil {
					errs[i] = err
					continue
				}
				d := time.Since(s)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		})
	}
	for range n {
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	rate := float64(n) / time.Since(t0).Seconds()
	if err := errors.Join(errs...); err != nil {
		return 0, nil, err
	}
	slices.Sort(lat)
	return rate, lat, nil
}

// fanOut starts a job printing lines lines slowly enough for clients to
// connect first, has clients follow it from the start, and returns the
// time from the first line any client read to the last line of the last.
func fanOut(ctx context.Context, apiBase, streamBase string, clients, lines int) (time.Duration, error) {
	// The job sleeps before printing, so every client is connected when
	// the lines come.
	a, err := submit(ctx, apiBase, "bench", []string{"sh", "-c", "sleep 2; seq 1 " + strconv.Itoa(lines)}, time.Hour)
	if err != nil {
		return 0, err
	}
	var (
		mu          sync.Mutex
		first, last time.Time
		wg          sync.WaitGroup
		errs        = make([]error, clients)
	)
	for i := range clients {
		wg.Go(func() {
			s, err := api(streamBase, adminKey).Follow(ctx, a.EventsURL, client.FollowOptions{MaxReconnects: -1})
			if err != nil {
				errs[i] = err
				return
			}
			defer s.Close()
			got := 0
			for {
				ev, err := s.Next()
				if err != nil {
					errs[i] = fmt.Errorf("client %d: stream ended after %d lines: %w", i, got, err)
					return
				}
				if ev.Name == contracts.SSEOutput {
					got++
					if got == 1 {
						mu.Lock()
						if first.IsZero() || time.Now().Before(first) {
							first = time.Now()
						}
						mu.Unlock()
					}
				}
				if ev.Name == contracts.SSEComplete {
					if got != lines {
						errs[i] = fmt.Errorf("client %d: %d lines, want %d", i, got, lines)
					}
					mu.Lock()
					last = time.Now()
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	return last.Sub(first), nil
}

// forkRate runs `true` n times from this process, conc at once: the cost
// of the processes a worker starts, without rdev.
func forkRate(ctx context.Context, n, conc int) (float64, error) {
	var wg sync.WaitGroup
	jobs := make(chan struct{})
	errs := make([]error, conc)
	t0 := time.Now()
	for i := range conc {
		wg.Go(func() {
			for range jobs {
				if err := exec.CommandContext(ctx, "true").Run(); err != nil && errs[i] == nil {
					errs[i] = err
				}
			}
		})
	}
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(t0).Seconds(), nil
}

// startNATS builds nats-server from the module rdev embeds, starts n
// processes of it on loopback (n > 1: one JetStream cluster), stopped
// with the scenario, and returns their client URLs, comma separated, and
// their pids, once JetStream answers.
func startNATS(ctx context.Context, e *env, name string, n int) (string, []int, error) {
	root, err := repoRoot()
	if err != nil {
		return "", nil, err
	}
	bin := filepath.Join(e.tmp, "nats-server")
	b := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/nats-io/nats-server/v2")
	b.Dir, b.Stderr = filepath.Join(root, "cmd", "rdev"), os.Stderr
	if err := b.Run(); err != nil {
		return "", nil, fmt.Errorf("build nats-server: %w", err)
	}
	ports, err := freePorts(2 * n)
	if err != nil {
		return "", nil, err
	}
	var routes, clients []string
	for i := range n {
		routes = append(routes, "nats://127.0.0.1:"+strconv.Itoa(ports[n+i]))
		clients = append(clients, "nats://127.0.0.1:"+strconv.Itoa(ports[i]))
	}
	var pids []int
	for i := range n {
		logf, err := os.Create(filepath.Join(e.logs, fmt.Sprintf("%s-nats-n%d.log", name, i)))
		if err != nil {
			return "", nil, err
		}
		args := []string{"-a", "127.0.0.1", "-p", strconv.Itoa(ports[i]), "-js", "-sd", filepath.Join(e.tmp, fmt.Sprintf("n%d", i)),
			"--server_name", fmt.Sprintf("n%d", i)}
		if n > 1 {
			args = append(args, "--cluster_name", "rdevbench", "--cluster", routes[i], "--routes", strings.Join(routes, ","))
		}
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			logf.Close()
			return "", nil, err
		}
		pids = append(pids, cmd.Process.Pid)
		e.cleanup = append(e.cleanup, func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
			logf.Close()
		})
	}
	url := strings.Join(clients, ",")
	deadline := time.Now().Add(time.Minute)
	for {
		err := jetStreamReady(ctx, url)
		if err == nil {
			return url, pids, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return "", nil, fmt.Errorf("NATS not ready within a minute: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func jetStreamReady(ctx context.Context, url string) error {
	nc, err := nats.Connect(url)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = js.AccountInfo(actx)
	return err
}

func loadFigure(name string) figure {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return fig(name+" (unreadable)", 0, "")
	}
	v, _ := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	return fig(name, v, "")
}

func abs(v float64) float64 { return max(v, -v) }

// freePorts returns n loopback TCP ports free at the time of the call.
func freePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
