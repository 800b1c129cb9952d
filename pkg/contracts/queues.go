package contracts

import "time"

// BucketQueues is the key-value bucket of queue settings that outlive
// restarts: a QueuePause per priority level under PauseKey(level). It
// keeps no TTL: a pause lasts until someone resumes the level.
const BucketQueues = "rdev_queues"

// PauseKey is the BucketQueues key of a level's QueuePause.
func PauseKey(p Priority) string { return "pause." + string(p) }

// QueuePause says whether workers dispatch a priority level: the reply of
// POST /v1/queues/{priority}/pause and /resume, stored in BucketQueues.
// Jobs of a paused level wait in the queue; nothing is lost.
type QueuePause struct {
	// V is the message version (Version).
	V int `json:"v"`
	// Priority is the level.
	Priority Priority `json:"priority"`
	// Paused is set while workers do not dispatch the level.
	Paused bool `json:"paused"`
	// Actor is the API key that paused or resumed it.
	Actor string `json:"actor,omitempty"`
	// Time is when it was paused or resumed.
	Time time.Time `json:"time"`
}

// QueueStats is one priority level of the job queue as GET /v1/queues
// (admin) reports it, counted over every project from the job index.
type QueueStats struct {
	// Priority is the level.
	Priority Priority `json:"priority"`
	// Paused is set while workers do not dispatch the level.
	Paused bool `json:"paused"`
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
