package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rdev-dev/rdev/bench/internal/proc"
	"github.com/rdev-dev/rdev/pkg/client"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

const mib = 1 << 20

// split runs the API with the embedded NATS server in one process and the
// worker and the streamer as processes of their own, so each one's memory
// is its own.
func split(ctx context.Context, e *env, name string, concurrency int) (up, worker, streamer *proc.Process, err error) {
	dir, err := e.dataDir(name)
	if err != nil {
		return nil, nil, nil, err
	}
	up, err = e.start(ctx, name+"-up", "up", "--without", "worker,streamer",
		"--http-addr", "127.0.0.1:0", "--nats-addr", "127.0.0.1:0", "--data-dir", dir)
	if err != nil {
		return nil, nil, nil, err
	}
	wdir, err := e.dataDir(name + "-worker")
	if err != nil {
		return nil, nil, nil, err
	}
	worker, err = e.start(ctx, name+"-worker", "worker", "--nats-url", up.NATS, "--nats-nkey", seed(dir, "worker"), "--data-dir", wdir,
		"--concurrency", strconv.Itoa(concurrency), "--drain-timeout", "1s", "--kill-grace", "200ms")
	if err != nil {
		return nil, nil, nil, err
	}
	streamer, err = e.start(ctx, name+"-streamer", "streamer", "--nats-url", up.NATS, "--nats-nkey", seed(dir, "streamer"),
		"--http-addr", "127.0.0.1:0")
	return up, worker, streamer, err
}

// memory streams cfg.memBytes of output through a separate worker and
// streamer to one SSE client that discards it, sampling both processes'
// resident memory every 100 ms.
func memory(ctx context.Context, e *env, cfg config) ([]figure, error) {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(e.tmp, &fs); err != nil {
		return nil, err
	}
	// JetStream stores each ~91-byte line as a ~260-byte OutputLine.
	if free, need := int64(fs.Bavail)*fs.Bsize, 4*cfg.memBytes+(1<<30); free < need {
		return nil, fmt.Errorf("%s has %d MiB free, need %d MiB for the stored output", e.tmp, free/mib, need/mib)
	}
	up, worker, streamer, err := split(ctx, e, "memory", 1)
	if err != nil {
		return nil, err
	}
	procs := []*proc.Process{worker, streamer, up}
	stopSampling := sampleRSS(procs, 100*time.Millisecond)
	defer stopSampling()

	line := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
	cmd := fmt.Sprintf("yes %s | head -c %d", line, cfg.memBytes)
	t0 := time.Now()
	a, err := submit(ctx, up.HTTP, "bench", []string{"sh", "-c", cmd}, 2*time.Hour)
	if err != nil {
		return nil, err
	}
	s, err := follow(ctx, streamer.HTTP, a.EventsURL)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	want := uint64((cfg.memBytes + int64(len(line))) / int64(len(line)+1))
	// Steady: the rate over the first tenth of the lines against the last
	// tenth, and memory once a tenth has gone through against the peak.
	var (
		lines                    uint64
		ev                       client.Event
		first, tenth, nineTenths time.Time
		rssAtTenth               [2]int64
	)
	for {
		if ev, err = s.Next(); err != nil {
			return nil, fmt.Errorf("stream ended after %d lines without complete: %w", lines, err)
		}
		if ev.Name == contracts.SSEOutput {
			lines++
			switch lines {
			case 1:
				first = time.Now()
			case want / 10:
				tenth = time.Now()
				for i, p := range procs[:2] {
					if m, err := proc.ReadMem(p.PID()); err == nil {
						rssAtTenth[i] = m.RSS
					}
				}
			case want - want/10:
				nineTenths = time.Now()
			}
		}
		if ev.Name == contracts.SSEComplete {
			break
		}
	}
	last := time.Now()
	d := last.Sub(t0)
	if _, err := checkComplete(ev, lines); err != nil {
		return nil, err
	}
	if lines != want {
		return nil, fmt.Errorf("client got %d lines, want %d", lines, want)
	}
	peak := stopSampling()

	var figs []figure
	for i, p := range procs[:2] {
		m, err := proc.ReadMem(p.PID())
		if err != nil {
			return nil, err
		}
		figs = append(figs,
			target(roleOf(p)+" peak VmRSS (100 ms samples)", float64(peak[i])/mib, "MiB", "<", 100),
			target(roleOf(p)+" VmHWM at end", float64(m.HWM)/mib, "MiB", "<", 100),
			fig(roleOf(p)+" VmRSS once a tenth of the lines went through", float64(rssAtTenth[i])/mib, "MiB"))
	}
	tenthLines := float64(want / 10)
	figs = append(figs,
		fig("lines/s at the client, first tenth of the lines", tenthLines/tenth.Sub(first).Seconds(), "lines/s"),
		fig("lines/s at the client, last tenth of the lines", tenthLines/last.Sub(nineTenths).Seconds(), "lines/s"))
	return append(figs,
		fig("nats+api process peak VmRSS (context)", float64(peak[2])/mib, "MiB"),
		fig("output", float64(cfg.memBytes)/mib, "MiB"),
		fig("lines", float64(lines), "count"),
		fig("submit->complete", d.Seconds(), "s"),
		fig("rate", float64(cfg.memBytes)/mib/d.Seconds(), "MiB/s"),
	), nil
}

