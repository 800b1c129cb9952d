package contracts

// BatchItemResult is one item of a batch reply, at the item's index in
// the request.
type BatchItemResult struct {
	// Index is the item's position in the request, from 0.
	Index int `json:"index"`
	// JobID is the queued job; absent when the item was refused.
	JobID string `json:"job_id,omitempty"`
	// StreamID is the job's output stream.
	StreamID string `json:"stream_id,omitempty"`
	// EventsURL is the stream's SSE URL with a short-lived token for it.
	EventsURL string `json:"events_url,omitempty"`
	// Error says why the item was refused.
	Error *ErrorDetail `json:"error,omitempty"`
}

// BatchResponse is the 202 body of POST /v1/projects/{project}/batches.
type BatchResponse struct {
	// BatchID is the batch (Batch.ID).
	BatchID string `json:"batch_id"`
	// Accepted is how many items were queued.
	Accepted int `json:"accepted"`
	// Rejected is how many were refused.
	Rejected int `json:"rejected"`
	// Items are the items' outcomes, in request order.
	Items []BatchItemResult `json:"items"`
	// BatchURL is the batch's URL.
	BatchURL string `json:"batch_url"`
	// EventsURL is the batch's SSE URL with a short-lived token for it.
	EventsURL string `json:"events_url"`
}

// BatchRefused is the 400 body of an atomic batch with a refused item
// (code batch_refused): nothing was queued.
type BatchRefused struct {
	// Error is the refusal.
	Error ErrorDetail `json:"error"`
	// Items say which items were wrong; none has a job.
	Items []BatchItemResult `json:"items"`
}

// BatchStatus is the body of GET /v1/batches/{id}: the batch and one page
// of its jobs. JobIDs holds the page's ids only.
type BatchStatus struct {
	Batch
	// Counts are the batch's jobs by status.
	Counts map[Status]int `json:"counts"`
	// Jobs is one page of the jobs' states, in submission order.
	Jobs []JobState `json:"jobs"`
	// NextCursor, when set, is the cursor query parameter of the next page.
	NextCursor string `json:"next_cursor,omitempty"`
	// EventsURL is the batch's SSE URL with a short-lived token for it.
	EventsURL string `json:"events_url"`
}

// BatchCancelCounts are a batch cancel's jobs by outcome.
type BatchCancelCounts struct {
	// Cancelled jobs had not started.
	Cancelled int `json:"cancelled"`
	// Stopping jobs were running and are being stopped.
	Stopping int `json:"stopping"`
	// AlreadyEnded jobs had ended before the cancel.
	AlreadyEnded int `json:"already_ended"`
}

// BatchCancelResponse is the body of POST /v1/batches/{id}/cancel: 202,
// or 409 with Error (code batch_finished) when every job had ended.
type BatchCancelResponse struct {
	// Error is set on the 409 reply only.
	Error *ErrorDetail `json:"error,omitempty"`
	// BatchID is the batch.
	BatchID string `json:"batch_id"`
	// Jobs are the batch's jobs by outcome.
	Jobs BatchCancelCounts `json:"jobs"`
}

// DeadLetterPage is the body of GET /v1/dead-letters (admin).
type DeadLetterPage struct {
	// DeadLetters are the page's letters, never null.
	DeadLetters []DeadLetter `json:"dead_letters"`
	// NextCursor, when set, is the cursor query parameter of the next page.
	NextCursor string `json:"next_cursor,omitempty"`
}

// DeadLetterRetryItem is one dead letter of a project-wide retry.
type DeadLetterRetryItem struct {
	// DeadLetter is the letter's id.
	DeadLetter string `json:"dead_letter"`
	// JobID is the new job; absent when the retry was refused.
	JobID string `json:"job_id,omitempty"`
	// Error says why the retry was refused.
	Error *ErrorDetail `json:"error,omitempty"`
}

// DeadLetterRetryAll is the body of POST
// /v1/projects/{project}/dead-letters/retry (admin).
type DeadLetterRetryAll struct {
	// Project is the project.
	Project string `json:"project"`
	// Retried is how many letters ran again.
	Retried int `json:"retried"`
	// Skipped is how many were already retried or hold no job.
	Skipped int `json:"skipped"`
	// Items are the letters tried, with their outcome, never null.
	Items []DeadLetterRetryItem `json:"items"`
}

// DeadLetterPurge is the body of DELETE /v1/projects/{project}/dead-letters
// (admin).
type DeadLetterPurge struct {
	// Project is the project.
	Project string `json:"project"`
	// Purged is how many letters were removed.
	Purged int `json:"purged"`
}
