package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/api"
)

// A delayed job is scheduled until its run_at, then runs, never before
// it; one cancelled while scheduled never runs (a later job proves its
// message came and went).
func TestDelayedJobRunsAtItsTimeAndCancelWhileScheduled(t *testing.T) {
	t.Parallel()
	n := startInProcess(t)
	r := submit(t, n.http, "later", map[string]any{"command": []string{"true"}, "run_in_seconds": 2})
	if r.Status != contracts.StatusScheduled {
		t.Fatalf("submit status %s, want scheduled", r.Status)
	}
	cancelled := submit(t, n.http, "later", map[string]any{"command": []string{"touch", "ran"}, "run_in_seconds": 2})
	if status, rb := call(t, http.MethodPost, n.http+"/v1/jobs/"+cancelled.JobID+"/cancel", nil); status != http.StatusOK {
		t.Fatalf("cancel: %d %s", status, rb)
	}
	after := submit(t, n.http, "later", map[string]any{"command": []string{"true"}, "run_in_seconds": 3})

	st := getJob(t, n.http, r.JobID)
	if st.Status != contracts.StatusScheduled || st.RunAt == nil || st.StartedAt != nil {
		t.Fatalf("state before run_at %+v", st)
	}
	st = waitFinal(t, n.http, r.JobID, 30*time.Second)
	if st.Status != contracts.StatusSucceeded || st.StartedAt == nil || st.StartedAt.Before(*st.RunAt) {
		t.Fatalf("delayed job %+v: want succeeded, started at or after run_at", st)
	}
	t.Logf("started %s after run_at", st.StartedAt.Sub(*st.RunAt))

	if st := waitFinal(t, n.http, after.JobID, 30*time.Second); st.Status != contracts.StatusSucceeded {
		t.Fatalf("later job %+v", st)
	}
	st = getJob(t, n.http, cancelled.JobID)
	if st.Status != contracts.StatusCancelled || st.StartedAt != nil || st.Attempt != 0 {
		t.Fatalf("job cancelled while scheduled: %+v", st)
	}
	if _, err := os.Stat(filepath.Join(n.dataDir, "workspaces", "later", "ran")); !os.IsNotExist(err) {
		t.Fatalf("the cancelled job ran: %v", err)
	}
	types := eventTypes(t, n, cancelled.EventsURL)
	if len(types) != 2 || types[0] != contracts.EventScheduled || types[1] != contracts.EventCancelled {
		t.Fatalf("events of the cancelled job %v, want scheduled, cancelled", types)
	}
}

// eventTypes reads a finished job's stream and returns its events' types.
func eventTypes(t *testing.T, n *node, eventsURL string) []contracts.EventType {
	t.Helper()
	s := openStream(t, n.http, eventsURL, "")
	var types []contracts.EventType
	for {
		ev, err := s.Next()
		must(t, err, "read SSE")
		switch ev.Name {
		case contracts.SSEStatus, contracts.SSEComplete:
			types = append(types, mustJSON[contracts.Event](t, ev.Data).Type)
		}
		if ev.Name == contracts.SSEComplete {
			return types
		}
	}
}

// A job not started by its deadline ends expired, with its reason, when
// a worker would have started it.
func TestDeadlinePassedEndsExpired(t *testing.T) {
	t.Parallel()
	n := startInProcess(t)
	if status, rb := call(t, http.MethodPost, n.http+"/v1/queues/low/pause", nil); status != http.StatusOK {
		t.Fatalf("pause: %d %s", status, rb)
	}
	deadline := time.Now().Add(time.Second)
	r := submit(t, n.http, "late", map[string]any{"command": []string{"true"}, "priority": "low",
		"deadline": deadline.UTC().Format(time.RFC3339Nano)})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	must(t, await.Poll(ctx, func() bool { return time.Now().After(deadline) }), "wait for the deadline")
	if status, rb := call(t, http.MethodPost, n.http+"/v1/queues/low/resume", nil); status != http.StatusOK {
		t.Fatalf("resume: %d %s", status, rb)
	}
	st := waitFinal(t, n.http, r.JobID, 30*time.Second)
	if st.Status != contracts.StatusExpired || st.Reason != contracts.ReasonDeadline || st.StartedAt != nil || st.Deadline == nil {
		t.Fatalf("job past its deadline: %+v", st)
	}
}

// run_at, run_in_seconds and deadline are refused with their codes when
// malformed, too far ahead or impossible.
func TestDelayRefused(t *testing.T) {
	t.Parallel()
	n := startInProcess(t, "--max-job-delay", "1h")
	submit(t, n.http, "refused", map[string]any{"command": []string{"true"}})
	now := time.Now().UTC()
	for _, c := range []struct {
		body map[string]any
		code string
	}{
		{map[string]any{"run_at": "tomorrow"}, "invalid_run_at"},
		{map[string]any{"run_at": now.Add(2 * time.Hour).Format(time.RFC3339)}, "invalid_run_at"},
		{map[string]any{"run_at": now.Add(time.Minute).Format(time.RFC3339), "run_in_seconds": 5}, "invalid_run_at"},
		{map[string]any{"run_in_seconds": -1}, "invalid_run_in_seconds"},
		{map[string]any{"run_in_seconds": 7200}, "invalid_run_in_seconds"},
		{map[string]any{"deadline": "soon"}, "invalid_deadline"},
		{map[string]any{"deadline": now.Add(-time.Minute).Format(time.RFC3339)}, "invalid_deadline"},
		{map[string]any{"run_in_seconds": 600, "deadline": now.Add(time.Minute).Format(time.RFC3339)}, "invalid_deadline"},
	} {
		c.body["command"] = []string{"true"}
		status, rb := call(t, http.MethodPost, n.http+"/v1/projects/refused/commands", c.body)
		if got := mustJSON[contracts.ErrorBody](t, rb); status != http.StatusBadRequest || got.Error.Code != c.code {
			t.Errorf("%v: %d %s, want 400 %s", c.body, status, rb, c.code)
		}
	}
}

// A scheduled job survives kill -9 of the whole node and runs once it is
// due, after the node is back.
func TestDelayedJobSurvivesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	t.Parallel()
	dataDir := t.TempDir()
	up := startProcess(t, upArgs(dataDir, "--without", "streamer")...)
	r := submit(t, up.http, "durable", map[string]any{"command": []string{"true"}, "run_in_seconds": 3})
	up.kill()
	again := startProcess(t, upArgs(dataDir, "--without", "streamer")...)
	st := waitFinal(t, again.http, r.JobID, 60*time.Second)
	if st.Status != contracts.StatusSucceeded || st.Attempt != 1 || st.StartedAt.Before(*st.RunAt) {
		t.Fatalf("job scheduled before kill -9: %+v", st)
	}
}

// The default --max-job-delay fits what keeps a scheduled job, so a
// default start warns of nothing; a longer one is cut, with a warning.
func TestDefaultMaxJobDelayFits(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	if got := maxDelay(api.DefaultMaxJobDelay, 0, log); got != api.DefaultMaxJobDelay || logs.Len() != 0 {
		t.Fatalf("default %s: bound %s, logged %q; want it unchanged and nothing logged", api.DefaultMaxJobDelay, got, logs.String())
	}
	if got := maxDelay(30*24*time.Hour, 0, log); got != api.DefaultMaxJobDelay || !strings.Contains(logs.String(), "level=WARN") {
		t.Fatalf("30 days: bound %s, logged %q; want it cut to %s with a warning", got, logs.String(), api.DefaultMaxJobDelay)
	}
}
