package contracts

import "time"

// Status is a job's state as GET /v1/jobs/{id} reports it.
type Status string

// The job statuses. Scheduled, Queued and Running are the only non-final
// ones.
const (
	// StatusScheduled: the job waits for its run_at time, then is queued.
	StatusScheduled Status = "scheduled"
	StatusQueued    Status = "queued"
	StatusRunning   Status = "running"
	StatusSucceeded Status = "succeeded"
	StatusFailed    Status = "failed"
	StatusCancelled Status = "cancelled"
	StatusTimedOut  Status = "timed_out"
	// StatusExpired: the job's deadline passed before it started.
	StatusExpired Status = "expired"
)

// Final reports whether the job has ended.
func (s Status) Final() bool {
	return s != StatusScheduled && s != StatusQueued && s != StatusRunning && s != ""
}

// StatusOf returns the status a terminal event leaves the job in.
func StatusOf(t EventType) Status {
	switch t {
	case EventScheduled:
		return StatusScheduled
	case EventQueued:
		return StatusQueued
	case EventStarted:
		return StatusRunning
	case EventRetrying:
		return StatusQueued
	case EventSucceeded:
		return StatusSucceeded
	case EventCancelled:
		return StatusCancelled
	case EventTimedOut:
		return StatusTimedOut
	case EventExpired:
		return StatusExpired
	}
	return StatusFailed
}

// EndOf returns the terminal event that leaves a job in final status s
// (the inverse of StatusOf for final statuses).
func EndOf(s Status) EventType {
	switch s {
	case StatusSucceeded:
		return EventSucceeded
	case StatusCancelled:
		return EventCancelled
	case StatusTimedOut:
		return EventTimedOut
	case StatusExpired:
		return EventExpired
	}
	return EventFailed
}

// JobState is the stored state of a job, kept in BucketState under
// JobKey(id) after the job ends, and served by GET /v1/jobs/{id}.
type JobState struct {
	// V is the message version (Version).
	V int `json:"v"`
	// JobID identifies the job.
	JobID string `json:"job_id"`
	// Project is the job's project.
	Project string `json:"project"`
	// Kind is exec or claude.
	Kind Kind `json:"kind"`
	// Priority is the queue level.
	Priority Priority `json:"priority"`
	// Command is the argv the job runs (Job.Command): the caller's, or for
	// a Claude job the one the API built, the prompt last.
	Command []string `json:"command,omitempty"`
	// Status is where the job is now.
	Status Status `json:"status"`
	// StreamID is the job's output stream.
	StreamID string `json:"stream_id"`
	// Attempt is the current or last attempt, 0 before the first starts.
	Attempt int `json:"attempt"`
	// Worker is the id of the worker running or last running the job.
	Worker string `json:"worker,omitempty"`
	// ExitCode is the command's exit status once it exited.
	ExitCode *int `json:"exit_code,omitempty"`
	// Reason explains a failure (see the Reason constants).
	Reason string `json:"reason,omitempty"`
	// Message is a human readable detail for Reason.
	Message string `json:"message,omitempty"`
	// Lines is the number of output lines stored so far, updated at the end.
	Lines uint64 `json:"lines"`
	// SubmittedAt is when the API accepted the job.
	SubmittedAt time.Time `json:"submitted_at"`
	// StartedAt is when the current attempt started.
	StartedAt *time.Time `json:"started_at,omitempty"`
	// FinishedAt is when the job ended.
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	// IdempotencyKey is the caller's key, if one was given.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// MaxAttempts is the job's attempt budget (see Job.MaxAttempts).
	MaxAttempts int `json:"max_attempts,omitempty"`
	// BatchID is the job's batch, if any.
	BatchID string `json:"batch_id,omitempty"`
	// CancelRequested is set when someone asked to cancel the running job;
	// the worker running it stops it and ends the job cancelled.
	CancelRequested bool `json:"cancel_requested,omitempty"`
	// NextAttemptAt is, while a failed attempt waits for its retry, when
	// the next one may start.
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"`
	// TraceID is the W3C trace id (32 hex digits) of the trace the job's
	// spans belong to: the submitter's own when it sent a traceparent.
	TraceID string `json:"trace_id,omitempty"`
	// Claude is what a Claude Code job reported about its session (set
	// when the job ends, if it printed stream-json).
	Claude *ClaudeSession `json:"claude,omitempty"`
	// ClaudeOptions are a Claude Code job's options, as submitted.
	ClaudeOptions *ClaudeOptions `json:"claude_options,omitempty"`
	// ProjectIncarnation identifies the incarnation of Project this job
	// belongs to (access.Project.Incarnation): a project deleted and
	// created again under the same id is another incarnation, and does
	// not see the old one's jobs. Empty on records written before
	// incarnations.
	ProjectIncarnation string `json:"project_incarnation,omitempty"`
	// RunAt is when a delayed job becomes queued (Job.RunAt).
	RunAt *time.Time `json:"run_at,omitempty"`
	// Deadline is when a job not started yet expires (Job.Deadline).
	Deadline *time.Time `json:"deadline,omitempty"`
}

// StreamRef is stored in BucketState under StreamKey(id) so a reader of a
// stream (the streamer) can tell an unknown stream from one not yet started.
type StreamRef struct {
	// V is the message version (Version).
	V int `json:"v"`
	// StreamID is the stream.
	StreamID string `json:"stream_id"`
	// JobID is the job writing to it.
	JobID string `json:"job_id"`
	// Project is the job's project.
	Project string `json:"project"`
	// Trace carries the W3C trace context (traceparent, tracestate) of the
	// job's submission, so readers of the stream (the streamer) add their
	// spans to the job's trace.
	Trace map[string]string `json:"trace,omitempty"`
	// ProjectIncarnation identifies the incarnation of Project this stream
	// belongs to (access.Project.Incarnation): a project deleted and
	// created again under the same id is another incarnation, and does
	// not see the old one's streams. Empty on records written before
	// incarnations.
	ProjectIncarnation string `json:"project_incarnation,omitempty"`
}

// QueuedState is the state of a job just queued (or scheduled, when it
// has a RunAt), built from its message:
// what the API stores at submit, and what a worker that claims the job
// straight from its message writes over (one definition, so neither drops
// a field the other keeps).
func QueuedState(job Job) JobState {
	st := JobState{
		V: Version, JobID: job.ID, Project: job.Project, Kind: job.Kind,
		Priority: job.Priority, Command: job.Command, Status: StatusQueued, StreamID: job.StreamID,
		SubmittedAt: job.SubmittedAt, IdempotencyKey: job.IdempotencyKey,
		MaxAttempts: job.MaxAttempts, BatchID: job.BatchID, TraceID: TraceID(job.Trace),
		ProjectIncarnation: job.ProjectIncarnation, RunAt: job.RunAt, Deadline: job.Deadline,
	}
	if job.RunAt != nil {
		st.Status = StatusScheduled
	}
	return st
}
