package contracts

import "time"

// EventType names a step in a job's life.
type EventType string

// The lifecycle events. Succeeded, Failed, Cancelled, TimedOut and Expired
// are terminal: exactly one of them ends every job.
const (
	// EventScheduled: the job was accepted with a run_at in the future; it
	// is queued then (no queued event follows: the next is started).
	EventScheduled EventType = "scheduled"
	EventQueued    EventType = "queued"
	EventStarted   EventType = "started"
	EventSucceeded EventType = "succeeded"
	EventFailed    EventType = "failed"
	EventCancelled EventType = "cancelled"
	EventTimedOut  EventType = "timed_out"
	// EventRetrying: an attempt failed and the job goes back to the queue
	// for the next one after a backoff; Reason says why, Attempt is the
	// attempt that failed and RetryInSeconds the delay.
	EventRetrying EventType = "retrying"
	// EventExpired: the job's deadline passed before it started.
	EventExpired EventType = "expired"
)

// EventTypes lists every lifecycle event type, in lifecycle order.
func EventTypes() []EventType {
	return []EventType{EventScheduled, EventQueued, EventStarted, EventRetrying,
		EventSucceeded, EventFailed, EventCancelled, EventTimedOut, EventExpired}
}

// Terminal reports whether t ends the job.
func (t EventType) Terminal() bool {
	switch t {
	case EventSucceeded, EventFailed, EventCancelled, EventTimedOut, EventExpired:
		return true
	}
	return false
}

// Reasons explain a failure that is not the command's own exit status.
const (
	// ReasonExitCode: the command exited with a non-zero status.
	ReasonExitCode = "exit_code"
	// ReasonTimeout: the job ran past its timeout and was killed.
	ReasonTimeout = "timeout"
	// ReasonStartFailed: the command could not be started (not found, ...).
	ReasonStartFailed = "start_failed"
	// ReasonWorkerLost: the worker running the job stopped heartbeating.
	ReasonWorkerLost = "worker_lost"
	// ReasonExecutorError: the executor failed while the command ran.
	ReasonExecutorError = "executor_error"
	// ReasonPodNotReady: the project's pod (Kubernetes executor) did not
	// become Ready in time, or cannot: crash-looping, image not pulled,
	// failed, or absent while pod creation is disabled.
	ReasonPodNotReady = "pod_not_ready"
	// ReasonPodLost: the project's pod was deleted or stopped while the job
	// ran in it.
	ReasonPodLost = "pod_lost"
	// ReasonOutputLost: the command ran, but not every line it printed
	// could be stored (NATS refused them, or a single server lost lines
	// it had acknowledged); the event's lines is what is stored. Never
	// retried: a new attempt would print into the same stream again.
	ReasonOutputLost = "output_lost"
	// ReasonCancelled: someone cancelled the job (POST .../cancel).
	ReasonCancelled = "cancelled"
	// ReasonDeadline: the job's deadline passed before it could start.
	ReasonDeadline = "deadline"
	// ReasonUndecodable: the job message could not be decoded (dead
	// letters only).
	ReasonUndecodable = "undecodable"
)

// Event is a lifecycle event, published to SubjectEvent. Events of one
// stream are stored in the output stream with its lines, so one ordered
// replay returns both, and a terminal event follows the stream's last line.
type Event struct {
	// V is the message version (Version).
	V int `json:"v"`
	// Type is what happened.
	Type EventType `json:"type"`
	// Status is the job's status after the event.
	Status Status `json:"status"`
	// JobID is the job the event is about.
	JobID string `json:"job_id"`
	// StreamID is the job's output stream.
	StreamID string `json:"stream_id"`
	// Project is the job's project.
	Project string `json:"project"`
	// Attempt is the attempt the event belongs to, from 1.
	Attempt int `json:"attempt"`
	// Worker is the id of the worker that ran the attempt (empty for queued).
	Worker string `json:"worker,omitempty"`
	// ExitCode is the command's exit status, on terminal events when the
	// command ran to an exit. Absent when it never started or was killed.
	ExitCode *int `json:"exit_code,omitempty"`
	// Reason explains a failure (see the Reason constants).
	Reason string `json:"reason,omitempty"`
	// Message is a human readable detail for Reason.
	Message string `json:"message,omitempty"`
	// RetryInSeconds is, on a retrying event, when the next attempt may
	// start.
	RetryInSeconds int `json:"retry_in_seconds,omitempty"`
	// BatchID is the job's batch, if any.
	BatchID string `json:"batch_id,omitempty"`
	// DurationMS is the run time of the attempt, on terminal events.
	DurationMS int64 `json:"duration_ms,omitempty"`
	// Lines is the stream's last output Seq when the event was published.
	// On a terminal event every line up to Lines is already stored.
	Lines uint64 `json:"lines"`
	// Time is when the event happened.
	Time time.Time `json:"time"`
}
