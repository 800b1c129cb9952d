package main

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// Under `rdev up` (the API's least-privilege NATS user, a real worker) a
// schedule is created, listed with its next runs, triggered, and its run
// shows the job's outcome.
func TestScheduleTriggerRunsUnderUp(t *testing.T) {
	t.Parallel()
	n := startInProcess(t)
	submit(t, n.http, "cron", map[string]any{"command": []string{"true"}}) // creates the project
	status, rb := call(t, http.MethodPost, n.http+"/v1/projects/cron/schedules", map[string]any{
		"name": "nightly", "cron": "0 3 * * *", "timezone": "America/New_York", "job": map[string]any{"command": []string{"true"}}})
	if status != http.StatusCreated {
		t.Fatalf("create: %d %s", status, rb)
	}
	sc := mustJSON[contracts.ScheduleResponse](t, rb)
	// 03:00 in New York is 08:00 UTC in winter, 07:00 in summer.
	if h := sc.NextRuns[0].UTC().Hour(); len(sc.NextRuns) != 5 || (h != 7 && h != 8) {
		t.Fatalf("next runs %v", sc.NextRuns)
	}
	status, rb = call(t, http.MethodPost, n.http+"/v1/projects/cron/schedules/"+sc.ID+"/trigger", nil)
	if status != http.StatusAccepted {
		t.Fatalf("trigger: %d %s", status, rb)
	}
	run := mustJSON[contracts.ScheduleRun](t, rb)
	if st := waitFinal(t, n.http, run.JobID, 30*time.Second); st.Status != contracts.StatusSucceeded {
		t.Fatalf("triggered job %+v", st)
	}
	status, rb = call(t, http.MethodGet, n.http+"/v1/projects/cron/schedules", nil)
	l := mustJSON[contracts.ScheduleList](t, rb)
	if status != http.StatusOK || len(l.Schedules) != 1 || len(l.Schedules[0].Runs) != 1 ||
		l.Schedules[0].Runs[0].Status != contracts.StatusSucceeded {
		t.Fatalf("list: %d %s", status, rb)
	}
}

// The schedules commands: create, ls, get, trigger, pause, resume,
// delete; and a delayed job shows its run_at in jobs get.
func TestSchedulesCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	t.Parallel()
	n := startInProcess(t)
	createProject(t, n, "cronc")
	env := serverEnv(n)
	cli := func(args ...string) string {
		t.Helper()
		// -p before the arguments: what follows -- is the command.
		out, stderr, code := runCLI(t, env, append(append(args[:2:2], "-p", "cronc"), args[2:]...)...)
		if code != 0 {
			t.Fatalf("rdev %v: exit %d, %s", args, code, stderr)
		}
		return out
	}
	sc := mustJSON[contracts.ScheduleResponse](t, cli("schedules", "create", "-o", "json", "--tz", "Europe/Berlin", "--overlap", "skip",
		"nightly", "30 2 * * *", "--", "echo", "hi"))
	if sc.Cron != "30 2 * * *" || sc.Overlap != "skip" || len(sc.NextRuns) != 5 || !slices.Equal(sc.Job.Command, []string{"echo", "hi"}) {
		t.Fatalf("created %+v", sc)
	}
	if out := cli("schedules", "ls"); !strings.Contains(out, sc.ID) || !strings.Contains(out, "Europe/Berlin") {
		t.Fatalf("ls:\n%s", out)
	}
	run := mustJSON[contracts.ScheduleRun](t, cli("schedules", "trigger", "-o", "json", sc.ID))
	if st := waitFinal(t, n.http, run.JobID, 30*time.Second); st.Status != contracts.StatusSucceeded {
		t.Fatalf("triggered job %+v", st)
	}
	if out := cli("schedules", "get", sc.ID); !strings.Contains(out, run.JobID) || !strings.Contains(out, "succeeded") ||
		!strings.Contains(out, "next runs:") {
		t.Fatalf("get:\n%s", out)
	}
	if p := mustJSON[contracts.ScheduleResponse](t, cli("schedules", "pause", "-o", "json", sc.ID)); !p.Paused {
		t.Fatalf("pause: %+v", p)
	}
	if p := mustJSON[contracts.ScheduleResponse](t, cli("schedules", "resume", "-o", "json", sc.ID)); p.Paused {
		t.Fatalf("resume: %+v", p)
	}
	cli("schedules", "delete", sc.ID)
	if _, stderr, code := runCLI(t, env, "schedules", "get", sc.ID, "-p", "cronc"); code == 0 || !strings.Contains(stderr, "schedule_not_found") {
		t.Fatalf("get after delete: exit %d, %s", code, stderr)
	}

	r := submit(t, n.http, "cronc", map[string]any{"command": []string{"true"}, "run_in_seconds": 3600})
	out, stderr, code := runCLI(t, env, "jobs", "get", r.JobID)
	if code != 0 || !strings.Contains(out, "RUN AT") || !strings.Contains(out, "scheduled") {
		t.Fatalf("jobs get of a delayed job: exit %d\n%s%s", code, out, stderr)
	}
}
