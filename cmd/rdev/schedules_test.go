package main

import (
	"net/http"
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
