package main

import (
	"cmp"
	"log/slog"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// maxDelay bounds --max-job-delay by what keeps a scheduled job: its
// state (--state-ttl after its last write) and its message (the jobs
// stream's max age) must outlive the wait, with an hour to spare.
func maxDelay(flag, stateTTL time.Duration, log *slog.Logger) time.Duration {
	keep := min(cmp.Or(stateTTL, contracts.DefaultStateTTL), contracts.DefaultJobsMaxAge) - time.Hour
	if flag > keep {
		log.Warn("--max-job-delay is longer than a scheduled job is kept; using the shorter bound",
			"max_job_delay", flag, "bound", keep)
		return keep
	}
	return flag
}
