package jobs

import (
	"context"
	"errors"
	"fmt"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// Retrier is who asks for a retry, and how.
type Retrier struct {
	// Actor (an API key id) and ClientIP are audited with the new job.
	Actor, ClientIP string
	// CanRead says whether the actor may read the project: a retry
	// repeated under an idempotency key returns the first one's job only
	// to a reader or to whoever retried first.
	CanRead bool
	// Incarnation is the project's incarnation now: the new job's.
	Incarnation string
	// Trace is the request's trace context.
	Trace map[string]string
	// IdempotencyKey, when set, makes a repeated retry (a client that
	// did not get the answer) return the job the first one queued.
	IdempotencyKey string
}

// Retry queues the ended job st again as a new job (new ids, first
// attempt, a fresh stream, no batch) from the spec it was submitted as,
// and says whether the job returned is an earlier retry's, replayed for
// the same idempotency key. Only a job that failed, timed out or was
// cancelled is retried; any other, and one whose spec is gone or held env
// values (not kept at rest), is refused with an *Error (conflict) that
// says what to do instead.
func (s *Service) Retry(ctx context.Context, st contracts.JobState, by Retrier) (contracts.JobState, bool, error) {
	switch st.Status {
	case contracts.StatusFailed, contracts.StatusTimedOut, contracts.StatusCancelled:
	case contracts.StatusSucceeded:
		return contracts.JobState{}, false, conflict("job_succeeded", fmt.Sprintf("job %s succeeded; only a job that failed, timed out or was cancelled is retried: submit it again to run it once more", st.JobID))
	default:
		return contracts.JobState{}, false, conflict("job_not_finished", fmt.Sprintf("job %s is %s; a job is retried once it has ended: cancel it (POST /v1/jobs/%s/cancel) or wait for its end", st.JobID, st.Status, st.JobID))
	}
	if err := checkIdempotencyKey(by.IdempotencyKey); err != nil {
		return contracts.JobState{}, false, err
	}
	job, err := s.store.Spec(ctx, st.JobID)
	if errors.Is(err, ErrNotFound) {
		return contracts.JobState{}, false, conflict("job_not_retriable", fmt.Sprintf("job %s has no stored request to run again (submitted before retries were kept, or expired with its state); submit it again", st.JobID))
	}
	if err != nil {
		return contracts.JobState{}, false, fmt.Errorf("load spec of job %s: %w: %w", st.JobID, ErrUnavailable, err)
	}
	for _, v := range job.Env {
		if v == contracts.Redacted {
			return contracts.JobState{}, false, conflict("job_env_redacted", fmt.Sprintf("job %s set env values, which are not kept once a job is queued; submit it again "+
				`with its env (keep secrets in project secrets, referenced as {"secret":"<name>"}: those are kept and retried)`, st.JobID))
		}
	}
	job.Attempt, job.IdempotencyKey, job.BatchID, job.BatchAtomic = 1, by.IdempotencyKey, "", false
	job.ProjectIncarnation, job.Trace = by.Incarnation, traceContext(by.Trace)
	return s.queueNew(ctx, job, by.Actor, by.ClientIP, by.CanRead)
}

func conflict(code, msg string) *Error { return &Error{Kind: KindConflict, Code: code, Message: msg} }
