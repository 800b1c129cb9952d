package runner

import (
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// The bound doubles from Base per attempt and stops at Cap; the delay
// scales it by the jitter (full jitter), never exceeding it.
func TestBackoffBoundAndJitter(t *testing.T) {
	t.Parallel()
	b := Backoff{Base: time.Second, Cap: 5 * time.Minute, Jitter: func() float64 { return 0.5 }}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}
	for i, w := range want {
		if got := b.Bound(i + 1); got != w {
			t.Errorf("Bound(%d) = %s, want %s", i+1, got, w)
		}
		if got := b.Delay(i + 1); got != w/2 {
			t.Errorf("Delay(%d) = %s, want %s", i+1, got, w/2)
		}
	}
	if got := b.Bound(40); got != 5*time.Minute {
		t.Errorf("Bound(40) = %s, want the cap", got)
	}
	b.Jitter = func() float64 { return 0 }
	if got := b.Delay(3); got != 0 {
		t.Errorf("Delay with jitter 0 = %s, want 0", got)
	}
}

// Only failures that are not the command's own, and listed exit codes,
// are retried; a job that just failed is not a dead letter.
func TestRetryableAndDeadLetterDue(t *testing.T) {
	t.Parallel()
	three, four := 3, 4
	job := contracts.Job{MaxAttempts: 2, RetryOnExitCodes: []int{3}}
	cases := []struct {
		reason string
		code   *int
		want   bool
	}{
		{contracts.ReasonWorkerLost, nil, true}, {contracts.ReasonPodLost, nil, true},
		{contracts.ReasonPodNotReady, nil, true}, {contracts.ReasonExecutorError, nil, true},
		{contracts.ReasonExitCode, &three, true}, {contracts.ReasonExitCode, &four, false},
		{contracts.ReasonTimeout, nil, false}, {contracts.ReasonCancelled, nil, false}, {contracts.ReasonStartFailed, nil, false},
	}
	for _, c := range cases {
		if got := retryable(job, c.reason, c.code); got != c.want {
			t.Errorf("retryable(%s, %v) = %v", c.reason, c.code, got)
		}
		st := contracts.JobState{Status: contracts.StatusFailed, Reason: c.reason, ExitCode: c.code, Attempt: 2}
		if got := deadLetterDue(job, st); got != c.want {
			t.Errorf("deadLetterDue(%s, %v, attempt 2 of 2) = %v", c.reason, c.code, got)
		}
		st.Attempt = 1
		if deadLetterDue(job, st) {
			t.Errorf("deadLetterDue(%s) with an attempt left", c.reason)
		}
	}
}
