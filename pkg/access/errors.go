package access

import (
	"errors"
	"fmt"
)

// ErrNotFound is returned (wrapped) by stores when a project or key does
// not exist.
var ErrNotFound = errors.New("not found")

// ErrExists is returned (wrapped) by stores when creating a project or key
// whose id is taken.
var ErrExists = errors.New("already exists")

// Kind classifies an *Error for the transport (accesshttp.Status).
type Kind int

// The kinds of *Error.
const (
	// KindInvalid: the caller's input is wrong (400).
	KindInvalid Kind = iota
	// KindUnauthenticated: no usable credentials (401).
	KindUnauthenticated
	// KindForbidden: valid credentials, not allowed here (403).
	KindForbidden
	// KindNotFound: no such project or key (404).
	KindNotFound
	// KindConflict: the request contradicts the current state (409).
	KindConflict
	// KindUnprocessable: well-formed, but contradicts an earlier request,
	// e.g. an idempotency key reused for another request (422).
	KindUnprocessable
)

// Error is a refusal the caller can act on: a stable machine-readable code
// and a message for people. It is the one refusal type of rdev's servers:
// the API's jobs service returns it too, and accesshttp turns it into a
// status.
type Error struct {
	Kind    Kind
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func errorf(kind Kind, code, format string, args ...any) *Error {
	return &Error{Kind: kind, Code: code, Message: fmt.Sprintf(format, args...)}
}
