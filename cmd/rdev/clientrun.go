package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/rdev-dev/rdev/pkg/client"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// clientGroup is the kong group of the client commands (run, logs, ...),
// apart from the services' in help and settings.
const clientGroup = "client"

// The exit codes of `rdev run` for ends that are not the command's own
// exit status (documented in docs/cli.md).
const (
	exitRejected  = 2   // the API refused the submit
	exitTimedOut  = 124 // the job ran out of time, as timeout(1)
	exitCancelled = 130 // the job was cancelled (128+SIGINT)
	exitLost      = 255 // the job failed without an exit status: lost worker, start failure
)

// exitError ends rdev with a code of its own; main prints msg (if any)
// and exits with code.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// stdio are the process's standard streams, for the client commands.
type stdio struct {
	in       io.Reader
	out, err io.Writer
}

// runCmd submits a command and follows it like kubectl exec.
type runCmd struct {
	Server   serverFlags       `embed:""`
	Project  string            `short:"p" env:"RDEV_PROJECT" help:"Project to run in (default: the context's)."`
	Priority string            `enum:",high,normal,low" default:"" help:"Priority: high, normal or low (default: the project's)."`
	Timeout  time.Duration     `help:"Longest the job may run (rounded up to seconds; default: the server's)."`
	Env      map[string]string `short:"e" help:"Environment variable K=V of the command; repeat the flag."`
	Workdir  string            `help:"Directory the command runs in, inside the workspace."`
	Detach   bool              `short:"d" help:"Print the job id and its URLs, and do not follow."`
	Command  []string          `arg:"" passthrough:"" help:"Command and its arguments, after --."`
}

func (c *runCmd) Run(ctx context.Context, forced forcedStop, std stdio) error {
	srv, err := c.Server.resolveProject(c.Project)
	if err != nil {
		return err
	}
	project := srv.project
	cmd := c.Command
	if len(cmd) > 0 && cmd[0] == "--" { // kong passes the separator through
		cmd = cmd[1:]
	}
	if len(cmd) == 0 {
		return &exitError{code: exitRejected, msg: "no command: rdev run [flags] -- CMD ARGS..."}
	}
	req := contracts.CommandRequest{Command: cmd}
	req.WorkDir, req.Priority = c.Workdir, c.Priority
	if c.Timeout > 0 {
		req.TimeoutSeconds = int(math.Ceil(c.Timeout.Seconds()))
	}
	if len(c.Env) > 0 {
		req.Env = map[string]contracts.EnvValue{}
		for k, v := range c.Env {
			req.Env[k] = contracts.EnvValue{Value: v}
		}
	}
	cl := srv.client()
	sub, err := cl.SubmitCommand(ctx, project, req)
	if err != nil {
		return submitError(err)
	}
	if c.Detach {
		printDetached(std, srv, sub)
		return nil
	}
	return followJob(ctx, forced, cl, srv, sub.JobID, sub.StreamID, std)
}

// submitError is the exit of a failed submit: a refusal (but for a bad
// key) is exitRejected.
func submitError(err error) error {
	var ae *client.Error
	if errors.As(err, &ae) && ae.Status != 401 {
		return &exitError{code: exitRejected, msg: "submit refused: " + explain(err).Error()}
	}
	return explain(err)
}

// printDetached prints a submitted job's id and URLs (no key).
func printDetached(std stdio, srv server, sub contracts.SubmitResponse) {
	fmt.Fprintf(std.out, "job:    %s\nstate:  %s\nevents: %s\nlogs:   rdev logs -f %s\n",
		sub.JobID, srv.url+sub.JobURL, srv.streamURL+client.StreamEventsURL(sub.StreamID), sub.JobID)
}

// jobWatch is how a stream is printed.
type jobWatch struct {
	cl    *client.Client
	std   stdio
	jobID string
	url   string // the events URL, absolute
	// cancel: the first interrupt cancels the job and the watch goes on
	// to its end; the second detaches. Otherwise an interrupt stops.
	cancel     bool
	timestamps bool      // each line starts with the time it was read
	since      time.Time // lines read before it are skipped
	// render, when set, writes a stdout line its own way and reports
	// whether it did (else the line is written as it is).
	render func(stdio, contracts.OutputLine) bool
}

