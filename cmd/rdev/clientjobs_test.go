package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/await"
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
		return runOK(t, env, args...)
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

// `rdev jobs retry` runs an ended job again (following it with -f), and
// refuses one still running; `rdev dead-letters retry` queues the job of
// a real dead letter (its retries spent) again, once unless --force.
func TestJobsRetryAndDeadLetters(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	t.Parallel()
	n := startInProcess(t, "--retry-base", "10ms", "--retry-cap", "20ms")
	env := serverEnv(n)
	cli := func(args ...string) string {
		t.Helper()
		return runOK(t, env, args...)
	}
	dead := submit(t, n.http, "retry", map[string]any{"command": []string{"sh", "-c", "echo try; exit 3"},
		"max_attempts": 2, "retry_on_exit_codes": []int{3}})
	if st := waitFinal(t, n.http, dead.JobID, 30*time.Second); st.Status != contracts.StatusFailed {
		t.Fatalf("job %s, want failed", st.Status)
	}
	out, stderr, code := runCLI(t, env, "jobs", "retry", "-f", dead.JobID)
	if code != 3 || !strings.HasPrefix(out, "try\n") {
		t.Fatalf("jobs retry -f: exit %d, stdout %q, stderr %s; want the job's output and its exit code 3", code, out, stderr)
	}
	again := detachedID(t, cli("jobs", "retry", dead.JobID))
	if again == dead.JobID {
		t.Fatal("jobs retry printed the old job's id")
	}
	if st := waitFinal(t, n.http, again, 30*time.Second); st.Status != contracts.StatusFailed || st.ExitCode == nil || *st.ExitCode != 3 {
		t.Fatalf("retried job: %+v", st)
	}

	running := submit(t, n.http, "retry", map[string]any{"command": []string{"sleep", "60"}})
	if _, stderr, code := runCLI(t, env, "jobs", "retry", running.JobID); code != 1 || !strings.Contains(stderr, "job_not_finished") {
		t.Fatalf("jobs retry of a job not ended: exit %d, %s", code, stderr)
	}
	cli("jobs", "cancel", running.JobID)
	waitFinal(t, n.http, running.JobID, 30*time.Second)
	if again := mustJSON[contracts.SubmitResponse](t, cli("jobs", "retry", "-o", "json", running.JobID)); again.JobID == "" || again.JobID == running.JobID {
		t.Fatalf("jobs retry -o json of the cancelled job: %+v", again)
	} else {
		cli("jobs", "cancel", again.JobID)
	}

	var letter contracts.DeadLetter
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if await.Poll(ctx, func() bool {
		for _, d := range mustJSON[contracts.DeadLetterPage](t, cli("dead-letters", "ls", "-p", "retry", "-o", "json")).DeadLetters {
			if d.Job != nil && d.Job.ID == dead.JobID {
				letter = d
			}
		}
		return letter.ID != ""
	}) != nil {
		t.Fatalf("no dead letter of job %s", dead.JobID)
	}
	if table := cli("dead-letters", "ls", "-p", "retry"); !strings.Contains(table, letter.ID) || !strings.Contains(table, "ATTEMPTS") {
		t.Fatalf("dead-letters ls: %q", table)
	}
	out = cli("dead-letters", "retry", letter.ID)
	f := strings.Fields(out)
	if len(f) < 2 || f[0] != "job" || f[1] == dead.JobID {
		t.Fatalf("dead-letters retry printed %q", out)
	}
	if st := waitFinal(t, n.http, f[1], 30*time.Second); st.Status != contracts.StatusFailed || st.ExitCode == nil || *st.ExitCode != 3 {
		t.Fatalf("the dead letter's job run again: %+v", st)
	}
	if _, stderr, code := runCLI(t, env, "dead-letters", "retry", letter.ID); code != 1 || !strings.Contains(stderr, "dead_letter_retried") {
		t.Fatalf("second dead-letters retry: exit %d, %s", code, stderr)
	}
	if forced := cli("dead-letters", "retry", "--force", letter.ID); !strings.Contains(forced, "queued again") {
		t.Fatalf("dead-letters retry --force: %q", forced)
	}
}
