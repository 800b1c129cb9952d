package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rdev-dev/rdev/bench/internal/proc"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// fanoutLineSize is the text of each timed line, in bytes; with the
// OutputLine around it an output event is about 300 bytes.
const fanoutLineSize = 100

// fanout measures a standalone streamer fanning one job's lines out to
// cfg.fanClients SSE clients (client processes of their own), against the
// minimal Go SSE broadcaster (rdevbench sse-broadcaster) with the same
// clients, rate and event size in the same run: line latency (the time
// printed in the line → the client reading it) at cfg.fanRate lines a
// second, and deliveries a second at cfg.fanSatRate (saturation), with
// the server's CPU per delivery; then the same totals over 10 streams of
// a tenth of the clients each. Every client must get every line once.
func fanout(ctx context.Context, e *env, cfg config) ([]figure, error) {
	figs := []figure{loadFigure("load average (1 min) at start")}
	lines := func(rate int) uint64 { return uint64(rate * cfg.fanSeconds) }
	for _, run := range []struct {
		name    string
		rate    int
		streams int
	}{
		{fmt.Sprintf("%d clients, %d lines/s", cfg.fanClients, cfg.fanRate), cfg.fanRate, 1},
		{fmt.Sprintf("%d clients, %d lines/s (saturation)", cfg.fanClients, cfg.fanSatRate), cfg.fanSatRate, 1},
	} {
		r, err := fanRdev(ctx, e, cfg, run.streams, run.rate, lines(run.rate))
		e.stopAll()
		if err != nil {
			return figs, fmt.Errorf("rdev %s: %w", run.name, err)
		}
		b, err := fanBroadcaster(ctx, e, cfg, run.rate, lines(run.rate))
		e.stopAll()
		if err != nil {
			return figs, fmt.Errorf("broadcaster %s: %w", run.name, err)
		}
		figs = append(figs, r.figures("rdev "+run.name)...)
		figs = append(figs, b.figures("broadcaster "+run.name)...)
		if run.rate == cfg.fanRate {
			figs = append(figs,
				target("rdev p99 line latency, "+run.name, r.p99, "ms", "<=", 100),
				target("rdev p99 / broadcaster p99, "+run.name, r.p99/b.p99, "ratio", "<=", 1))
		} else {
			figs = append(figs, target("rdev / broadcaster deliveries/s, "+run.name, r.rate/b.rate, "ratio", ">=", 0.8))
		}
		figs = append(figs, loadFigure("load average (1 min) after "+run.name))
	}
	r, err := fanRdev(ctx, e, cfg, 10, cfg.fanRate, lines(cfg.fanRate))
	if err != nil {
		return figs, fmt.Errorf("rdev 10 streams: %w", err)
	}
	return append(append(figs, r.figures(fmt.Sprintf("rdev 10 streams x %d clients, %d lines/s each", cfg.fanClients/10, cfg.fanRate))...),
		loadFigure("load average (1 min) at end")), nil
}

// fanResult is one fan-out run's outcome.
type fanResult struct {
	p50, p99, max float64 // line latency, ms
	rate          float64 // deliveries a second, first line to last
	cpuPer        float64 // server CPU per delivery, µs
	deliveries    uint64
	lagged        float64 // times a slow client was sent back to storage (rdev)
	extra         []figure
}

func (r fanResult) figures(name string) []figure {
	return append(r.extra,
		fig(name+": p50 line latency", r.p50, "ms"),
		fig(name+": p99 line latency", r.p99, "ms"),
		fig(name+": deliveries/s", r.rate, "1/s"),
		fig(name+": server CPU per delivery", r.cpuPer, "µs"),
	)
}

// fanClients runs the clients of one fan-out measurement: it starts them,
// calls start once every one is connected, and checks that each got
// every one of lines lines exactly once and its complete event.
func fanClients(ctx context.Context, conns int, srv *proc.Process, start func() error, lines uint64, args ...string) (fanResult, error) {
	var r fanResult
	g, err := startClients(ctx, conns, 500, 3, append(args, "-final", contracts.SSEComplete, "-lines", strconv.FormatUint(lines, 10))...)
	if err != nil {
		return r, err
	}
	defer g.stop()
	if err := g.wait(ctx, "ready", 5*time.Minute); err != nil {
		return r, err
	}
	cpu0, err := proc.ReadCPU(srv.PID())
	if err != nil {
		return r, err
	}
	if err := start(); err != nil {
		return r, err
	}
	// The lines take their time to print; a loaded machine's clients may
	// take longer to read them.
	if err := g.wait(ctx, "result", 10*time.Minute); err != nil {
		return r, err
	}
	cpu1, err := proc.ReadCPU(srv.PID())
	if err != nil {
		return r, err
	}
	res := g.res
	if res.Final != conns || res.Failed > 0 {
		return r, fmt.Errorf("%d of %d clients got complete, %d failed (first error: %s)", res.Final, conns, res.Failed, res.Err)
	}
	if want := lines * uint64(conns); res.Lines != want || res.Dups > 0 || res.Missing > 0 {
		return r, fmt.Errorf("clients got %d lines (%d twice, %d missing), want %d, each once", res.Lines, res.Dups, res.Missing, want)
	}
	r.deliveries = res.Lines
	r.p50, r.p99, r.max = res.Hist.quantile(0.5), res.Hist.quantile(0.99), res.Hist.quantile(1)
	if d := time.Duration(res.Last - res.First); d > 0 {
		r.rate = float64(res.Lines) / d.Seconds()
	}
	r.cpuPer = float64((cpu1.Own - cpu0.Own).Microseconds()) / float64(res.Lines)
	return r, nil
}

