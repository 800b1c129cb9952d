package contracts

import "time"

// IndexKeyPrefix prefixes the BucketState keys of the job index: one
// JobSummary per job under IndexKey(project, job id). The index lives in
// the state bucket so it expires with the job state (the bucket's TTL
// counts from each key's last write, and both are written at every
// transition).
const IndexKeyPrefix = "index"

// IndexKey is the BucketState key of a job's JobSummary: job ids are
// ULIDs, so a project's keys sort by submission time.
func IndexKey(project, jobID string) string { return IndexKeyPrefix + "." + project + "." + jobID }

// JobSummary is a job's entry in the job index and in the listings of
// GET /v1/projects/{project}/jobs and GET /v1/jobs: what a list shows
// and filters on, not the whole JobState.
type JobSummary struct {
	// V is the message version (Version).
	V int `json:"v"`
	// JobID identifies the job (a ULID: listings sort on it).
	JobID string `json:"job_id"`
	// Project is the job's project.
	Project string `json:"project"`
	// Kind is exec or claude.
	Kind Kind `json:"kind"`
	// Priority is the queue level.
	Priority Priority `json:"priority"`
	// Status is where the job is now.
	Status Status `json:"status"`
	// Attempt is the current or last attempt, 0 before the first starts.
	Attempt int `json:"attempt"`
	// ExitCode is the command's exit status once it exited.
	ExitCode *int `json:"exit_code,omitempty"`
	// Reason explains a failure (see the Reason constants).
	Reason string `json:"reason,omitempty"`
	// BatchID is the job's batch, if any.
	BatchID string `json:"batch_id,omitempty"`
	// SubmittedAt is when the API accepted the job.
	SubmittedAt time.Time `json:"submitted_at"`
	// StartedAt is when the current attempt started.
	StartedAt *time.Time `json:"started_at,omitempty"`
	// FinishedAt is when the job ended.
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	// StateRevision is the revision of the JobState this summary was
	// made from: an index write never replaces a summary of a later one,
	// so concurrent writers cannot leave an older status behind.
	StateRevision uint64 `json:"state_revision"`
	// ProjectIncarnation is the incarnation of Project the job belongs to
	// (see JobState.ProjectIncarnation).
	ProjectIncarnation string `json:"project_incarnation,omitempty"`
	// RunAt is when a delayed job becomes queued (JobState.RunAt).
	RunAt *time.Time `json:"run_at,omitempty"`
}

// SummaryOf returns the index entry of st, stored at revision rev.
func SummaryOf(st JobState, rev uint64) JobSummary {
	return JobSummary{
		V: Version, JobID: st.JobID, Project: st.Project, Kind: st.Kind, Priority: st.Priority,
		Status: st.Status, Attempt: st.Attempt, ExitCode: st.ExitCode, Reason: st.Reason,
		BatchID: st.BatchID, SubmittedAt: st.SubmittedAt, StartedAt: st.StartedAt, FinishedAt: st.FinishedAt,
		StateRevision: rev, ProjectIncarnation: st.ProjectIncarnation, RunAt: st.RunAt,
	}
}

// JobList is the body of GET /v1/projects/{project}/jobs and GET
// /v1/jobs: jobs newest first.
type JobList struct {
	// Jobs are the page's jobs, newest first, never null.
	Jobs []JobSummary `json:"jobs"`
	// NextCursor, when set, is the cursor query parameter of the next
	// (older) page: the last job id of this one.
	NextCursor string `json:"next_cursor,omitempty"`
}

// Job listing limits.
const (
	// DefaultListLimit is the page size of a listing without limit.
	DefaultListLimit = 50
	// MaxListLimit is the largest page a listing returns.
	MaxListLimit = 1000
)
