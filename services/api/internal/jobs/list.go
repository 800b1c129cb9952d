package jobs

import (
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// ListScope is a project a listing covers, in the incarnation the caller
// may see.
type ListScope struct {
	Project, Incarnation string
}

// ListQuery selects the jobs of a listing. Zero fields select everything.
type ListQuery struct {
	Scopes   []ListScope
	Status   contracts.Status
	Priority contracts.Priority
	Kind     contracts.Kind
	BatchID  string
	// Since and Until bound the submission time (inclusive).
	Since, Until time.Time
	// Cursor is the last job id of the previous page: the page starts at
	// the next older job.
	Cursor string
	Limit  int
}

// Selects reports whether q selects j, a job of scope s.
func (q ListQuery) Selects(s ListScope, j contracts.JobSummary) bool {
	return j.ProjectIncarnation == s.Incarnation &&
		(q.Status == "" || j.Status == q.Status) &&
		(q.Priority == "" || j.Priority == q.Priority) &&
		(q.Kind == "" || j.Kind == q.Kind) &&
		(q.BatchID == "" || j.BatchID == q.BatchID) &&
		(q.Since.IsZero() || !j.SubmittedAt.Before(q.Since)) &&
		(q.Until.IsZero() || !j.SubmittedAt.After(q.Until))
}
