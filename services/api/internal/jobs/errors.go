package jobs

// Kind classifies an Error for the transport that reports it.
type Kind int

// The kinds of Error.
const (
	// KindInvalid: the request is malformed or breaks a limit.
	KindInvalid Kind = iota
	// KindNotFound: the thing asked for does not exist.
	KindNotFound
	// KindConflict: the request contradicts the job's state (e.g.
	// cancelling a finished job).
	KindConflict
	// KindUnprocessable: well-formed, but contradicts an earlier request
	// (an idempotency key reused for another request).
	KindUnprocessable
)

// Error is a mistake of the caller's, with a stable machine-readable code.
type Error struct {
	Kind    Kind
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func invalid(code, msg string) *Error { return &Error{Kind: KindInvalid, Code: code, Message: msg} }
