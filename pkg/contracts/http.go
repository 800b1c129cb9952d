package contracts

// ErrorBody is the JSON body of every HTTP error rdev returns:
// {"error":{"code":"...","message":"..."}}.
type ErrorBody struct {
	// Error describes what went wrong.
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is a machine-readable code and a message for people.
type ErrorDetail struct {
	// Code is stable and machine-readable, e.g. "invalid_priority".
	Code string `json:"code"`
	// Message says what was wrong and how to fix it.
	Message string `json:"message"`
}

// Server-Sent Event names the streamer sends on /v1/streams/{id}/events.
const (
	// SSEConnected opens every connection; data is SSEConnectedData.
	SSEConnected = "connected"
	// SSEOutput carries one OutputLine.
	SSEOutput = "output"
	// SSEStatus carries a non-terminal Event (queued, started).
	SSEStatus = "status"
	// SSEComplete carries the terminal Event; the connection then ends.
	SSEComplete = "complete"
	// SSEError carries an ErrorDetail; the client should reconnect with
	// Last-Event-ID unless the code says otherwise.
	SSEError = "error"
	// SSEGap carries an SSEGapData: lines of the stream that are missing
	// (lost by a server and not sent again), announced before the line
	// that follows them, so a watcher is told rather than left silent.
	SSEGap = "gap"
)

// SSEGapData is the data of the gap event: lines From through To (Seq
// values) are missing.
type SSEGapData struct {
	// From is the first missing Seq.
	From uint64 `json:"from"`
	// To is the last missing Seq.
	To uint64 `json:"to"`
}

// SSEConnectedData is the data of the connected event.
type SSEConnectedData struct {
	// StreamID is the stream being watched.
	StreamID string `json:"stream_id"`
	// JobID is the job writing to it.
	JobID string `json:"job_id"`
	// ResumeAfter is the Last-Event-ID the connection resumes after, or "".
	ResumeAfter string `json:"resume_after,omitempty"`
}

// SSEProjectConnectedData is the data of the connected event that opens
// a project's event stream (GET /v1/projects/{project}/events); its id is
// the position the stream starts after.
type SSEProjectConnectedData struct {
	// Project is the project being watched.
	Project string `json:"project"`
	// StreamID is the one stream watched, when the request named one.
	StreamID string `json:"stream_id,omitempty"`
	// ResumeAfter is the Last-Event-ID the connection resumes after, or "".
	ResumeAfter string `json:"resume_after,omitempty"`
}

// BatchComplete is the data of the complete event that ends a batch's
// event stream (GET /v1/batches/{id}/events), once every job has ended.
type BatchComplete struct {
	// BatchID is the batch.
	BatchID string `json:"batch_id"`
	// Jobs is how many jobs the batch queued.
	Jobs int `json:"jobs"`
	// Counts are the jobs by final status.
	Counts map[Status]int `json:"counts"`
}
