package contracts

import (
	"bytes"
	"encoding/json"
	"errors"
)

// SubmitOptions are the fields every submit accepts (a command, a prompt,
// a batch item).
type SubmitOptions struct {
	// Env is the command's environment: each value a string, or a
	// reference to a project secret (see EnvValue).
	Env map[string]EnvValue `json:"env,omitempty"`
	// WorkDir is the directory the command runs in.
	WorkDir string `json:"work_dir,omitempty"`
	// Priority is high, normal or low; "" takes the project's default.
	Priority string `json:"priority,omitempty"`
	// TimeoutSeconds bounds the run; 0 takes the server's default.
	TimeoutSeconds int `json:"timeout_seconds,omitempty"`
	// IdempotencyKey makes a repeated submit return the first one's job
	// (the Idempotency-Key header does the same).
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// MaxAttempts is how many times the job may run; 0 means once.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// RetryOnExitCodes are the exit codes that earn another attempt.
	RetryOnExitCodes []int `json:"retry_on_exit_codes,omitempty"`
	// Stderr is "separate" (default) or "merge" (2>&1: one ordered stream).
	Stderr string `json:"stderr,omitempty"`
	// RunAt (RFC 3339) delays the job: it is scheduled until then, then
	// queued at its priority. A time not in the future queues it now.
	RunAt string `json:"run_at,omitempty"`
	// RunInSeconds delays the job by this many seconds (not with RunAt).
	RunInSeconds int `json:"run_in_seconds,omitempty"`
	// Deadline (RFC 3339): a job not started by then ends expired.
	Deadline string `json:"deadline,omitempty"`
}

// CommandRequest is the body of POST /v1/projects/{project}/commands.
type CommandRequest struct {
	// Command is the program and its arguments (no shell).
	Command []string `json:"command"`
	SubmitOptions
}

// ClaudeRequest is the body of POST /v1/projects/{project}/claude.
type ClaudeRequest struct {
	// Prompt is what Claude is asked.
	Prompt string `json:"prompt"`
	ClaudeOptions
	SubmitOptions
}

// BatchItem is one job of POST /v1/projects/{project}/batches: a command
// or a prompt (with Claude options), not both.
type BatchItem struct {
	// Command is the program and its arguments, for a command job.
	Command []string `json:"command,omitempty"`
	// Prompt is what Claude is asked, for a Claude job.
	Prompt string `json:"prompt,omitempty"`
	ClaudeOptions
	SubmitOptions
}

// EnvValue is one value of a submit's env: a plain string, or
// {"secret":"<name>"}, the project secret of that name, which the worker
// resolves when it starts the command (the value never travels with the
// job).
type EnvValue struct {
	// Value is the plain value; ignored when Secret is set.
	Value string
	// Secret names a project secret; "" for a plain value.
	Secret string
}

// ErrInvalidEnv is returned (wrapped by encoding/json) when an env value
// is neither a string nor exactly {"secret":"<name>"}.
var ErrInvalidEnv = errors.New(`each env value must be a string, or {"secret":"<name>"} for a project secret`)

// MarshalJSON writes a string, or {"secret":"<name>"}.
func (v EnvValue) MarshalJSON() ([]byte, error) {
	if v.Secret != "" {
		return json.Marshal(map[string]string{"secret": v.Secret})
	}
	return json.Marshal(v.Value)
}

// UnmarshalJSON reads a string or {"secret":"<name>"}, refusing anything
// else with ErrInvalidEnv; null is the empty value.
func (v *EnvValue) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*v = EnvValue{}
		return nil
	case len(b) > 0 && b[0] == '"':
		*v = EnvValue{}
		return json.Unmarshal(b, &v.Value)
	case len(b) > 0 && b[0] == '{':
		// Decoded by hand: encoding/json would match "Secret" or "SECRET"
		// too, and every other key must be refused.
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(b, &obj); err != nil {
			return ErrInvalidEnv
		}
		raw, ok := obj["secret"]
		if !ok || len(obj) != 1 {
			return ErrInvalidEnv
		}
		var name string
		if err := json.Unmarshal(raw, &name); err != nil || name == "" {
			return ErrInvalidEnv
		}
		*v = EnvValue{Secret: name}
		return nil
	}
	return ErrInvalidEnv
}

// SubmitResponse is the 202 body of a submit (and of a dead letter's
// retry): the queued job and where to follow it.
type SubmitResponse struct {
	// JobID is the job (Job.ID).
	JobID string `json:"job_id"`
	// StreamID is the job's output stream.
	StreamID string `json:"stream_id"`
	// Status is the job's status: queued (scheduled with a run_at in the
	// future) unless the submit was replayed.
	Status Status `json:"status"`
	// EventsURL is the stream's SSE URL with a short-lived token for it.
	EventsURL string `json:"events_url"`
	// JobURL is the job's URL (GET for its state, POST .../cancel).
	JobURL string `json:"job_url"`
	// SubmittedAt is when the job was accepted, RFC 3339 with nanoseconds.
	SubmittedAt string `json:"submitted_at"`
	// TraceID is the job's W3C trace id (the caller's own when it sent a
	// traceparent).
	TraceID string `json:"trace_id,omitempty"`
}

// JobResponse is the body of GET /v1/jobs/{id} and of a job's cancel:
// the job's state and its stream's URL.
type JobResponse struct {
	JobState
	// EventsURL is the stream's SSE URL with a short-lived token for it.
	EventsURL string `json:"events_url"`
}
