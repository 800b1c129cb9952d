package runner

import (
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// timing decides whether a job may start now: wait > 0 when it came before
// its run_at (JetStream publishes a delayed job when due, so only a clock
// apart from the server's gets here), or an expired outcome when its
// deadline passed before it ever started.
func (r *Runner) timing(job contracts.Job, st contracts.JobState) (wait time.Duration, expired *outcome) {
	now := r.now()
	if job.Deadline != nil && st.StartedAt == nil && now.After(*job.Deadline) {
		return 0, &outcome{event: contracts.EventExpired, reason: contracts.ReasonDeadline, lines: st.Lines,
			message: "its deadline " + job.Deadline.UTC().Format(time.RFC3339) + " passed before it could start"}
	}
	if job.RunAt != nil {
		return job.RunAt.Sub(now), nil
	}
	return 0, nil
}
