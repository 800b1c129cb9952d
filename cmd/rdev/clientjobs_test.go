package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// `rdev logs` without -f prints what is stored of a running job and
// exits; --timestamps and --since shape it, with -f and without.
func TestLogsOfARunningJob(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	t.Parallel()
	n := startInProcess(t)
	job := submit(t, n.http, "logsnow", map[string]any{"command": gatedCommand})
	waitForLines(t, n.http, []contracts.SubmitResponse{job}, 5)
	env := serverEnv(n)
	cli := func(args ...string) string {
		t.Helper()
		out, stderr, code := runCLI(t, env, args...)
		if code != 0 {
			t.Fatalf("rdev %v: exit %d, %s", args, code, stderr)
		}
		return out
	}
	lines := strings.Split(strings.TrimSuffix(cli("logs", job.JobID), "\n"), "\n")
	if len(lines) < 5 {
		t.Fatalf("logs of a running job: %q, want its 5+ lines so far", lines)
	}
	for i, l := range lines {
		if l != fmt.Sprint("line", i+1) {
			t.Fatalf("line %d is %q", i+1, l)
		}
	}
	stamped := strings.Split(strings.TrimSuffix(cli("logs", "--timestamps", "--since", "1h", job.JobID), "\n"), "\n")
	if len(stamped) < len(lines) {
		t.Fatalf("logs --timestamps --since 1h: %d lines, want every line (%d+)", len(stamped), len(lines))
	}
	var last time.Time
	for i, l := range stamped {
		ts, text, _ := strings.Cut(l, " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil || text != fmt.Sprint("line", i+1) || at.Before(last) {
			t.Fatalf("stamped line %q (%v): want an RFC 3339 time, then line%d", l, err, i+1)
		}
		last = at
	}
	// From the time of the third line on: the first two are left out.
	third, _, _ := strings.Cut(stamped[2], " ")
	if from := cli("logs", "--since", third, job.JobID); !strings.HasPrefix(from, "line3\n") {
		t.Fatalf("logs --since %s: %q, want line3 first", third, from)
	}
	if future := cli("logs", "--since", time.Now().Add(time.Hour).Format(time.RFC3339), job.JobID); future != "" {
		t.Fatalf("logs --since an hour ahead: %q, want nothing", future)
	}
	if _, stderr, code := runCLI(t, env, "logs", "--since", "yesterday", job.JobID); code != 1 || !strings.Contains(stderr, "want a duration like 10m") {
		t.Fatalf("logs --since yesterday: exit %d, %s", code, stderr)
	}

	// -f with --since skips the replayed lines before it, and follows.
	p := startCLI(t, env, "logs", "-f", "--timestamps", "--since", last.Format(time.RFC3339Nano), job.JobID)
	first := p.line(t)
	if ts, text, _ := strings.Cut(first, " "); ts != last.UTC().Format(time.RFC3339Nano) || text != fmt.Sprint("line", len(stamped)) {
		t.Fatalf("logs -f --since: first line %q, want %s line%d", first, last.UTC().Format(time.RFC3339Nano), len(stamped))
	}
	touch(t, n.dataDir, "logsnow", "gate")
	rest, code := p.wait(t, time.Minute)
	if code != 0 || !strings.HasSuffix(rest, " tail5\n") {
		t.Fatalf("logs -f: exit %d, rest %q", code, rest)
	}
	if all := cli("logs", job.JobID); !strings.HasSuffix(all, "tail4\ntail5\n") || !strings.HasPrefix(all, "line1\n") {
		t.Fatalf("logs of the ended job: %q", all)
	}
}

func TestSinceTime(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 5, 2, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"":                          {},
		"10m":                       now.Add(-10 * time.Minute),
		"1h30m":                     now.Add(-90 * time.Minute),
		"2026-12-05T01:00:00Z":      time.Date(2026, 12, 5, 1, 0, 0, 0, time.UTC),
		"2026-12-05T02:30:00+01:00": time.Date(2026, 12, 5, 1, 30, 0, 0, time.UTC),
	} {
		if got, err := sinceTime(in, now); err != nil || !got.Equal(want) {
			t.Errorf("sinceTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"-5m", "yesterday", "2026-12-05"} {
		if _, err := sinceTime(bad, now); err == nil {
			t.Errorf("sinceTime(%q): no error", bad)
		}
	}
}
