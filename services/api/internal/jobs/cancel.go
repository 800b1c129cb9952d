package jobs

import (
	"context"
	"errors"
	"fmt"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// errEnded stops a state change of a job that has already ended.
var errEnded = errors.New("job ended")

// Cancel stops a job. A queued or scheduled job is ended at once (status cancelled,
// reason cancelled) and never starts: its worker finds it final and drops
// it. For a running job the state records the request and every worker
// hears it on the cancel subject; the one running the job kills it and
// ends it cancelled. Cancelling a finished job is a KindConflict *Error;
// cancelling twice is not an error.
func (s *Service) Cancel(ctx context.Context, id string) (contracts.JobState, error) {
	if !contracts.ValidID(id) {
		return contracts.JobState{}, invalid("invalid_job_id", "job id must be 1 to 64 letters, digits, '_' or '-'")
	}
	var was contracts.Status
	st, err := s.store.Update(ctx, id, func(st *contracts.JobState) error {
		was = st.Status
		switch st.Status {
		case contracts.StatusQueued, contracts.StatusScheduled:
			now := s.now().UTC()
			st.Status, st.Reason, st.Message, st.FinishedAt = contracts.StatusCancelled, contracts.ReasonCancelled, "cancelled while "+string(st.Status), &now
			st.NextAttemptAt = nil
		case contracts.StatusRunning:
			st.CancelRequested = true
		default:
			return errEnded
		}
		return nil
	})
	switch {
	case errors.Is(err, ErrNotFound):
		return st, &Error{Kind: KindNotFound, Code: "job_not_found", Message: fmt.Sprintf("no job %q (unknown, or its state expired)", id)}
	case errors.Is(err, errEnded):
		return st, &Error{Kind: KindConflict, Code: "job_finished", Message: fmt.Sprintf("job %s already ended %s; there is nothing to cancel", id, st.Status)}
	case err != nil:
		return st, fmt.Errorf("cancel job %s: %w: %w", id, ErrUnavailable, err)
	}
	if was == contracts.StatusQueued || was == contracts.StatusScheduled {
		ev := contracts.Event{
			V: contracts.Version, Type: contracts.EventCancelled, Status: contracts.StatusCancelled, JobID: st.JobID,
			StreamID: st.StreamID, Project: st.Project, Attempt: st.Attempt, Reason: st.Reason, Message: st.Message,
			BatchID: st.BatchID, Time: *st.FinishedAt,
		}
		// Should this fail, the worker that receives the job finds it
		// final and announces the end itself. A scheduled job's message
		// stays in JetStream until due; the worker drops it the same way.
		if err := s.control.Announce(ctx, ev); err != nil {
			return st, fmt.Errorf("announce cancel of %s: %w: %w", id, ErrUnavailable, err)
		}
		return st, nil
	}
	if err := s.control.RequestCancel(ctx, id); err != nil {
		return st, fmt.Errorf("request cancel of %s: %w: %w", id, ErrUnavailable, err)
	}
	return st, nil
}

// Lister finds the jobs a project still has in the queue.
type Lister interface {
	// Pending returns the ids of the project's jobs in the queue: queued,
	// waiting for a retry, or running (a job leaves the queue when it
	// ends).
	Pending(ctx context.Context, project string) ([]string, error)
}

// CancelProject cancels every job of project that has not ended, as
// deleting the project does, and returns how many it cancelled or is
// stopping. Jobs that end meanwhile are skipped.
func (s *Service) CancelProject(ctx context.Context, project string) (int, error) {
	if s.lister == nil {
		return 0, nil
	}
	ids, err := s.lister.Pending(ctx, project)
	if err != nil {
		return 0, fmt.Errorf("list the jobs of project %s: %w: %w", project, ErrUnavailable, err)
	}
	n := 0
	for _, id := range ids {
		_, err := s.Cancel(ctx, id)
		var je *Error
		switch {
		case errors.As(err, &je):
			// Ended or expired meanwhile.
		case err != nil:
			return n, err
		default:
			n++
		}
	}
	return n, nil
}
