package jobs

import (
	"context"
	"errors"
	"fmt"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// Retry queues the ended job st again as a new job (new ids, first
// attempt, a fresh stream) from the spec it was submitted as, in the
// project's incarnation now, under trace. Only a job that failed, timed
// out or was cancelled is retried; any other, and one whose spec is gone
// or held env values (not kept at rest), is refused with an *Error
// (conflict) that says what to do instead.
func (s *Service) Retry(ctx context.Context, st contracts.JobState, incarnation, actor, clientIP string, trace map[string]string) (contracts.JobState, error) {
	switch st.Status {
	case contracts.StatusFailed, contracts.StatusTimedOut, contracts.StatusCancelled:
	case contracts.StatusSucceeded:
		return contracts.JobState{}, conflict("job_succeeded", fmt.Sprintf("job %s succeeded; only a job that failed, timed out or was cancelled is retried: submit it again to run it once more", st.JobID))
	default:
		return contracts.JobState{}, conflict("job_not_finished", fmt.Sprintf("job %s is %s; a job is retried once it has ended: cancel it (POST /v1/jobs/%s/cancel) or wait for its end", st.JobID, st.Status, st.JobID))
	}
	job, err := s.store.Spec(ctx, st.JobID)
	if errors.Is(err, ErrNotFound) {
		return contracts.JobState{}, conflict("job_not_retriable", fmt.Sprintf("job %s has no stored request to run again (submitted before retries were kept, or expired with its state); submit it again", st.JobID))
	}
	if err != nil {
		return contracts.JobState{}, fmt.Errorf("load spec of job %s: %w: %w", st.JobID, ErrUnavailable, err)
	}
	for _, v := range job.Env {
		if v == contracts.Redacted {
			return contracts.JobState{}, conflict("job_env_redacted", fmt.Sprintf("job %s set env values, which are not kept once a job is queued; submit it again "+
				`with its env (keep secrets in project secrets, referenced as {"secret":"<name>"}: those are kept and retried)`, st.JobID))
		}
	}
	job.ProjectIncarnation, job.Trace = incarnation, trace
	return s.Resubmit(ctx, job, actor, clientIP)
}

func conflict(code, msg string) *Error { return &Error{Kind: KindConflict, Code: code, Message: msg} }
