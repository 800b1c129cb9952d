package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rdev-dev/rdev/pkg/client"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// delayedJobs measures delayed jobs on one `rdev up`: N no-op jobs
// submitted as one batch, all due in the same second, timed from that
// second to the start of the last one; then the process's CPU (NATS,
// API, worker, scheduler) over an idle interval, first with no job
// waiting and then with W delayed jobs waiting (due in an hour).
func delayedJobs(ctx context.Context, e *env, cfg config) ([]figure, error) {
	dir, err := e.dataDir("delayed")
	if err != nil {
		return nil, err
	}
	up, err := e.start(ctx, "delayed-up", "up", "--http-addr", "127.0.0.1:0", "--nats-addr", "127.0.0.1:0",
		"--data-dir", dir, "--concurrency", fmt.Sprint(queueConcurrency))
	if err != nil {
		return nil, err
	}
	if _, _, err := runBatch(ctx, up.HTTP, 20); err != nil { // the project, consumers and caches exist
		return nil, err
	}
	n := cfg.delayedJobs
	// Due late enough for the whole batch to be accepted first.
	due := time.Now().Add(10*time.Second + time.Duration(n)*time.Millisecond).Truncate(time.Second).Add(time.Second)
	r, err := postBatch(ctx, up.HTTP, "bench", delayedItems(n, due))
	if err != nil {
		return nil, err
	}
	if time.Now().After(due) {
		return nil, fmt.Errorf("the batch of %d delayed jobs was accepted after they were due", n)
	}
	last, err := lastStarted(ctx, up.HTTP, r.BatchID, n)
	if err != nil {
		return nil, err
	}
	figs := []figure{fig(fmt.Sprintf("%d jobs due in one second: due → last started", n), last.Sub(due).Seconds(), "s")}

	const window = 30 * time.Second
	idle, err := cpuShare(ctx, up.PID(), window)
	if err != nil {
		return nil, err
	}
	waiting := cfg.delayedWaiting
	later := time.Now().Add(time.Hour)
	for i := 0; i < waiting; i += 10_000 {
		if _, err := postBatch(ctx, up.HTTP, "bench", delayedItems(min(10_000, waiting-i), later)); err != nil {
			return nil, err
		}
	}
	busy, err := cpuShare(ctx, up.PID(), window)
	if err != nil {
		return nil, err
	}
	return append(figs,
		fig("CPU of rdev up, idle, nothing waiting (share of one core)", idle*100, "%"),
		fig(fmt.Sprintf("CPU of rdev up, idle, %d delayed jobs waiting", waiting), busy*100, "%"),
	), nil
}

func delayedItems(n int, at time.Time) []contracts.BatchItem {
	items := make([]contracts.BatchItem, n)
	for i := range items {
		items[i] = contracts.BatchItem{Command: []string{"true"}, SubmitOptions: contracts.SubmitOptions{RunAt: at.UTC().Format(time.RFC3339Nano)}}
	}
	return items
}

// lastStarted waits for the n jobs of batch to end and returns the latest
// start among them.
func lastStarted(ctx context.Context, base, batch string, n int) (time.Time, error) {
	c := api(base, adminKey)
	deadline := time.Now().Add(10 * time.Minute)
	for time.Now().Before(deadline) {
		var last time.Time
		done := 0
		p := client.Page{Limit: 1000}
		for {
			l, err := c.ListJobs(ctx, "bench", client.JobFilter{BatchID: batch}, p)
			if err != nil {
				return last, err
			}
			for _, j := range l.Jobs {
				if j.Status.Final() {
					done++
				}
				if j.StartedAt != nil && j.StartedAt.After(last) {
					last = *j.StartedAt
				}
			}
			if l.NextCursor == "" {
				break
			}
			p.Cursor = l.NextCursor
		}
		if done == n {
			return last, nil
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return time.Time{}, errors.New("delayed jobs not all done within 10 minutes")
}

// cpuShare is the CPU time pid used over window, as a share of one core.
func cpuShare(ctx context.Context, pid int, window time.Duration) (float64, error) {
	before, err := cpuTime(pid)
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(window):
	}
	after, err := cpuTime(pid)
	if err != nil {
		return 0, err
	}
	return (after - before).Seconds() / time.Since(t0).Seconds(), nil
}

// cpuTime is the user and system CPU time of pid (Linux /proc).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks, nil
}
