package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/bench/internal/proc"
	"github.com/rdev-dev/rdev/pkg/client"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// scaleBatch is the largest batch the API takes (jobs.MaxBatchItems).
const scaleBatch = 10_000

// scaleLinesEach is what each watched job of the many-streams phase
// prints.
const scaleLinesEach = 10

// scale measures how cost grows with the work, each process of its own
// against one nats-server process:
//
//   - A deep queue: cfg.scaleQueued no-op jobs queued before any worker
//     runs (the memory of NATS and the api holding them), then one
//     worker draining them for cfg.scaleWindow: jobs/s at that depth.
//     Baseline in the same run: the same worker draining a batch of
//     2,000 on an otherwise empty queue.
//   - Many streams: cfg.scaleStreams queued jobs printing scaleLinesEach
//     lines each, every stream followed by one SSE client connected
//     before its job runs; the memory of the streamer and NATS with all
//     of them open, and every client getting every line once.
func scale(ctx context.Context, e *env, cfg config) ([]figure, error) {
	figs := []figure{loadFigure("load average (1 min) at start")}
	url, pids, err := startNATS(ctx, e, "scale", 1)
	if err != nil {
		return nil, err
	}
	natsPID := pids[0]
	apiP, err := e.start(ctx, "scale-api", "api", "--nats-url", url, "--http-addr", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	streamer, err := e.start(ctx, "scale-streamer", "streamer", "--nats-url", url, "--http-addr", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	startWorker := func(name string) (*proc.Process, error) {
		dir, err := e.dataDir(name)
		if err != nil {
			return nil, err
		}
		return e.start(ctx, name, "worker", "--nats-url", url, "--data-dir", dir, "--concurrency", strconv.Itoa(queueConcurrency))
	}
	nc, err := nats.Connect(url, nats.Name("rdevbench-scale"))
	if err != nil {
		return figs, err
	}
	defer nc.Close()
	var ended atomic.Int64
	sub, err := nc.Subscribe(contracts.SubjectEventsPrefix+".bench.*."+string(contracts.EventSucceeded), func(*nats.Msg) { ended.Add(1) })
	if err != nil {
		return figs, err
	}
	defer sub.Unsubscribe()
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return figs, err
	}
	mem := func(pid int) float64 {
		m, err := proc.ReadMem(pid)
		if err != nil {
			return -1
		}
		return float64(m.RSS) / mib
	}
	figs = append(figs, fig("nats-server VmRSS, empty", mem(natsPID), "MiB"), fig("api VmRSS, empty", mem(apiP.PID()), "MiB"))

	// Baseline: a shallow queue.
	worker, err := startWorker("scale-worker")
	if err != nil {
		return figs, err
	}
	if _, err := runBatchVia(ctx, apiP.HTTP, streamer.HTTP, 100); err != nil { // warm up
		return figs, err
	}
	shallow, err := runBatchVia(ctx, apiP.HTTP, streamer.HTTP, 2000)
	if err != nil {
		return figs, err
	}
	figs = append(figs, fig("baseline: jobs/s draining a batch of 2000, queue otherwise empty", 2000/shallow.Seconds(), "jobs/s"))
	worker.Stop()

	// The deep queue, with no worker running.
	queued := cfg.scaleQueued
	items := make([]contracts.BatchItem, scaleBatch)
	for i := range items {
		items[i] = contracts.BatchItem{Command: []string{"true"}}
	}
	t0 := time.Now()
	for n := 0; n < queued; n += scaleBatch {
		r, err := postBatch(ctx, apiP.HTTP, "bench", items[:min(scaleBatch, queued-n)])
		if err != nil {
			return figs, err
		}
		if r.Rejected > 0 {
			return figs, fmt.Errorf("batch at %d: %d jobs refused", n, r.Rejected)
		}
	}
	figs = append(figs,
		fig(fmt.Sprintf("submit of %d jobs in batches of %d, no worker running", queued, scaleBatch), float64(queued)/time.Since(t0).Seconds(), "jobs/s"),
		fig(fmt.Sprintf("nats-server VmRSS, %d jobs queued", queued), mem(natsPID), "MiB"),
		fig(fmt.Sprintf("api VmRSS after submitting %d jobs", queued), mem(apiP.PID()), "MiB"))

	worker, err = startWorker("scale-worker-deep")
	if err != nil {
		return figs, err
	}
	// The window starts at the first job done, not at the worker's start.
	base := ended.Load()
	if err := waitUntil(ctx, time.Minute, func() bool { return ended.Load() > base }); err != nil {
		return figs, fmt.Errorf("deep queue: no job done within a minute of the worker's start")
	}
	from, t1 := ended.Load(), time.Now()
	select {
	case <-time.After(cfg.scaleWindow):
	case <-ctx.Done():
		return figs, ctx.Err()
	}
	done := ended.Load() - from
	figs = append(figs,
		fig(fmt.Sprintf("jobs/s draining the %d-job queue (first %s)", queued, cfg.scaleWindow), float64(done)/time.Since(t1).Seconds(), "jobs/s"),
		fig(fmt.Sprintf("worker VmRSS after %s draining", cfg.scaleWindow), mem(worker.PID()), "MiB"),
		fig("nats-server VmRSS while draining", mem(natsPID), "MiB"),
		fig("api VmRSS while draining", mem(apiP.PID()), "MiB"))
	// What is left of the queue goes: the next phase needs an idle worker.
	worker.Stop()
	if err := purgeJobs(ctx, nc); err != nil {
		return figs, err
	}

	// Many streams, one watcher each, all open before their jobs run.
	n := cfg.scaleStreams
	cmd := "seq 1 " + strconv.Itoa(scaleLinesEach)
	jobs := make([]contracts.BatchItem, n)
	for i := range jobs {
		jobs[i] = contracts.BatchItem{Command: []string{"sh", "-c", cmd}}
	}
	var urls []string
	for k := 0; k < n; k += scaleBatch {
		r, err := postBatch(ctx, apiP.HTTP, "bench", jobs[k:min(k+scaleBatch, n)])
		if err != nil {
			return figs, err
		}
		for _, it := range r.Items {
			if it.Error != nil {
				return figs, fmt.Errorf("stream job refused: %s", it.Error.Message)
			}
			urls = append(urls, it.EventsURL)
		}
	}
	sb, err := proc.ReadCPU(streamer.PID())
	if err != nil {
		return figs, err
	}
	nb, err := proc.ReadCPU(natsPID)
	if err != nil {
		return figs, err
	}
	memBefore := mem(streamer.PID())
	natsBefore := mem(natsPID)
	var (
		connected sync.WaitGroup
		wg        sync.WaitGroup
		errs      = make([]error, n)
	)
	connected.Add(n)
	t2 := time.Now()
	for i, u := range urls {
		wg.Go(func() { errs[i] = watchOne(ctx, streamer.HTTP, u, &connected) })
	}
	connected.Wait()
	connectTime := time.Since(t2)
	figs = append(figs,
		fig(fmt.Sprintf("time for %d SSE clients to connect, one stream each", n), connectTime.Seconds(), "s"),
		fig(fmt.Sprintf("streamer VmRSS, %d streams open", n), mem(streamer.PID()), "MiB"),
		fig("streamer VmRSS per open stream", (mem(streamer.PID())-memBefore)*1024/float64(n), "KiB"),
		fig(fmt.Sprintf("nats-server VmRSS, %d streams followed", n), mem(natsPID), "MiB"),
		fig("nats-server VmRSS per followed stream", (mem(natsPID)-natsBefore)*1024/float64(n), "KiB"))
	t3 := time.Now()
	if _, err := startWorker("scale-worker-streams"); err != nil {
		return figs, err
	}
	wg.Wait()
	failed := 0
	for _, err := range errs {
		if err != nil {
			if failed == 0 {
				fmt.Fprintln(os.Stderr, "scale: a stream failed:", err)
			}
			failed++
		}
	}
	sa, err := proc.ReadCPU(streamer.PID())
	if err != nil {
		return figs, err
	}
	na, err := proc.ReadCPU(natsPID)
	if err != nil {
		return figs, err
	}
	return append(figs,
		fig(fmt.Sprintf("jobs/s running the %d watched jobs", n), float64(n)/time.Since(t3).Seconds(), "jobs/s"),
		fig("streamer CPU per stream (connect, follow, complete)", ms(sa.Own-sb.Own)/float64(n), "ms"),
		// The server's cost of the live feeds: one consumer per stream
		// or the streamer's shared one (--sse-shared-feed-after).
		fig("nats-server CPU while the streams were followed (connect to complete)", 100*(na.Own-nb.Own).Seconds()/time.Since(t2).Seconds(), "% of a core"),
		target("streams without every line once and the complete event", float64(failed), "count", "<=", 0),
		loadFigure("load average (1 min) at end")), nil
}

// watchOne follows one stream to its complete event and checks it got
// lines 1..scaleLinesEach once, in order. It marks connected once the
// stream's first event (connected) arrived.
func watchOne(ctx context.Context, base, eventsURL string, connected *sync.WaitGroup) error {
	var once sync.Once
	mark := func() { once.Do(connected.Done) }
	defer mark()
	s, err := api(base, adminKey).Follow(ctx, eventsURL, client.FollowOptions{MaxReconnects: -1})
	if err != nil {
		return err
	}
	defer s.Close()
	var next uint64 = 1
	for {
		ev, err := s.Next()
		if err != nil {
			return fmt.Errorf("stream ended after %d lines: %w", next-1, err)
		}
		mark()
		switch ev.Name {
		case contracts.SSEOutput:
			l, err := ev.Line()
			if err != nil {
				return err
			}
			if l.Seq != next {
				return fmt.Errorf("line %d, want %d", l.Seq, next)
			}
			next++
		case contracts.SSEComplete:
			_, err := checkComplete(ev, scaleLinesEach)
			if err == nil && next != scaleLinesEach+1 {
				err = fmt.Errorf("%d lines before complete, want %d", next-1, scaleLinesEach)
			}
			return err
		}
	}
}

// purgeJobs drops every queued job (their states stay queued): the bench
// server is open, so this process may.
func purgeJobs(ctx context.Context, nc *nats.Conn) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	s, err := js.Stream(ctx, contracts.StreamJobs)
	if err != nil {
		return err
	}
	return s.Purge(ctx)
}

// waitUntil polls cond every 50 ms for at most d.
func waitUntil(ctx context.Context, d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}
