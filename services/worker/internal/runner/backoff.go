package runner

import (
	"slices"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// Backoff is exponential backoff with full jitter: the delay before
// attempt n+1 is drawn uniformly from [0, min(Cap, Base·2^(n-1))], so
// retries of many jobs failing together spread out instead of returning
// in waves.
type Backoff struct {
	Base, Cap time.Duration
	// Jitter returns a number in [0, 1); it scales the bound.
	Jitter func() float64
}

// Bound is the largest delay after the failure of attempt n (from 1).
func (b Backoff) Bound(n int) time.Duration {
	d := b.Base
	for i := 1; i < n && d < b.Cap; i++ {
		d *= 2
	}
	return min(d, b.Cap)
}

// Delay is the delay after the failure of attempt n.
func (b Backoff) Delay(n int) time.Duration {
	return time.Duration(b.Jitter() * float64(b.Bound(n)))
}

// retryable reports whether an attempt that ended with reason (and exit
// code, for ReasonExitCode) may be retried while attempts remain: failures
// that are not the command's own, and exit codes the job lists. A plain
// non-zero exit, a timeout, a cancel and a command that cannot start are
// final.
func retryable(job contracts.Job, reason string, exitCode *int) bool {
	switch reason {
	case contracts.ReasonWorkerLost, contracts.ReasonPodLost, contracts.ReasonPodNotReady, contracts.ReasonExecutorError:
		return true
	case contracts.ReasonExitCode:
		return exitCode != nil && slices.Contains(job.RetryOnExitCodes, *exitCode)
	}
	return false
}

// deadLetterDue reports whether a job that ended in st gave up on failures
// that retries were meant to cover: its attempts are spent on them. A job
// that just failed (no retry asked for its exit code) is not a dead letter.
func deadLetterDue(job contracts.Job, st contracts.JobState) bool {
	return st.Status == contracts.StatusFailed && retryable(job, st.Reason, st.ExitCode) && st.Attempt >= job.Attempts()
}
