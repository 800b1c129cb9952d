package client_test

import (
	"context"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/client"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// A job run by the real worker is listed with its final status, and its
// logs read back as text: followed to the end, per fd, with or without
// its colours.
func TestListJobsAndLogs(t *testing.T) {
	t.Parallel()
	c := newClient(t, adminKey)
	project(t, c, "client-list")
	sub, err := c.SubmitCommand(ctx(t), "client-list", contracts.CommandRequest{
		Command: []string{"sh", "-c", `printf '\033[32mgreen\033[0m\n'; echo to-stderr >&2; echo done`}})
	if err != nil {
		t.Fatal(err)
	}
	// Following from submission returns once the job ends.
	r, err := c.Logs(ctx(t), sub.JobID, client.LogsOptions{Follow: true, StripANSI: true})
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	_ = r.Close()
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if err != nil || len(lines) != 3 || !slices.Contains(lines, "to-stderr") ||
		slices.Index(lines, "green") < 0 || slices.Index(lines, "green") > slices.Index(lines, "done") {
		t.Fatalf("followed logs %q (%v), want green, to-stderr and done, green before done", b, err)
	}
	for _, c2 := range []struct {
		o    client.LogsOptions
		want string
	}{
		{client.LogsOptions{FD: contracts.Stdout}, "\x1b[32mgreen\x1b[0m\ndone\n"},
		{client.LogsOptions{FD: contracts.Stderr, Attempt: 1}, "to-stderr\n"},
		{client.LogsOptions{Attempt: 2}, ""},
		{client.LogsOptions{Since: time.Now().Add(time.Hour)}, ""},
		{client.LogsOptions{FD: contracts.Stdout, Since: time.Now().Add(-time.Hour), StripANSI: true}, "green\ndone\n"},
	} {
		r, err := c.Logs(ctx(t), sub.JobID, c2.o)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(r)
		_ = r.Close()
		if err != nil || string(b) != c2.want {
			t.Errorf("logs %+v: %q (%v), want %q", c2.o, b, err, c2.want)
		}
	}

	var listed contracts.JobList
	await.Within(t, 10*time.Second, "the job listed as succeeded", func() bool {
		listed, err = c.ListJobs(ctx(t), "client-list", client.JobFilter{Status: contracts.StatusSucceeded}, client.Page{Limit: 10})
		return err == nil && len(listed.Jobs) == 1
	})
	if j := listed.Jobs[0]; j.JobID != sub.JobID || j.ExitCode == nil || *j.ExitCode != 0 {
		t.Fatalf("listed %+v", j)
	}
	all, err := c.ListAllJobs(ctx(t), "client-list", client.JobFilter{Since: time.Now().Add(-time.Hour)}, client.Page{})
	if err != nil || len(all.Jobs) != 1 || all.Jobs[0].JobID != sub.JobID {
		t.Fatalf("ListAllJobs: %+v, %v", all, err)
	}
	if _, err := c.ListJobs(ctx(t), "client-list", client.JobFilter{Status: "done"}, client.Page{}); !client.IsCode(err, "invalid_status") {
		t.Fatalf("bad status: %v, want invalid_status", err)
	}
	if _, err := c.Logs(ctx(t), "nope", client.LogsOptions{}); !client.IsCode(err, "job_not_found") {
		t.Fatalf("logs of an unknown job: %v, want job_not_found", err)
	}
	qs, err := c.Queues(ctx(t))
	if err != nil || len(qs.Queues) != 3 || qs.Queues[0].Priority != contracts.PriorityHigh || qs.Queues[1].DispatchedLastMinute < 1 {
		t.Fatalf("Queues: %+v, %v; want three levels, high first, this test's job dispatched at normal", qs, err)
	}
}

// A paused level holds its jobs on the real worker until resumed.
func TestPauseAndResumeQueue(t *testing.T) {
	t.Parallel()
	c := newClient(t, adminKey)
	project(t, c, "client-pause")
	// Low is paused by this test alone: the others submit at normal.
	p, err := c.PauseQueue(ctx(t), contracts.PriorityLow)
	if err != nil || !p.Paused || p.Priority != contracts.PriorityLow {
		t.Fatalf("PauseQueue: %+v, %v", p, err)
	}
	t.Cleanup(func() { _, _ = c.ResumeQueue(context.Background(), contracts.PriorityLow) })
	held, err := c.SubmitCommand(ctx(t), "client-pause", contracts.CommandRequest{Command: []string{"true"},
		SubmitOptions: contracts.SubmitOptions{Priority: string(contracts.PriorityLow)}})
	if err != nil {
		t.Fatal(err)
	}
	probe, err := c.SubmitCommand(ctx(t), "client-pause", contracts.CommandRequest{Command: []string{"true"}})
	if err != nil {
		t.Fatal(err)
	}
	await.Within(t, 30*time.Second, "the normal job to end", func() bool {
		j, err := c.Job(ctx(t), probe.JobID)
		return err == nil && j.Status.Final()
	})
	qs, err := c.Queues(ctx(t))
	if err != nil || !qs.Queues[2].Paused || qs.Queues[2].Waiting < 1 {
		t.Fatalf("queues while low is paused: %+v, %v", qs, err)
	}
	if j, err := c.Job(ctx(t), held.JobID); err != nil || j.Status != contracts.StatusQueued {
		t.Fatalf("the low job while paused: %+v, %v; want queued", j, err)
	}
	if p, err := c.ResumeQueue(ctx(t), contracts.PriorityLow); err != nil || p.Paused {
		t.Fatalf("ResumeQueue: %+v, %v", p, err)
	}
	await.Within(t, 30*time.Second, "the low job to succeed", func() bool {
		j, err := c.Job(ctx(t), held.JobID)
		return err == nil && j.Status == contracts.StatusSucceeded
	})
	if _, err := c.PauseQueue(ctx(t), "urgent"); !client.IsCode(err, "invalid_priority") {
		t.Fatalf("pause of no level: %v, want invalid_priority", err)
	}
}
