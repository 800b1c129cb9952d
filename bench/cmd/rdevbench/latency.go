package main

import (
	"context"
	"fmt"
	"math"
	"os/exec"
	"slices"
	"time"

	"github.com/rdev-dev/rdev/pkg/client"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// latency measures submit-to-first-output-line of `echo hi` at the SSE
// client against `rdev up`, one job at a time, and as the baseline a bare
// fork/exec of the same command. Runs alternate between the two so both
// see the same background load.
func latency(ctx context.Context, e *env, cfg config) ([]figure, error) {
	dir, err := e.dataDir("latency")
	if err != nil {
		return nil, err
	}
	up, err := e.start(ctx, "latency-up", "up", "--http-addr", "127.0.0.1:0", "--nats-addr", "127.0.0.1:0", "--data-dir", dir)
	if err != nil {
		return nil, err
	}
	var rdev, base []time.Duration
	var phases [len(phaseNames)][]time.Duration
	for i := range cfg.latencyWarmup + cfg.latencyRuns {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		t0 := time.Now()
		if err := exec.CommandContext(ctx, "echo", "hi").Run(); err != nil {
			return nil, fmt.Errorf("baseline echo: %w", err)
		}
		b := time.Since(t0)
		r, err := firstLine(ctx, up.HTTP)
		if err != nil {
			return nil, fmt.Errorf("run %d: %w", i, err)
		}
		if i >= cfg.latencyWarmup {
			rdev, base = append(rdev, r.total), append(base, b)
			for j, d := range r.phases {
				phases[j] = append(phases[j], d)
			}
		}
	}
	slices.Sort(rdev)
	slices.Sort(base)
	figs := append(percentiles("rdev submit->first line", rdev), percentiles("baseline fork/exec", base)...)
	figs = append(figs,
		target("overhead p50", ms(pct(rdev, 50)-pct(base, 50)), "ms", "<=", 2),
		fig("overhead p90", ms(pct(rdev, 90)-pct(base, 90)), "ms"),
		target("overhead p99", ms(pct(rdev, 99)-pct(base, 99)), "ms", "<=", 10),
	)
	for j, ds := range phases {
		slices.Sort(ds)
		figs = append(figs, fig("phase p50: "+phaseNames[j], ms(pct(ds, 50)), "ms"))
	}
	return append(figs, fig("runs (after warm-up)", float64(len(rdev)), "count")), nil
}

// phaseNames name where a run's time goes, for context. The job's three
// phases add up to the total; they are read from the wall-clock times rdev
// puts in the started event and the output line, on the same host.
var phaseNames = [...]string{
	"client POST until 202",
	"client 202 until SSE headers",
	"job: submit -> started event",
	"job: started -> worker read the line",
	"job: line read -> SSE client",
}

type firstLineRun struct {
	total  time.Duration
	phases [len(phaseNames)]time.Duration
}

// firstLine submits `echo hi`, opens its event stream and returns the time
// from before the submit to the arrival of the first output event; it then
// reads the stream to its end so the next run starts on a quiet system.
func firstLine(ctx context.Context, base string) (firstLineRun, error) {
	var r firstLineRun
	t0 := time.Now()
	a, err := submit(ctx, base, "bench", []string{"echo", "hi"}, time.Minute)
	if err != nil {
		return r, err
	}
	t202 := time.Now()
	s, err := follow(ctx, base, a.EventsURL)
	if err != nil {
		return r, err
	}
	defer s.Close()
	tOpen := time.Now()
	var started contracts.Event
	var ev client.Event
	for {
		if ev, err = s.Next(); err != nil {
			return r, fmt.Errorf("stream ended before the first line: %w", err)
		}
		if ev.Name == contracts.SSEOutput {
			break
		}
		if ev.Name == contracts.SSEStatus {
			if started, err = ev.Status(); err != nil {
				return r, err
			}
		}
		if ev.Name == contracts.SSEComplete {
			return r, fmt.Errorf("complete before any line: %s", ev.Data)
		}
	}
	t1 := time.Now()
	line, err := ev.Line()
	if err != nil {
		return r, err
	}
	if started.Type != contracts.EventStarted {
		return r, fmt.Errorf("last status before the line was %q, want started", started.Type)
	}
	r.total = t1.Sub(t0)
	r.phases = [...]time.Duration{t202.Sub(t0), tOpen.Sub(t202),
		started.Time.Sub(t0), line.Time.Sub(started.Time), t1.Sub(line.Time)}
	return r, finish(s, 1)
}

// percentiles reports p50, p90 and p99 of sorted in ms, each named name
// and its percentile.
func percentiles(name string, sorted []time.Duration) []figure {
	var figs []figure
	for _, p := range []float64{50, 90, 99} {
		figs = append(figs, fig(fmt.Sprintf("%s p%g", name, p), ms(pct(sorted, p)), "ms"))
	}
	return figs
}

// pct returns the p-th percentile (nearest rank) of sorted ds.
func pct(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(float64(len(sorted))*p/100)) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
