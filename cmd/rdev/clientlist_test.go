package main

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// jobs ls lists a project's jobs and every project's newest first; a
// paused priority level keeps its jobs queued while the others run, and
// they run once it is resumed.
func TestJobsLsAndQueues(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	t.Parallel()
	n := startInProcess(t)
	createProject(t, n, "lsq")
	env := serverEnv(n)
	cli := func(args ...string) string {
		t.Helper()
		return runOK(t, env, args...)
	}
	submit := func(priority string) string {
		t.Helper()
		return detachedID(t, cli("run", "-p", "lsq", "-d", "--priority", priority, "--", "true"))
	}
	// listed polls jobs ls until it holds want jobs (the index is written
	// after the submit replies).
	listed := func(want int, args ...string) contracts.JobList {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		var l contracts.JobList
		if await.Poll(ctx, func() bool {
			l = mustJSON[contracts.JobList](t, cli(append([]string{"jobs", "ls", "-o", "json"}, args...)...))
			return len(l.Jobs) >= want
		}) != nil {
			t.Fatalf("jobs ls %v: %+v, want %d jobs", args, l, want)
		}
		return l
	}

	var ids []string
	for range 3 {
		ids = append(ids, submit("normal"))
	}
	newest := slices.Clone(ids)
	slices.Reverse(newest)
	for _, args := range [][]string{{"-p", "lsq"}, nil} { // one project; every project (no -p, no context)
		l := listed(3, args...)
		var got []string
		for _, j := range l.Jobs {
			got = append(got, j.JobID)
		}
		if !slices.Equal(got, newest) {
			t.Fatalf("jobs ls %v: %v, want newest first %v", args, got, newest)
		}
	}
	if l := listed(1, "-p", "lsq", "--limit", "2"); len(l.Jobs) != 2 || l.NextCursor == "" {
		t.Fatalf("jobs ls --limit 2: %+v, want 2 jobs and a next cursor", l)
	}
	if out := cli("jobs", "ls", "-p", "lsq", "--limit", "2"); !strings.Contains(out, "next page: --cursor ") {
		t.Fatalf("jobs ls table %q: want the next-cursor hint", out)
	}

	cli("queues", "pause", "low")
	low := submit("low")
	normal := submit("normal")
	waitFinal(t, n.http, normal, 30*time.Second) // a job after the low one ran
	if st := getJob(t, n.http, low); st.Status != contracts.StatusQueued {
		t.Fatalf("low job %s while low is paused, want queued", st.Status)
	}
	qs := mustJSON[contracts.QueueList](t, cli("queues", "ls", "-o", "json"))
	i := slices.IndexFunc(qs.Queues, func(q contracts.QueueStats) bool { return q.Priority == contracts.PriorityLow })
	if i < 0 || !qs.Queues[i].Paused {
		t.Fatalf("queues ls %+v: want low paused", qs)
	}
	if out := cli("queues", "ls"); !strings.Contains(out, "PAUSED") {
		t.Fatalf("queues ls table %q", out)
	}
	cli("queues", "resume", "low")
	if st := waitFinal(t, n.http, low, 30*time.Second); st.Status != contracts.StatusSucceeded {
		t.Fatalf("low job after resume: %s", st.Status)
	}
	if _, stderr, code := runCLI(t, env, "queues", "pause", "urgent"); code == 0 || !strings.Contains(stderr, `must be one of "high","normal","low"`) {
		t.Fatalf("pause of an unknown level: exit %d, %s", code, stderr)
	}
}
