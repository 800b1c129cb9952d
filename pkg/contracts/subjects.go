package contracts

import (
	"regexp"
	"time"
)

// Subjects. Every token between dots that comes from a value (project,
// stream id, priority, event type) is checked by ValidProjectID or ValidID
// first, so it never contains '.', '*', '>' or whitespace.
const (
	// SubjectJobsPrefix prefixes job subjects: rdev.jobs.<priority>.<project>.
	SubjectJobsPrefix = "rdev.jobs"
	// SubjectOutputPrefix prefixes output subjects:
	// rdev.output.<project>.<stream_id> (OutputLineVersion 2; lines of
	// version 1 were published to rdev.output.<stream_id>, see
	// SubjectOutputLegacy).
	SubjectOutputPrefix = "rdev.output"
	// SubjectEventsPrefix prefixes lifecycle event subjects:
	// rdev.events.<project>.<stream_id>.<type>.
	SubjectEventsPrefix = "rdev.events"
	// SubjectCancelPrefix prefixes cancel requests, plain NATS messages
	// (no JetStream) that every worker listens to:
	// rdev.control.cancel.<job_id>. The job's state (CancelRequested)
	// is the durable record; the message only makes it fast.
	SubjectCancelPrefix = "rdev.control.cancel"
	// SubjectHoldsPrefix prefixes the question a worker asks before it
	// declares a job's worker lost: a plain NATS request on
	// rdev.control.holds.<job_id> whose body is the asking worker's id;
	// a worker that holds the job answers, the others stay silent.
	SubjectHoldsPrefix = "rdev.control.holds"
	// SubjectDeadPrefix prefixes dead letters: rdev.dead.<project>.
	SubjectDeadPrefix = "rdev.dead"
)

// SubjectCancel is where a cancel request for a job is published.
func SubjectCancel(jobID string) string { return SubjectCancelPrefix + "." + jobID }

// SubjectHolds is where workers are asked whether one holds a job.
func SubjectHolds(jobID string) string { return SubjectHoldsPrefix + "." + jobID }

// SubjectDead is where a project's dead letters are published.
func SubjectDead(project string) string { return SubjectDeadPrefix + "." + project }

// SubjectJob is where a job of the given priority for project is published.
func SubjectJob(p Priority, project string) string {
	return SubjectJobsPrefix + "." + string(p) + "." + project
}

// SubjectScheduledJob is where a delayed job's message waits, as a
// JetStream message schedule, until it is due and published to its
// SubjectJob; no consumer reads it. rdev.jobs.scheduled.<project>.<job id>.
func SubjectScheduledJob(project, jobID string) string {
	return SubjectJobsPrefix + ".scheduled." + project + "." + jobID
}

// SubjectJobsAt matches every job of one priority, whatever the project.
func SubjectJobsAt(p Priority) string { return SubjectJobsPrefix + "." + string(p) + ".>" }

// SubjectOutput is where every line of a project's stream is published,
// as an OutputLine. The project is in the subject so that a NATS
// subscriber can be allowed one project's output and no other's.
func SubjectOutput(project, streamID string) string {
	return SubjectOutputPrefix + "." + project + "." + streamID
}

// SubjectOutputLegacy is where workers before OutputLineVersion 2
// published a stream's lines: rdev.output.<stream_id>, without the
// project. Nothing publishes there any more; readers still read it, so
// that lines stored before an upgrade stay readable until they age out
// of StreamOutput (OutputMaxAge). It has one token fewer than
// SubjectOutput, so the two never match each other's filters.
func SubjectOutputLegacy(streamID string) string { return SubjectOutputPrefix + "." + streamID }

// SubjectStreamOutput matches every line of one stream, whatever its
// project: rdev.output.*.<stream_id>.
func SubjectStreamOutput(streamID string) string {
	return SubjectOutputPrefix + ".*." + streamID
}

// SubjectProjectOutput matches every line of every stream of a project.
func SubjectProjectOutput(project string) string {
	return SubjectOutputPrefix + "." + project + ".>"
}

// SubjectProjectEvents matches every event of every stream of a project.
func SubjectProjectEvents(project string) string {
	return SubjectEventsPrefix + "." + project + ".>"
}

// SubjectProjectStreams is the one filter subject of a consumer on
// StreamOutput that reads a project's lines and events together, in
// stored order: rdev.*.<project>.>. In that stream it matches only the
// project's SubjectOutput and SubjectEvent subjects (a
// SubjectOutputLegacy subject has one token too few).
func SubjectProjectStreams(project string) string { return "rdev.*." + project + ".>" }

// StreamFilters are the filter subjects of a consumer that replays one
// stream from StreamOutput, lines and events in one order: its lines,
// its lines stored before OutputLineVersion 2 (SubjectOutputLegacy), and
// its events. None of the three overlaps another, as JetStream requires.
func StreamFilters(streamID string) []string {
	return []string{SubjectStreamOutput(streamID), SubjectOutputLegacy(streamID), SubjectStreamEvents(streamID)}
}