// sampleRSS reads the VmRSS of procs every interval until the returned
// function is called; that returns each one's peak. It may be called again.
func sampleRSS(procs []*proc.Process, interval time.Duration) (stop func() []int64) {
	peak := make([]int64, len(procs))
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			for i, p := range procs {
				if m, err := proc.ReadMem(p.PID()); err == nil {
					peak[i] = max(peak[i], m.RSS)
				}
			}
			select {
			case <-t.C:
			case <-done:
				return
			}
		}
	})
	var once sync.Once
	return func() []int64 {
		once.Do(func() { close(done); wg.Wait() })
		return peak
	}
}

func roleOf(p *proc.Process) string {
	_, role, _ := strings.Cut(p.Name, "-")
	return role
}

// idle opens cfg.idleConns SSE connections spread over cfg.idleStreams
// running jobs that print nothing, from client processes of their own
// (perChild connections each: a process here holds at most 20,000
// files), and reports the streamer's resident memory per connection;
// then every connection must get a heartbeat and, once the jobs are
// cancelled, its final event. The baseline is the minimal Go SSE
// broadcaster (rdevbench sse-broadcaster) with as many connections from
// the same clients, measured the same way in the same run.
func idle(ctx context.Context, e *env, cfg config) ([]figure, error) {
	const perChild = 5000
	figs := []figure{loadFigure("load average (1 min) at start"), fig("connections", float64(cfg.idleConns), "count")}
	up, _, streamer, err := split(ctx, e, "idle", cfg.idleStreams)
	if err != nil {
		return nil, err
	}
	jobs := make([]string, cfg.idleStreams)
	urls := make([]string, cfg.idleStreams)
	for i := range urls {
		a, err := submit(ctx, up.HTTP, "bench", []string{"sleep", "3600"}, 2*time.Hour)
		if err != nil {
			return nil, err
		}
		jobs[i], urls[i] = a.JobID, onServer(streamer.HTTP, a.EventsURL)
	}
	// One connection per stream first, until its job runs: the jobs are
	// live and the streamer's code paths warm before the baseline.
	c := client.New(streamer.HTTP, client.WithAPIKey(adminKey), client.WithUserAgent("rdevbench"),
		client.WithHTTPClient(&http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: -1, DisableCompression: true}}))
	for _, u := range urls {
		s, err := openStarted(ctx, c, u)
		if err != nil {
			return nil, err
		}
		s.Close()
	}
	end := func() error {
		for _, id := range jobs {
			if _, err := api(up.HTTP, adminKey).Cancel(ctx, id); err != nil {
				return fmt.Errorf("cancel job %s: %w", id, err)
			}
		}
		return nil
	}
	rdev, err := idleConns(ctx, cfg.idleConns, perChild, 1, streamer, end,
		"-urls", strings.Join(urls, ","), "-key", adminKey, "-ready", `"type":"started"`, "-final", contracts.SSEComplete)
	if err != nil {
		return figs, fmt.Errorf("rdev: %w", err)
	}
	e.stopAll()

	bc, err := startBroadcaster(ctx, e, "idle-broadcaster")
	if err != nil {
		return figs, err
	}
	defer bc.Stop()
	base, err := idleConns(ctx, cfg.idleConns, perChild, 2, bc, func() error { return post(ctx, bc.HTTP+"/end") },
		"-urls", bc.HTTP+"/events", "-ready", "event: connected", "-final", contracts.SSEComplete)
	if err != nil {
		return figs, fmt.Errorf("baseline broadcaster: %w", err)
	}
	return append(figs,
		fig("streamer VmRSS before", float64(rdev.before.RSS)/mib, "MiB"),
		fig("streamer VmRSS with the connections", float64(rdev.after.RSS)/mib, "MiB"),
		fig("streamer VmHWM", float64(rdev.after.HWM)/mib, "MiB"),
		target("streamer RSS per idle connection", rdev.perConn(cfg.idleConns), "KiB", "<=", 20),
		fig("streamer VmRSS with the connections / connections (all of it, context)", float64(rdev.after.RSS)/float64(cfg.idleConns)/1024, "KiB"),
		fig("broadcaster VmRSS before", float64(base.before.RSS)/mib, "MiB"),
		fig("broadcaster VmRSS with the connections", float64(base.after.RSS)/mib, "MiB"),
		fig("broadcaster RSS per idle connection (baseline)", base.perConn(cfg.idleConns), "KiB"),
		fig("streamer / broadcaster per connection", rdev.perConn(cfg.idleConns)/base.perConn(cfg.idleConns), "ratio"),
		loadFigure("load average (1 min) at end"),
	), nil
}

