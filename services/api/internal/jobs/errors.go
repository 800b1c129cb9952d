package jobs

import "github.com/rdev-dev/rdev/pkg/access"

// Error is a mistake of the caller's, with a stable machine-readable code:
// the servers' one refusal type, so one translator (accesshttp) turns it
// into a status.
type Error = access.Error

// Kind classifies an Error for the transport that reports it.
type Kind = access.Kind

// The kinds of Error the jobs service returns.
const (
	// KindInvalid: the request is malformed or breaks a limit.
	KindInvalid = access.KindInvalid
	// KindNotFound: the thing asked for does not exist.
	KindNotFound = access.KindNotFound
	// KindConflict: the request contradicts the job's state (e.g.
	// cancelling a finished job).
	KindConflict = access.KindConflict
	// KindUnprocessable: well-formed, but contradicts an earlier request
	// (an idempotency key reused for another request).
	KindUnprocessable = access.KindUnprocessable
)

func invalid(code, msg string) *Error { return &Error{Kind: KindInvalid, Code: code, Message: msg} }
