package contracts

import "time"

// DeadLetter is a job that will not run again by itself: its attempts are
// spent on failures that were not the command's own (or on exit codes it
// asked to retry), or its message could not be decoded. It is published to
// SubjectDead(project) with the job id as its message id; POST
// /v1/dead-letters/{id}/retry submits the job again as a new job.
type DeadLetter struct {
	// V is the message version (Version).
	V int `json:"v"`
	// ID identifies the dead letter (the job id, or for an undecodable
	// message the JetStream sequence it had).
	ID string `json:"id"`
	// Job is the job as it was queued, with its Env values replaced by
	// Redacted (SecretEnv holds names only and is kept); absent when
	// undecodable.
	Job *Job `json:"job,omitempty"`
	// Raw is the undecodable message's body.
	Raw []byte `json:"raw,omitempty"`
	// Reason is why the last attempt failed (a Reason constant).
	Reason string `json:"reason"`
	// Message is a human readable detail for Reason.
	Message string `json:"message,omitempty"`
	// Attempts is how many attempts ran.
	Attempts int `json:"attempts"`
	// ExitCode is the last attempt's exit status, if the command exited.
	ExitCode *int `json:"exit_code,omitempty"`
	// Time is when the job was given up.
	Time time.Time `json:"time"`
	// Seq is the dead letter's position in StreamDead; set when read back.
	Seq uint64 `json:"seq,omitempty"`
	// Retried is set, when read back through the API, once the dead
	// letter was retried: a second retry needs ?force=true.
	Retried *DeadLetterRetry `json:"retried,omitempty"`
}

// DeadLetterRetry records that a dead letter was run again, in
// BucketState under DeadRetryKey(id) (so it lasts as long as job state).
type DeadLetterRetry struct {
	// V is the message version (Version).
	V int `json:"v"`
	// RetriedAt is when the latest retry was asked for.
	RetriedAt time.Time `json:"retried_at"`
	// JobID is the job the latest retry queued ("" while it is queued).
	JobID string `json:"job_id,omitempty"`
	// Retries counts the retries.
	Retries int `json:"retries"`
	// Actor is the key that asked for the latest retry.
	Actor string `json:"actor,omitempty"`
}

// BatchState is where an all-or-nothing batch stands.
type BatchState string

// The batch states. Batches that are not atomic are committed at once.
const (
	BatchPending   BatchState = "pending"
	BatchCommitted BatchState = "committed"
	BatchAborted   BatchState = "aborted"
)

// AtomicBatchWindow bounds how long an atomic batch may stay pending: its
// API commits or aborts it well within, and a batch still pending after
// it (its API died midway) counts as aborted.
const AtomicBatchWindow = 2 * time.Minute

// Batch is a set of jobs submitted in one request, kept in BucketState
// under BatchKey(id).
type Batch struct {
	// V is the message version (Version).
	V int `json:"v"`
	// ID identifies the batch.
	ID string `json:"id"`
	// Project is the batch's project.
	Project string `json:"project"`
	// JobIDs are the accepted jobs, in submission order.
	JobIDs []string `json:"job_ids"`
	// Rejected is how many items were refused.
	Rejected int `json:"rejected"`
	// Atomic says the batch is all-or-nothing.
	Atomic bool `json:"atomic,omitempty"`
	// State is pending, committed or aborted (see BatchState).
	State BatchState `json:"state"`
	// SubmittedAt is when the API accepted the batch.
	SubmittedAt time.Time `json:"submitted_at"`
	// ProjectIncarnation identifies the incarnation of Project this batch
	// belongs to (access.Project.Incarnation): a project deleted and
	// created again under the same id is another incarnation, and does
	// not see the old one's batches. Empty on records written before
	// incarnations.
	ProjectIncarnation string `json:"project_incarnation,omitempty"`
}

// BatchProgress is what a batch's jobs' lifecycle events said of them,
// kept in BucketState under BatchProgressKey(id) by the API so that the
// batch's counts are read in one get rather than one per job. It is a
// cache: a missing or stale record is rebuilt from the events and, for
// jobs the events no longer tell, from the jobs' states.
type BatchProgress struct {
	// V is the message version (Version).
	V int `json:"v"`
	// Statuses has one letter per job of Batch.JobIDs, in that order:
	// the job's status (d scheduled, q queued, r running, s succeeded,
	// f failed, c cancelled, t timed_out, e expired), '.' while unknown,
	// 'x' when its state expired.
	Statuses string `json:"statuses"`
	// Seq is the StreamOutput sequence of the last event read; the next
	// read starts after it. 0: none read yet.
	Seq uint64 `json:"seq"`
	// CheckedAt is when the jobs not ended were last read from their
	// states.
	CheckedAt time.Time `json:"checked_at"`
}

// Letters of BatchProgress.Statuses that are not a status.
const (
	// BatchProgressUnknown: neither an event nor a state was read yet.
	BatchProgressUnknown = '.'
	// BatchProgressGone: the job's state expired.
	BatchProgressGone = 'x'
)

// batchProgressLetters are the statuses' letters in
// BatchProgress.Statuses.
var batchProgressLetters = map[Status]byte{
	StatusScheduled: 'd', StatusQueued: 'q', StatusRunning: 'r', StatusSucceeded: 's',
	StatusFailed: 'f', StatusCancelled: 'c', StatusTimedOut: 't', StatusExpired: 'e',
}

// BatchProgressLetter is status's letter in BatchProgress.Statuses, and
// false for a status that has none.
func BatchProgressLetter(s Status) (byte, bool) {
	l, ok := batchProgressLetters[s]
	return l, ok
}

// BatchProgressStatus is the status of a BatchProgress letter, and false
// for BatchProgressUnknown, BatchProgressGone or any other letter.
func BatchProgressStatus(l byte) (Status, bool) {
	switch l {
	case 'd':
		return StatusScheduled, true
	case 'q':
		return StatusQueued, true
	case 'r':
		return StatusRunning, true
	case 's':
		return StatusSucceeded, true
	case 'f':
		return StatusFailed, true
	case 'c':
		return StatusCancelled, true
	case 't':
		return StatusTimedOut, true
	case 'e':
		return StatusExpired, true
	}
	return "", false
}
