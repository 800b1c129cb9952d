package contracts

// QueueStats is one priority level of the job queue as GET /v1/queues
// (admin) reports it, counted over every project from the job index.
type QueueStats struct {
	// Priority is the level.
	Priority Priority `json:"priority"`
	// Waiting is how many jobs of the level are queued (retries waiting
	// for their next attempt included).
	Waiting int `json:"waiting"`
	// Running is how many are running.
	Running int `json:"running"`
	// OldestAgeSeconds is how long the oldest waiting job has waited since
	// it was submitted; 0 when none waits.
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
	// DispatchedLastMinute is how many of the level's jobs started an
	// attempt in the last minute: the dispatch rate per minute.
	DispatchedLastMinute int `json:"dispatched_last_minute"`
}

// QueueList is the body of GET /v1/queues: every level, highest first.
type QueueList struct {
	// Queues are the levels, never null.
	Queues []QueueStats `json:"queues"`
}