// fanRdev runs streams jobs printing lines at rate each, each followed by
// fanClients/streams clients of a standalone streamer.
func fanRdev(ctx context.Context, e *env, cfg config, streams, rate int, lines uint64) (fanResult, error) {
	up, _, streamer, err := split(ctx, e, "fanout", streams)
	if err != nil {
		return fanResult{}, err
	}
	dir, self, err := printerCopy()
	if err != nil {
		return fanResult{}, err
	}
	defer os.RemoveAll(dir)
	gate := filepath.Join(dir, "go")
	urls := make([]string, streams)
	for i := range urls {
		a, err := submit(ctx, up.HTTP, "bench", []string{self, "sse-printer", "-lines", strconv.FormatUint(lines, 10),
			"-rate", strconv.Itoa(rate), "-size", strconv.Itoa(fanoutLineSize), "-wait", gate}, time.Hour)
		if err != nil {
			return fanResult{}, err
		}
		urls[i] = onServer(streamer.HTTP, a.EventsURL)
	}
	r, err := fanClients(ctx, cfg.fanClients, streamer, func() error { return os.WriteFile(gate, nil, 0o600) }, lines,
		"-urls", strings.Join(urls, ","), "-key", adminKey, "-ready", `"type":"started"`)
	if err == nil {
		r.lagged, err = metric(ctx, streamer.HTTP, "rdev_sse_clients_lagged")
	}
	if err == nil {
		r.extra = []figure{fig(fmt.Sprintf("rdev %d stream(s), %d lines/s: slow clients sent back to storage (rdev_sse_clients_lagged)", streams, rate), r.lagged, "count")}
	}
	return r, err
}

// metric returns the sum of the samples of the Prometheus metric name
// (and name_total) at base/metrics.
func metric(ctx context.Context, base, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	var sum float64
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(line, "#") {
			continue
		}
		m, _, _ := strings.Cut(f[0], "{")
		if m == name || m == name+"_total" {
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err == nil {
				sum += v
			}
		}
	}
	return sum, nil
}

// fanBroadcaster runs the baseline with the same clients, rate and lines.
func fanBroadcaster(ctx context.Context, e *env, cfg config, rate int, lines uint64) (fanResult, error) {
	self, err := os.Executable()
	if err != nil {
		return fanResult{}, err
	}
	bc, err := proc.Start(ctx, "fanout-broadcaster", self, filepath.Join(e.logs, "fanout-broadcaster.log"), "sse-broadcaster")
	if err != nil {
		return fanResult{}, err
	}
	defer bc.Stop()
	start := func() error {
		return post(ctx, fmt.Sprintf("%s/start?lines=%d&rate=%d&size=%d", bc.HTTP, lines, rate, fanoutLineSize))
	}
	return fanClients(ctx, cfg.fanClients, bc, start, lines, "-urls", bc.HTTP+"/events", "-ready", "event: connected")
}

// printerCopy copies rdevbench into a fresh directory for jobs to run as
// their command (sse-printer): the job's user, which may not be ours,
// can enter it and run the copy, and it can hold the jobs' gate file.
// The caller removes dir.
func printerCopy() (dir, self string, err error) {
	if dir, err = os.MkdirTemp("", "rdevbench-printer-"); err != nil {
		return "", "", err
	}
	self = filepath.Join(dir, "rdevbench")
	if err = os.Chmod(dir, 0o755); err == nil {
		err = copyExecutable(self)
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		return "", "", err
	}
	return dir, self, nil
}

// copyExecutable copies the running program to path, executable by all.
func copyExecutable(path string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	b, err := os.ReadFile(self)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o755) //nolint:gosec // the job's user runs it
}
