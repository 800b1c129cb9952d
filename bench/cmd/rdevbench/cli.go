package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/rdev-dev/rdev/pkg/client"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// cliCost measures the command-line client as a user meets it, against
// baselines measured in the same run on the same `rdev up`:
//
//   - `rdev run -- echo hi`, a process that submits, follows and exits,
//     against `sh -c 'echo hi'` run locally (runs alternate, so both see
//     the same load);
//   - `rdev logs` of a finished job of N lines, as plain text and with -f
//     (replayed over SSE, each line decoded and written to its stream),
//     against reading the same job's raw SSE stream over HTTP, counting
//     its output events without decoding them; logsRounds rounds of the
//     three, back to back, and the median of the rounds.
func cliCost(ctx context.Context, e *env, cfg config) ([]figure, error) {
	dir, err := e.dataDir("cli")
	if err != nil {
		return nil, err
	}
	up, err := e.start(ctx, "cli-up", "up", "--http-addr", "127.0.0.1:0", "--nats-addr", "127.0.0.1:0", "--data-dir", dir)
	if err != nil {
		return nil, err
	}
	if err := createProject(ctx, up.HTTP, contracts.ProjectRequest{ID: "bench"}); err != nil {
		return nil, err
	}
	// The client reads its server from the environment, and no config
	// file of the user's.
	cliEnv := append(os.Environ(), "RDEV_URL="+up.HTTP, "RDEV_API_KEY="+adminKey, "RDEV_PROJECT=bench",
		"RDEV_CONFIG="+filepath.Join(dir, "no-config.yaml"), "RDEV_STREAM_URL=", "RDEV_CONTEXT=")
	var figs []figure
	runFigs, err := runOverhead(ctx, e.bin, cliEnv, cfg)
	if err != nil {
		return nil, fmt.Errorf("rdev run: %w", err)
	}
	figs = append(figs, runFigs...)
	logFigs, err := logsThroughput(ctx, e.bin, cliEnv, up.HTTP, cfg.lines)
	if err != nil {
		return figs, fmt.Errorf("rdev logs: %w", err)
	}
	return append(figs, logFigs...), nil
}

// runOverhead times `rdev run -- echo hi` and `sh -c 'echo hi'`, and
// `rdev version` to tell the start of the rdev process from the rest.
func runOverhead(ctx context.Context, bin string, env []string, cfg config) ([]figure, error) {
	var rdev, base, start []time.Duration
	for i := range cfg.cliWarmup + cfg.cliRuns {
		b, err := timed(ctx, nil, "hi\n", "sh", "-c", "echo hi")
		if err != nil {
			return nil, fmt.Errorf("baseline sh: %w", err)
		}
		r, err := timed(ctx, env, "hi\n", bin, "run", "--", "echo", "hi")
		if err != nil {
			return nil, fmt.Errorf("run %d: %w", i, err)
		}
		v, err := timed(ctx, env, "", bin, "version")
		if err != nil {
			return nil, fmt.Errorf("rdev version: %w", err)
		}
		if i >= cfg.cliWarmup {
			rdev, base, start = append(rdev, r), append(base, b), append(start, v)
		}
	}
	slices.Sort(rdev)
	slices.Sort(base)
	slices.Sort(start)
	figs := append(percentiles("rdev run -- echo hi", rdev), percentiles("baseline sh -c 'echo hi'", base)...)
	return append(figs,
		fig("run overhead p50", ms(pct(rdev, 50)-pct(base, 50)), "ms"),
		fig("run overhead p99", ms(pct(rdev, 99)-pct(base, 99)), "ms"),
		fig("of which rdev process start (rdev version) p50", ms(pct(start, 50)), "ms"),
		fig("run: runs (after warm-up)", float64(len(rdev)), "count"),
	), nil
}

