package runner_test

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/worker/internal/executor"
)

// A delayed job delivered before its run_at (a clock apart from the
// server's) goes back to the queue until then, unclaimed and not run.
func TestDelayedJobDeliveredEarlyWaits(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.exec = func(context.Context, executor.Spec, io.Writer, io.Writer) (int, error) {
		t.Error("a job ran before its run_at")
		return 0, nil
	}
	job := testJob("j1")
	at := time.Now().Add(time.Hour).UTC()
	job.RunAt = &at
	d := f.queue(t, job)
	f.r.Handle(t.Context(), d)

	d.mu.Lock()
	outcome := d.outcome
	d.mu.Unlock()
	if len(outcome) != 1 || !strings.HasPrefix(outcome[0], "nak 59m") {
		t.Fatalf("delivery settled with %v, want a nak for about an hour", outcome)
	}
	if st := f.states.get(t, "j1"); st.Status != contracts.StatusScheduled || st.Attempt != 0 {
		t.Errorf("state = %s attempt %d, want scheduled, 0", st.Status, st.Attempt)
	}
	f.events.want(t)
}

// A job delivered after its deadline, never started, ends expired without
// running.
func TestJobPastItsDeadlineExpires(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.exec = func(context.Context, executor.Spec, io.Writer, io.Writer) (int, error) {
		t.Error("a job ran after its deadline")
		return 0, nil
	}
	job := testJob("j1")
	deadline := time.Now().Add(-time.Second).UTC()
	job.Deadline = &deadline
	d := f.queue(t, job)
	f.r.Handle(t.Context(), d)

	d.settled(t, "ack")
	st := f.states.get(t, "j1")
	if st.Status != contracts.StatusExpired || st.Reason != contracts.ReasonDeadline || st.StartedAt != nil {
		t.Errorf("state = %s reason %q started %v, want expired, deadline, never", st.Status, st.Reason, st.StartedAt)
	}
	f.events.want(t, contracts.EventExpired)
}
