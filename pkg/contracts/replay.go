package contracts

import "encoding/json"

// Replay over NATS: a direct subscriber (NATSCredentials) asks a streamer
// for a stream's stored lines and events with a plain NATS request on
// SubjectReplay, and gets one ReplayReply on its private inbox
// (SubjectReaderInbox). It is a service of rdev's, not the JetStream API,
// because NATS checks neither a request's reply subject nor a consumer's
// deliver subject against permissions: the streamer checks the reply
// subject itself, and answers nothing to a request whose reply subject is
// not an inbox of the same project's readers.
const (
	// SubjectReplayPrefix prefixes replay requests:
	// rdev.replay.<project>.<stream_id>.
	SubjectReplayPrefix = "rdev.replay"
	// ReaderInboxPrefix prefixes the private inboxes of direct
	// subscribers: _rdev_reader.<project>.<nonce>, one per credential.
	ReaderInboxPrefix = "_rdev_reader"
	// ReplayVersion is ReplayReply.V.
	ReplayVersion = 1
	// DefaultReplayMax is how many messages a replay reply carries at most
	// when the request names no ReplayRequest.Max, and the most it may
	// name.
	DefaultReplayMax = 500
)

// Replay error codes (ReplayReply.Error.Code).
const (
	// ReplayErrInvalidRequest: the body is not a ReplayRequest (not JSON,
	// unknown fields, max out of range) or the subject names no stream.
	ReplayErrInvalidRequest = "invalid_request"
	// ReplayErrStreamNotFound: the project has no such stream (never
	// written, expired, or another project's: the same answer).
	ReplayErrStreamNotFound = "stream_not_found"
	// ReplayErrBusy: more replays are reading storage than the streamer
	// allows at once; nothing was read, ask again later.
	ReplayErrBusy = "busy"
	// ReplayErrUnavailable: storage could not be read; ask again later.
	ReplayErrUnavailable = "unavailable"
)

// SubjectReplay is where a direct subscriber asks for the stored lines
// and events of one stream of project.
func SubjectReplay(project, streamID string) string {
	return SubjectReplayPrefix + "." + project + "." + streamID
}

// SubjectProjectReplay matches the replay requests of every stream of a
// project: what a credential of the project may publish.
func SubjectProjectReplay(project string) string { return SubjectReplayPrefix + "." + project + ".*" }

// SubjectReaderInbox is the private inbox prefix of one credential of
// project: the credential subscribes to SubjectReaderInbox(...)+".>" and
// gives it to its client library as its inbox prefix (nats.go's
// nats.CustomInboxPrefix, the nats CLI's --inbox-prefix).
func SubjectReaderInbox(project, nonce string) string {
	return ReaderInboxPrefix + "." + project + "." + nonce
}

// ReplayRequest is the body of a request on SubjectReplay. An empty body
// is the request {} (from the start, DefaultReplayMax messages).
type ReplayRequest struct {
	// After is the JetStream stream sequence to replay after: 0 from the
	// stream's start, else a ReplayReply.Next (or a ReplayMessage.Seq).
	After uint64 `json:"after,omitempty"`
	// Max is how many messages the reply may carry, 1 to
	// DefaultReplayMax; 0 is DefaultReplayMax. A reply may carry fewer
	// (its bytes stay under the server's max payload).
	Max int `json:"max,omitempty"`
}

// ReplayReply is the one reply to a ReplayRequest: the stream's messages
// stored after ReplayRequest.After, in stream order, or Error.
type ReplayReply struct {
	// V is the message version (ReplayVersion).
	V int `json:"v"`
	// Messages are the stream's lines and lifecycle events, in stream
	// order; absent when none. Messages that cannot be decoded are
	// skipped (Next moves past them), as the SSE stream skips them.
	Messages []ReplayMessage `json:"messages,omitempty"`
	// Next is the After of the next request: the sequence of the last
	// message read (or, with Exhausted, the stream's end when the request
	// was read). Equal to the request's After when nothing was read.
	Next uint64 `json:"next"`
	// Exhausted says the stream's history is read up to the moment the
	// request was served: asking again from Next returns only what is
	// stored since. Follow live on the project's subjects from here.
	Exhausted bool `json:"exhausted"`
	// Ended says Messages hold the stream's terminal event (succeeded,
	// failed, cancelled, timed_out): nothing of the stream follows.
	Ended bool `json:"ended,omitempty"`
	// Error says why the request was refused; nothing else is set but V.
	Error *ErrorDetail `json:"error,omitempty"`
}

// ReplayMessage is one stored message of a replayed stream.
type ReplayMessage struct {
	// Subject is the subject it was published to: an output subject
	// (an OutputLine) or an event subject (an Event), as a live
	// subscriber sees it.
	Subject string `json:"subject"`
	// Seq is its JetStream stream sequence in RDEV_OUTPUT (not a line
	// number: that is OutputLine.Seq).
	Seq uint64 `json:"seq"`
	// Data is the stored body unchanged: the OutputLine or Event JSON a
	// live subscriber receives.
	Data json.RawMessage `json:"data"`
}