// timed runs name args with env (nil: this process's) to its end, checks
// that it exited 0 having printed want ("": anything), and returns its
// wall time.
func timed(ctx context.Context, env []string, want, name string, args ...string) (time.Duration, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	t0 := time.Now()
	err := cmd.Run()
	d := time.Since(t0)
	if err != nil {
		return 0, fmt.Errorf("%s: %w, stderr %q", name, err, stderr.String())
	}
	if want != "" && out.String() != want {
		return 0, fmt.Errorf("%s printed %q, want %q (stderr %q)", name, out.String(), want, stderr.String())
	}
	return d, nil
}

// logsRounds is how many times each way of reading the logs runs: the
// machine is shared, so a round's three run back to back and the figures
// are the rounds' medians.
const logsRounds = 3

// logsThroughput prints n lines in a job, waits for its end, then reads
// its output three ways, logsRounds times, and returns the rates.
func logsThroughput(ctx context.Context, bin string, env []string, base string, n int) ([]figure, error) {
	a, err := submit(ctx, base, "bench", []string{"seq", "1", strconv.Itoa(n)}, time.Hour)
	if err != nil {
		return nil, err
	}
	s, err := follow(ctx, base, a.EventsURL)
	if err != nil {
		return nil, err
	}
	err = finish(s, uint64(n))
	s.Close()
	if err != nil {
		return nil, err
	}
	var raw, plain, followed, plainRatio, followRatio []float64
	rate := func(t0 time.Time) float64 { return float64(n) / time.Since(t0).Seconds() }
	for range logsRounds {
		t0 := time.Now()
		if err := rawSSE(ctx, base+client.StreamEventsURL(a.StreamID), n); err != nil {
			return nil, fmt.Errorf("raw SSE baseline: %w", err)
		}
		raw = append(raw, rate(t0))
		t0 = time.Now()
		if err := countLines(ctx, env, bin, []string{"logs", a.JobID}, n); err != nil {
			return nil, err
		}
		plain = append(plain, rate(t0))
		t0 = time.Now()
		if err := countLines(ctx, env, bin, []string{"logs", "-f", a.JobID}, n); err != nil {
			return nil, err
		}
		followed = append(followed, rate(t0))
		plainRatio, followRatio = append(plainRatio, plain[len(plain)-1]/raw[len(raw)-1]), append(followRatio, followed[len(followed)-1]/raw[len(raw)-1])
	}
	return []figure{
		fig("rdev logs JOB (plain text, median round)", median(plain), "lines/s"),
		fig("rdev logs -f JOB (SSE, decoded, median round)", median(followed), "lines/s"),
		fig("baseline raw SSE stream read (median round)", median(raw), "lines/s"),
		fig("ratio rdev logs / raw SSE (median of rounds)", median(plainRatio), "x"),
		fig("ratio rdev logs -f / raw SSE (median of rounds)", median(followRatio), "x"),
		fig("logs: lines", float64(n), "count"),
		fig("logs: rounds", logsRounds, "count"),
	}, nil
}

// rawSSE reads the event stream at url with the admin key to its end and
// checks that it held n output events.
func rawSSE(ctx context.Context, url string, n int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+adminKey)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	r := bufio.NewReaderSize(resp.Body, 64<<10)
	outputs := 0
	for {
		line, err := r.ReadSlice('\n')
		if bytes.Equal(line, []byte("event: output\n")) {
			outputs++
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return err
		}
	}
	if outputs != n {
		return fmt.Errorf("%d output events, want %d", outputs, n)
	}
	return nil
}

// countLines runs rdev args to its end and checks that it printed n
// lines on stdout and nothing on stderr.
func countLines(ctx context.Context, env []string, bin string, args []string, n int) error {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	lines := 0
	r := bufio.NewReaderSize(out, 64<<10)
	for {
		b, err := r.ReadSlice('\n')
		if len(b) > 0 && b[len(b)-1] == '\n' {
			lines++
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			break
		}
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("rdev %v: %w, stderr %q", args, err, stderr.String())
	}
	if lines != n || stderr.Len() > 0 {
		return fmt.Errorf("rdev %v printed %d lines (want %d), stderr %q", args, lines, n, stderr.String())
	}
	return nil
}
