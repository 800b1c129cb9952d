package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/rdev-dev/rdev/bench/internal/proc"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// lineCPU measures what storing output costs `rdev up` (API, worker,
// streamer and NATS in one process) per line when jobs print steadily, as
// builds and tests do, with no client watching: jobs printing
// -linecpu-lines lines at -linecpu-rate lines a second each, started
// together. The baseline, in the same process, is one job printing as
// many lines as fast as it can (`seq`), whose lines reach the worker in
// large batches: the least a line can cost.
func lineCPU(ctx context.Context, e *env, cfg config) ([]figure, error) {
	dir, err := e.dataDir("linecpu")
	if err != nil {
		return nil, err
	}
	up, err := e.start(ctx, "linecpu-up", "up", "--http-addr", "127.0.0.1:0", "--nats-addr", "127.0.0.1:0", "--data-dir", dir,
		"--concurrency", strconv.Itoa(cfg.lineJobs))
	if err != nil {
		return nil, err
	}
	bin, self, err := printerCopy()
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(bin)
	gate := filepath.Join(bin, "go")
	lines := uint64(cfg.lineLines)
	ids := make([]string, cfg.lineJobs)
	for i := range ids {
		a, err := submit(ctx, up.HTTP, "bench", []string{self, "sse-printer", "-lines", strconv.FormatUint(lines, 10),
			"-rate", strconv.Itoa(cfg.lineRate), "-size", "100", "-wait", gate}, time.Hour)
		if err != nil {
			return nil, err
		}
		ids[i] = a.JobID
	}
	// Every job running (its printer waiting for the gate) before the
	// measured span, so the span holds the lines and little else.
	if err := waitJobs(ctx, up.HTTP, ids, func(st contracts.JobState) bool { return st.Status == contracts.StatusRunning }); err != nil {
		return nil, err
	}
	paced, err := spanCPU(up, func() error {
		if err := os.WriteFile(gate, nil, 0o644); err != nil {
			return err
		}
		return waitEnded(ctx, up.HTTP, ids, lines)
	})
	if err != nil {
		return nil, err
	}

	total := lines * uint64(cfg.lineJobs)
	a, err := submit(ctx, up.HTTP, "bench", []string{"seq", "1", strconv.FormatUint(total, 10)}, time.Hour)
	if err != nil {
		return nil, err
	}
	burst, err := spanCPU(up, func() error { return waitEnded(ctx, up.HTTP, []string{a.JobID}, total) })
	if err != nil {
		return nil, err
	}
	// The burst's span began after its submit: near enough, beside a
	// million lines.
	perLine := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 / float64(total) }
	who := fmt.Sprintf("%d jobs × %d lines at %d lines/s", cfg.lineJobs, lines, cfg.lineRate)
	return []figure{
		fig(who+": rdev up CPU per line (user + system)", perLine(paced.cpu), "µs"),
		fig(who+": rdev up CPU over the run's wall time", paced.cpu.Seconds()/paced.wall.Seconds(), "cores"),
		fig(fmt.Sprintf("baseline, one job printing %d lines at once (seq): rdev up CPU per line", total), perLine(burst.cpu), "µs"),
		fig("paced / baseline, CPU per line", perLine(paced.cpu)/perLine(burst.cpu), "x"),
	}, nil
}

// span is the CPU a process used over a wall-clock span.
type span struct{ cpu, wall time.Duration }

// spanCPU runs f and returns the CPU p used meanwhile.
func spanCPU(p *proc.Process, f func() error) (span, error) {
	c0, err := proc.ReadCPU(p.PID())
	if err != nil {
		return span{}, err
	}
	t0 := time.Now()
	if err := f(); err != nil {
		return span{}, err
	}
	wall := time.Since(t0)
	c1, err := proc.ReadCPU(p.PID())
	if err != nil {
		return span{}, err
	}
	return span{cpu: c1.Own - c0.Own, wall: wall}, nil
}

// waitEnded waits for every job of ids to succeed with lines lines stored.
func waitEnded(ctx context.Context, base string, ids []string, lines uint64) error {
	var bad error
	err := waitJobs(ctx, base, ids, func(st contracts.JobState) bool {
		if !st.Status.Final() {
			return false
		}
		if st.Status != contracts.StatusSucceeded || st.Lines != lines {
			bad = fmt.Errorf("job %s ended %s with %d lines, want succeeded with %d", st.JobID, st.Status, st.Lines, lines)
		}
		return true
	})
	if err == nil {
		err = bad
	}
	return err
}

// waitJobs polls the jobs' states until done holds for each.
func waitJobs(ctx context.Context, base string, ids []string, done func(contracts.JobState) bool) error {
	c := api(base, adminKey)
	deadline := time.Now().Add(10 * time.Minute)
	for _, id := range ids {
		for {
			j, err := c.Job(ctx, id)
			if err != nil {
				return err
			}
			if done(j.JobState) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("job %s still %s after 10 minutes", id, j.Status)
			}
			select {
			case <-time.After(50 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return nil
}
