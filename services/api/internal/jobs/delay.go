package jobs

import (
	"fmt"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// DefaultMaxDelay is how far ahead a job may be scheduled when Limits
// gives no MaxDelay: as long as the default state TTL and jobs stream
// age keep a waiting job, with an hour to spare, so that the defaults
// agree (a longer default was cut to this at every start, with a
// warning nobody could act on).
const DefaultMaxDelay = min(contracts.DefaultStateTTL, contracts.DefaultJobsMaxAge) - time.Hour

// timing applies a submission's run_at, run_in_seconds and deadline to
// job, as of now: a time not in the future queues the job at once, so
// only a job that really waits is scheduled.
func (l Limits) timing(sub Submission, job *contracts.Job, now time.Time) error {
	var runAt time.Time
	switch {
	case sub.RunAt != "" && sub.RunInSeconds != 0:
		return invalid("invalid_run_at", "give run_at or run_in_seconds, not both")
	case sub.RunInSeconds < 0:
		return invalid("invalid_run_in_seconds", "run_in_seconds must not be negative")
	case sub.RunInSeconds > 0:
		if sub.RunInSeconds > int(l.MaxDelay/time.Second) {
			return invalid("invalid_run_in_seconds", fmt.Sprintf("run_in_seconds must be at most %d (%s ahead)", int(l.MaxDelay/time.Second), l.MaxDelay))
		}
		runAt = now.Add(time.Duration(sub.RunInSeconds) * time.Second)
	case sub.RunAt != "":
		t, err := time.Parse(time.RFC3339Nano, sub.RunAt)
		if err != nil {
			return invalid("invalid_run_at", fmt.Sprintf("run_at %q is not an RFC 3339 time such as 2030-01-02T15:04:05Z", sub.RunAt))
		}
		if t.Sub(now) > l.MaxDelay {
			return invalid("invalid_run_at", fmt.Sprintf("run_at is more than %s ahead; the latest allowed now is %s", l.MaxDelay, now.Add(l.MaxDelay).UTC().Format(time.RFC3339)))
		}
		runAt = t
	}
	if runAt.After(now) {
		at := runAt.UTC()
		job.RunAt = &at
	}
	if sub.Deadline == "" {
		return nil
	}
	d, err := time.Parse(time.RFC3339Nano, sub.Deadline)
	if err != nil {
		return invalid("invalid_deadline", fmt.Sprintf("deadline %q is not an RFC 3339 time such as 2030-01-02T15:04:05Z", sub.Deadline))
	}
	if !d.After(now) || (job.RunAt != nil && !d.After(*job.RunAt)) {
		return invalid("invalid_deadline", "deadline must be in the future and after run_at: the job could never start")
	}
	d = d.UTC()
	job.Deadline = &d
	return nil
}
