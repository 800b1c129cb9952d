package worker_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/worker"
	"github.com/rdev-dev/rdev/services/worker/internal/natsjs"
)

// Before a worker declares a job's worker lost it asks on
// rdev.control.holds.<job_id>: the worker running the job answers, for any
// other asker; nobody answers for a job nobody runs, nor to the holder
// asking about its own single delivery.
func TestWorkerAnswersWhetherItHoldsAJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	release := make(chan struct{})
	exec := &scripted{step: func(ctx context.Context, _ int, out io.Writer) (int, error) {
		_, _ = io.WriteString(out, "holding\n")
		select {
		case <-release:
			return 0, nil
		case <-ctx.Done():
			return -1, context.Cause(ctx)
		}
	}}
	cfg := worker.WithExecutor(worker.Config{}, exec)
	cfg.ID = "holder"
	b.start(cfg)
	job := b.submit(t, newJob("held1", "demo", "anything"))
	b.next(t, job.ID, contracts.EventStarted)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		asker, job string
		want       bool
	}{
		{asker: "other", job: job.ID, want: true},
		{asker: "other", job: "nobody-runs-this", want: false},
		{asker: "holder", job: job.ID, want: false},
	} {
		held, err := natsjs.NewHolders(b.nc, tc.asker, 300*time.Millisecond).Held(ctx, tc.job)
		if err != nil || held != tc.want {
			t.Errorf("asked by %s about %s: held %v, %v; want %v", tc.asker, tc.job, held, err, tc.want)
		}
	}
	close(release)
	if ev := b.next(t, job.ID, contracts.EventSucceeded, contracts.EventFailed); ev.Type != contracts.EventSucceeded {
		t.Fatalf("terminal event %+v", ev)
	}
}