// idleMem is a server's memory before and with the idle connections.
type idleMem struct{ before, after proc.Mem }

func (m idleMem) perConn(n int) float64 { return float64(m.after.RSS-m.before.RSS) / float64(n) / 1024 }

// idleConns opens conns connections to srv from client children, measures
// srv's memory once they are open, checks that each gets a heartbeat,
// calls end and checks that each gets its final event.
func idleConns(ctx context.Context, conns, perChild, net3 int, srv *proc.Process, end func() error, args ...string) (idleMem, error) {
	var m idleMem
	var err error
	if m.before, err = settle(ctx, srv); err != nil {
		return m, err
	}
	g, err := startClients(ctx, conns, perChild, net3, args...)
	if err != nil {
		return m, err
	}
	defer g.stop()
	// Opening 18,000 streams on a loaded 2-core machine takes minutes.
	if err := g.wait(ctx, "ready", 15*time.Minute); err != nil {
		return m, err
	}
	if m.after, err = settle(ctx, srv); err != nil {
		return m, err
	}
	if err := srv.Alive(); err != nil {
		return m, err
	}
	// A heartbeat is due every 15 s; a loaded machine may be late.
	if err := g.wait(ctx, "beat", 2*time.Minute); err != nil {
		return m, err
	}
	if err := end(); err != nil {
		return m, err
	}
	if err := g.wait(ctx, "result", 5*time.Minute); err != nil {
		return m, err
	}
	if r := g.res; r.Final != conns || r.Failed > 0 {
		return m, fmt.Errorf("%d of %d connections got their final event, %d failed (first error: %s)", r.Final, conns, r.Failed, r.Err)
	}
	return m, nil
}

// onServer returns the events URL u (relative, or on the API's address)
// on the server at base.
func onServer(base, u string) string {
	if _, rest, ok := strings.Cut(u, "://"); ok {
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			return base + rest[i:]
		}
	}
	return base + u
}

// post sends an empty POST to url and expects a 2xx.
func post(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if err != nil {
		return err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: status %d", url, resp.StatusCode)
	}
	return nil
}

// openStarted opens an event stream and reads it until its job's started
// event, after which the connection stays idle.
func openStarted(ctx context.Context, c *client.Client, url string) (*client.Stream, error) {
	s, err := c.Follow(ctx, url, client.FollowOptions{MaxReconnects: -1})
	if err != nil {
		return nil, err
	}
	for {
		ev, err := s.Next()
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("stream ended before its job started: %w", err)
		}
		if ev.Name == contracts.SSEStatus && bytes.Contains(ev.Data, []byte(`"type":"started"`)) {
			return s, nil
		}
	}
}

// settle waits until p's resident memory stops moving: samples every
// 500 ms, for at least 2 s and at most 15 s, until the last four agree
// within 1%. It returns the last sample.
func settle(ctx context.Context, p *proc.Process) (proc.Mem, error) {
	var rss []int64
	var m proc.Mem
	for i := 0; i < 30; i++ {
		select {
		case <-time.After(500 * time.Millisecond):
		case <-ctx.Done():
			return m, ctx.Err()
		}
		var err error
		if m, err = proc.ReadMem(p.PID()); err != nil {
			return m, err
		}
		rss = append(rss, m.RSS)
		if len(rss) >= 4 {
			last := rss[len(rss)-4:]
			lo, hi := last[0], last[0]
			for _, v := range last {
				lo, hi = min(lo, v), max(hi, v)
			}
			if float64(hi-lo) <= 0.01*float64(hi) {
				break
			}
		}
	}
	return m, nil
}
