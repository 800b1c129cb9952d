// Package executor is the worker's port for running a job's command: the
// job runner calls an Executor, and adapters (localexec on this machine, a
// Kubernetes exec adapter in a pod) implement it. The conformance suite in
// executortest states the contract in tests; every adapter runs it.
package executor

import (
	"context"
	"errors"
	"io"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// ErrStart is returned, wrapped, when a command cannot be started: an empty
// argv, a program that is not found or not executable, a project id that is
// not a DNS label, a WorkDir that escapes the workspace or does not exist,
// an invalid environment variable name. The job runner reports it as
// contracts.ReasonStartFailed; retrying the same Spec will not help.
var ErrStart = errors.New("command cannot be started")

// ErrUnavailable is returned, wrapped, when the backend that runs commands
// (the Kubernetes API) cannot be reached or its circuit breaker is open,
// before the command started: the command did not run. The job runner hands
// the job back to the queue to run later, without spending an attempt.
var ErrUnavailable = errors.New("executor backend unavailable")

// ErrNotReady is returned, wrapped, when the environment the command must
// run in (a project's pod) is not ready and does not become ready in time,
// or cannot (crash-looping, failed, not allowed to be created). The
// command did not run. The job runner reports it as
// contracts.ReasonPodNotReady.
var ErrNotReady = errors.New("execution environment not ready")

// ErrLost is returned, wrapped, when the environment the command ran in (a
// project's pod) was deleted or stopped while the command ran. The job
// runner reports it as contracts.ReasonPodLost.
var ErrLost = errors.New("execution environment lost")

// Spec describes one command to run.
type Spec struct {
	// JobID is the job the command belongs to, for logs and labels.
	JobID string
	// Project is the DNS-label project id; it selects the workspace.
	Project string
	// Command is the argv. Command[0] is looked up in the command's PATH
	// unless it contains a '/'. The executor never runs it through a shell.
	Command []string
	// Env is added to the executor's base environment, overriding
	// variables of the same name.
	Env map[string]string
	// SecretEnv holds the values of the job's project secrets, added to
	// the environment after Env. An adapter must keep them out of every
	// log, error message, argv and URL; one that cannot refuses the spec
	// with ErrStart.
	SecretEnv map[string]string
	// WorkDir is the working directory relative to the project's workspace
	// root; "" is the root. It must exist and must not escape the root.
	WorkDir string
	// MergeStderr sends the command's stderr to its stdout, as 2>&1 does,
	// so that one stream keeps the order the command wrote in; the stderr
	// writer then gets nothing from the command. The merge must happen
	// where the command runs: two streams joined later (two pipes, or the
	// two channels of an exec stream) have already lost their order.
	MergeStderr bool
	// Priority is the job's priority level. An adapter may run lower
	// levels with less of the machine (localexec: a higher niceness);
	// "" is normal.
	Priority contracts.Priority
}

// Executor runs commands in a project's workspace.
//
// Implementations must be safe for concurrent use: the job runner may run
// several commands at once, in the same or in different projects.
type Executor interface {
	// Exec runs spec to completion, copying the command's stdout and stderr
	// to the writers as it prints, and returns its exit code.
	//
	// Output: each writer is used by one goroutine at a time, but stdout and
	// stderr are written concurrently, so a writer passed as both must be
	// safe for concurrent use. Bytes arrive unchanged and in order per
	// stream; no order holds between the two streams. Exec returns only
	// after both writers have received everything the command printed
	// before it exited, and it never uses them after returning. A command
	// that writes to both in turn may see a later stderr line delivered
	// before an earlier stdout line: order holds per stream only, unless
	// Spec.MergeStderr. Exec cannot interrupt a Write in progress, so a
	// writer must not block forever.
	//
	// Exit code: the command's exit status, or 128+signal when it was killed
	// by a signal, as shells report it. It is meaningful only when err is
	// nil; with an error it is -1.
	//
	// Processes: when the command exits, processes it left running in the
	// background are stopped too, and they cannot keep Exec waiting by
	// holding stdout or stderr open.
	//
	// Errors:
	//   - A command that cannot be started returns an error wrapping
	//     ErrStart (see ErrStart).
	//   - When ctx ends before the command exits (or before it starts),
	//     Exec stops the command and every process it started, waits for
	//     them, and returns an error wrapping context.Cause(ctx).
	//   - When a writer returns an error, Exec stops the command in the same
	//     way and returns an error wrapping the writer's error.
	Exec(ctx context.Context, spec Spec, stdout, stderr io.Writer) (exitCode int, err error)
}