// SubjectEvent is where an Event of type t about a stream is published.
func SubjectEvent(project, streamID string, t EventType) string {
	return SubjectEventsPrefix + "." + project + "." + streamID + "." + string(t)
}

// SubjectEventsOf matches the events of the given types, whatever the
// project and stream: filters for a consumer that needs only those.
func SubjectEventsOf(types ...EventType) []string {
	subjects := make([]string, len(types))
	for i, t := range types {
		subjects[i] = SubjectEventsPrefix + ".*.*." + string(t)
	}
	return subjects
}

// SubjectStreamEvents matches every event of one stream.
func SubjectStreamEvents(streamID string) string {
	return SubjectEventsPrefix + ".*." + streamID + ".*"
}

// JetStream streams, consumers and buckets.
const (
	// StreamJobs is the work-queue stream holding queued jobs on
	// rdev.jobs.>; a job leaves it when a worker acknowledges it.
	StreamJobs = "RDEV_JOBS"
	// StreamOutput holds output lines (rdev.output.>) and lifecycle events
	// (rdev.events.>) for OutputMaxAge, so a stream can be replayed from
	// its start, lines and events in one order.
	StreamOutput = "RDEV_OUTPUT"
	// StreamDead holds DeadLetters on rdev.dead.> until someone retries or
	// they age out.
	StreamDead = "RDEV_DEAD"
	// DefaultDeadMaxAge is how long dead letters are kept.
	DefaultDeadMaxAge = 30 * 24 * time.Hour
	// BucketState is the key-value bucket holding job state (JobKey),
	// stream references (StreamKey) and idempotency keys (IdempotencyKeyKey).
	BucketState = "rdev_state"

	// DefaultOutputMaxAge is how long output and events are kept.
	DefaultOutputMaxAge = 24 * time.Hour
	// DefaultStateTTL is how long job state stays readable after its last
	// change.
	DefaultStateTTL = 7 * 24 * time.Hour
	// DefaultJobsMaxAge bounds how long a job may wait in the queue.
	DefaultJobsMaxAge = 7 * 24 * time.Hour
	// DuplicateWindow is how long JetStream remembers a Nats-Msg-Id, so a
	// publish retried within it is stored once.
	DuplicateWindow = 2 * time.Minute
)

// ConsumerJobs is the durable pull consumer, shared by all workers, that
// delivers jobs of one priority.
func ConsumerJobs(p Priority) string { return "rdev-jobs-" + string(p) }

// JobKey is the BucketState key of a job's JobState.
func JobKey(jobID string) string { return "job." + jobID }

// JobSpecKey is the BucketState key of the Job a job was submitted as
// (env values redacted), kept so it can be retried as a new job.
func JobSpecKey(jobID string) string { return "spec." + jobID }

// StreamKey is the BucketState key of a stream's StreamRef.
func StreamKey(streamID string) string { return "stream." + streamID }

// DeadRetryKey is the BucketState key of a dead letter's DeadLetterRetry.
func DeadRetryKey(id string) string { return "deadretry." + id }

// BatchKey is the BucketState key of a batch's Batch record.
func BatchKey(batchID string) string { return "batch." + batchID }

// BatchProgressKey is the BucketState key of a batch's BatchProgress.
func BatchProgressKey(batchID string) string { return "batchprogress." + batchID }

// SlotsKey is the BucketState key holding a project's running-job slots
// (its per-project concurrency leases).
func SlotsKey(project string) string { return "slots." + project }

// IdempotencyKeyKey is the BucketState key mapping a project's idempotency
// key (already hashed to hex by the caller) to a job id.
func IdempotencyKeyKey(project, hashedKey string) string {
	return "idem." + project + "." + hashedKey
}

// Headers set on NATS messages beside the JSON body. Trace context is not
// among them: it travels in the bodies that the schemas describe
// (Job.Trace, StreamRef.Trace; read with TraceID), so a subscriber finds
// a job's trace whatever its client library does with headers.
const (
	// HeaderMsgID is JetStream's de-duplication header.
	HeaderMsgID = "Nats-Msg-Id"
	// HeaderJobID carries the job id on job messages.
	HeaderJobID = "Rdev-Job-Id"
	// HeaderStateRevision carries, on job messages, the revision of the
	// job's JobState in BucketState when it was queued, so a worker can
	// claim the job with one compare-and-set instead of a read and a write.
	HeaderStateRevision = "Rdev-State-Revision"
)

var (
	projectIDPattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	idPattern        = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
)

// ValidProjectID reports whether s is a project id: a DNS label (lower case
// letters, digits and '-', 1 to 63 characters, alphanumeric at both ends).
func ValidProjectID(s string) bool { return projectIDPattern.MatchString(s) }

// ValidID reports whether s can be a job or stream id: 1 to 64 letters,
// digits, '_' or '-'.
func ValidID(s string) bool { return idPattern.MatchString(s) }
