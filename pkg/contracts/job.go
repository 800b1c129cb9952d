package contracts

import (
	"fmt"
	"time"
)

// Priority orders jobs in the queue. Workers drain higher levels first but
// guarantee lower levels a share of dispatches, so none starves.
type Priority string

// The priority levels, highest first.
const (
	PriorityHigh   Priority = "high"
	PriorityNormal Priority = "normal"
	PriorityLow    Priority = "low"
)

// Priorities lists every level, highest first.
func Priorities() []Priority { return []Priority{PriorityHigh, PriorityNormal, PriorityLow} }

// ParsePriority returns the level named s; the empty string means normal.
func ParsePriority(s string) (Priority, error) {
	switch p := Priority(s); p {
	case "":
		return PriorityNormal, nil
	case PriorityHigh, PriorityNormal, PriorityLow:
		return p, nil
	}
	return "", fmt.Errorf("unknown priority %q (want high, normal or low)", s)
}

// Kind says how a job's command was produced.
type Kind string

// The kinds of job.
const (
	// KindExec runs the argv the caller gave.
	KindExec Kind = "exec"
	// KindClaude runs the Claude Code CLI with the caller's prompt as one
	// argv element; Command holds the full argv the API built.
	KindClaude Kind = "claude"
)

// Job is a command to run in a project's workspace. It is published once to
// SubjectJob and consumed by exactly one worker at a time.
type Job struct {
	// V is the message version (Version).
	V int `json:"v"`
	// ID identifies the job; GET /v1/jobs/{id} reads its state.
	ID string `json:"id"`
	// Project is the project whose workspace runs the job (a DNS label).
	Project string `json:"project"`
	// Kind says whether Command came from the caller or from a prompt.
	Kind Kind `json:"kind"`
	// Command is the argv to execute; Command[0] is looked up in PATH.
	// It is never passed through a shell by rdev.
	Command []string `json:"command"`
	// Env holds extra environment variables for the process. Values are
	// not secret: they are redacted in dead letters and audit records, but
	// travel in this message. Secrets go in SecretEnv.
	Env map[string]string `json:"env,omitempty"`
	// SecretEnv maps environment variable names to the names of project
	// secrets (BucketSecrets); the worker resolves them when it starts the
	// command. Only names travel here, never values.
	SecretEnv map[string]string `json:"secret_env,omitempty"`
	// WorkDir is the working directory, relative to the project workspace.
	// Empty means the workspace root.
	WorkDir string `json:"work_dir,omitempty"`
	// Priority is the queue level the job was published to.
	Priority Priority `json:"priority"`
	// TimeoutSeconds bounds the run; the process group is killed after it.
	TimeoutSeconds int `json:"timeout_seconds"`
	// Attempt is the attempt this message starts, from 1.
	Attempt int `json:"attempt"`
	// StreamID names the output stream: lines go to SubjectOutput(StreamID).
	StreamID string `json:"stream_id"`
	// SubmittedAt is when the API accepted the job.
	SubmittedAt time.Time `json:"submitted_at"`
	// IdempotencyKey is the caller's key, if any; a resubmission with the
	// same key in the same project returns this job instead of a new one.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// Trace carries W3C trace context (traceparent, tracestate) so the
	// worker's spans join the submitter's trace: the context of the API's
	// publish span. It is the only carrier of a job's trace context (see
	// TraceID); job messages carry none in NATS headers.
	Trace map[string]string `json:"trace,omitempty"`
	// MaxAttempts is how many attempts the job may use; 0 means 1 (a
	// command is not assumed idempotent). Failures that are not the
	// command's own (worker lost, pod lost, executor error, pod not ready)
	// are retried while attempts remain, with exponential backoff.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// RetryOnExitCodes lists exit codes of the command that are retried
	// too, while attempts remain.
	RetryOnExitCodes []int `json:"retry_on_exit_codes,omitempty"`
	// BatchID is the batch the job was submitted in, if any.
	BatchID string `json:"batch_id,omitempty"`
	// BatchAtomic is set on the jobs of an all-or-nothing batch: a worker
	// runs such a job only once its Batch record is committed, ends it
	// cancelled when the batch was aborted, and holds it back while the
	// batch is pending (at most AtomicBatchWindow after SubmittedAt; a
	// batch still pending then is aborted).
	BatchAtomic bool `json:"batch_atomic,omitempty"`
	// Stderr is StderrMerge to send the command's stderr into its stdout
	// (as 2>&1 does), so one stream keeps the order the command wrote in;
	// "" (StderrSeparate) keeps them apart, ordered per stream only.
	Stderr string `json:"stderr,omitempty"`
	// Claude holds the Claude Code options of a KindClaude job, as the
	// API validated them and built Command from; for the record.
	Claude *ClaudeOptions `json:"claude,omitempty"`
	// ProjectIncarnation identifies the incarnation of Project this job
	// belongs to (access.Project.Incarnation): a project deleted and
	// created again under the same id is another incarnation, and does
	// not see the old one's jobs. Empty on records written before
	// incarnations.
	ProjectIncarnation string `json:"project_incarnation,omitempty"`
	// RunAt is set on a delayed job: JetStream holds its message until
	// then (see docs/scheduling.md). A worker never starts it earlier.
	RunAt *time.Time `json:"run_at,omitempty"`
	// Deadline, if set, is when a job that has not started yet ends
	// expired (reason deadline) instead of running late.
	Deadline *time.Time `json:"deadline,omitempty"`
}

// The values of Job.Stderr.
const (
	StderrSeparate = "separate"
	StderrMerge    = "merge"
)

// Attempts returns MaxAttempts with its default applied.
func (j Job) Attempts() int { return max(j.MaxAttempts, 1) }

// Timeout returns the job's time limit as a duration.
func (j Job) Timeout() time.Duration { return time.Duration(j.TimeoutSeconds) * time.Second }

// TraceID returns the W3C trace id (32 lower-case hex digits) of a trace
// context as Job.Trace and StreamRef.Trace carry it, or "" when its
// traceparent is missing or malformed. It is the one reader of a
// traceparent in rdev; the trace context itself travels only in these
// message bodies, never in NATS headers, so subscribers in any language
// find it where the schema says.
func TraceID(trace map[string]string) string {
	tp := trace["traceparent"]
	// version "-" trace-id "-" parent-id "-" flags, all lower-case hex
	if len(tp) != 55 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-' {
		return ""
	}
	for i := range len(tp) {
		if c := tp[i]; c != '-' && (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return ""
		}
	}
	return tp[3:35]
}
