package contracts

import "time"

// FD names the file descriptor a line was read from.
type FD string

// The output file descriptors.
const (
	Stdout FD = "stdout"
	Stderr FD = "stderr"
)

// MaxLineBytes is the longest line published as one message. A longer line
// is split into chunks of at most MaxLineBytes bytes; every chunk but the
// last has Partial set.
const MaxLineBytes = 16 * 1024

// OutputLine is one line a job printed, published to
// SubjectOutput(project, StreamID) in the order it was read.
//
// Seq is the identity of a line within its stream: it starts at 1 and grows
// by one per line, across stdout and stderr and across attempts. Workers
// store lines by compare-and-set on the subject, so the stored lines are
// in Seq order, each once. A Seq that jumps by more than one marks lines
// the server lost and the worker could not send again; the job's terminal
// event then has reason ReasonOutputLost (the streamer sends SSEGap).
// Streams written before this rule may hold a line twice: readers drop
// any Seq they have already seen.
type OutputLine struct {
	// V is the message version (OutputLineVersion; 1 on lines stored
	// before the subject carried the project).
	V int `json:"v"`
	// StreamID is the stream the line belongs to.
	StreamID string `json:"stream_id"`
	// JobID is the job that printed it.
	JobID string `json:"job_id"`
	// Attempt is the job attempt that printed it, from 1.
	Attempt int `json:"attempt"`
	// Seq is the line's position in the stream, from 1.
	Seq uint64 `json:"seq"`
	// FD is stdout or stderr.
	FD FD `json:"fd"`
	// Text is the line without its newline, always valid UTF-8: each run of
	// bytes that were not is replaced by one U+FFFD, and the exact bytes
	// are in Raw.
	Text string `json:"text"`
	// Raw holds the exact bytes (base64 in JSON) when they were not valid
	// UTF-8; it is absent otherwise.
	Raw []byte `json:"raw,omitempty"`
	// Partial is set when the line did not end with a newline: it was split
	// at MaxLineBytes and continues in the next line, or the output ended.
	Partial bool `json:"partial,omitempty"`
	// Time is when the worker read the line.
	Time time.Time `json:"time"`
}