// followJob prints the job's output until it ends and returns its exit
// code as an *exitError (nil for success).
func followJob(ctx context.Context, forced forcedStop, cl *client.Client, srv server, jobID, streamID string, std stdio) error {
	return jobWatch{cl: cl, std: std, jobID: jobID, url: srv.streamURL + client.StreamEventsURL(streamID), cancel: true}.run(ctx, forced)
}

// run prints the stream; its error is the job's exit code as an
// *exitError, nil for success.
func (w jobWatch) run(ctx context.Context, forced forcedStop) error {
	follow := ctx //nolint:contextcheck // with cancel, forced: the stream outlives the first interrupt, the job's end is awaited
	if w.cancel {
		follow = forced
	}
	s, err := w.cl.Follow(follow, w.url, client.FollowOptions{})
	if err != nil {
		return explain(err)
	}
	defer func() { _ = s.Close() }()
	cancelled := make(chan error, 1)
	if w.cancel {
		stop := context.AfterFunc(ctx, func() {
			fmt.Fprintf(w.std.err, "rdev: cancelling job %s (Ctrl-C again to detach)\n", w.jobID)
			_, err := w.cl.Cancel(context.WithoutCancel(ctx), w.jobID)
			if err != nil && !client.IsCode(err, "job_finished") {
				cancelled <- err
			}
		})
		defer stop()
	}
	var seen uint64
	for {
		ev, err := s.Next()
		switch {
		case errors.Is(err, io.EOF):
			return &exitError{code: exitLost, msg: "the stream ended without the job's end"}
		case err != nil && follow.Err() != nil:
			return &exitError{code: exitCancelled, msg: fmt.Sprintf("detached; job %s goes on: rdev logs -f %s", w.jobID, w.jobID)}
		case err != nil:
			return explain(err)
		}
		select {
		case err := <-cancelled:
			fmt.Fprintf(w.std.err, "rdev: cancel job %s: %v\n", w.jobID, explain(err))
		default:
		}
		switch ev.Name {
		case contracts.SSEOutput:
			l, err := ev.Line()
			if err != nil {
				return err
			}
			if l.Seq <= seen { // a line stored twice by an old worker
				continue
			}
			seen = l.Seq
			if !l.Time.Before(w.since) {
				w.writeLine(l)
			}
		case contracts.SSEGap:
			if g, err := ev.Gap(); err == nil {
				fmt.Fprintf(w.std.err, "rdev: output lines %d to %d of job %s were lost\n", g.From, g.To, w.jobID)
			}
		case contracts.SSEComplete:
			end, err := ev.Status()
			if err != nil {
				return err
			}
			return exitOf(end)
		}
	}
}

// writeLine writes an output line to the stream it was printed on, with
// its exact bytes.
func (w jobWatch) writeLine(l contracts.OutputLine) {
	if w.render != nil && l.FD == contracts.Stdout && w.render(w.std, l) {
		return
	}
	out := w.std.out
	if l.FD == contracts.Stderr {
		out = w.std.err
	}
	var b []byte
	if w.timestamps {
		b = l.Time.UTC().AppendFormat(b, time.RFC3339Nano) // as the API's plain-text logs
		b = append(b, ' ')
	}
	if l.Raw != nil {
		b = append(b, l.Raw...)
	} else {
		b = append(b, l.Text...)
	}
	if !l.Partial {
		b = append(b, '\n')
	}
	_, _ = out.Write(b)
}

// exitOf is the exit code of a job that ended with end.
func exitOf(end contracts.Event) error {
	switch {
	case end.Status == contracts.StatusSucceeded:
		return nil
	case end.Status == contracts.StatusTimedOut:
		return &exitError{code: exitTimedOut, msg: fmt.Sprintf("job %s timed out", end.JobID)}
	case end.Status == contracts.StatusCancelled:
		return &exitError{code: exitCancelled, msg: fmt.Sprintf("job %s cancelled", end.JobID)}
	case end.ExitCode != nil && *end.ExitCode != 0:
		return &exitError{code: *end.ExitCode}
	}
	msg := strings.TrimSpace(fmt.Sprintf("job %s failed: %s %s", end.JobID, end.Reason, end.Message))
	return &exitError{code: exitLost, msg: msg}
}

// exitCode is the process exit code for err, printing its message.
func exitCode(err error, stderr io.Writer) int {
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(stderr, "rdev:", strings.TrimPrefix(ee.msg, "rdev: "))
		}
		return ee.code
	}
	fmt.Fprintln(stderr, "rdev:", strings.TrimPrefix(err.Error(), "rdev: "))
	return 1
}
