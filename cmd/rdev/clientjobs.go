package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/rdev-dev/rdev/pkg/client"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// outputFlags choose how a command prints what the API returned.
type outputFlags struct {
	Output string `short:"o" enum:"table,json,yaml" default:"table" help:"Output format: table, json or yaml."`
	// NoColor is the NO_COLOR convention: any value turns colours off.
	NoColor string `name:"no-color" env:"NO_COLOR" hidden:"" help:"Turn colours off (any value)."`
}

// print writes v as JSON or YAML, or calls table for the table format.
func (o outputFlags) print(w io.Writer, v any, table func(w *tabwriter.Writer, paint func(contracts.Status) string)) error {
	switch o.Output {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		// Through JSON, so the keys are the API's (json tags).
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		var generic any
		if err := json.Unmarshal(b, &generic); err != nil {
			return err
		}
		return yaml.NewEncoder(w).Encode(generic)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	table(tw, o.painter(w))
	return tw.Flush()
}

// painter colours a status when w is a terminal and NO_COLOR is unset.
func (o outputFlags) painter(w io.Writer) func(contracts.Status) string {
	f, ok := w.(*os.File)
	tty := false
	if ok {
		st, err := f.Stat()
		tty = err == nil && st.Mode()&os.ModeCharDevice != 0
	}
	colour := colourOn(tty, o.NoColor)
	return func(s contracts.Status) string {
		if !colour {
			return string(s)
		}
		code := "33" // yellow: scheduled, queued, running
		switch s {
		case contracts.StatusSucceeded:
			code = "32"
		case contracts.StatusFailed, contracts.StatusTimedOut:
			code = "31"
		case contracts.StatusCancelled, contracts.StatusExpired:
			code = "90"
		}
		return "\x1b[" + code + "m" + string(s) + "\x1b[0m"
	}
}

// colourOn: colours only on a terminal, and never with NO_COLOR set.
func colourOn(tty bool, noColor string) bool { return tty && noColor == "" }

// jobsCmd lists, reads and cancels jobs.
type jobsCmd struct {
	Ls     jobsLsCmd     `cmd:"" help:"List jobs newest first: a project's, or without one every project the key may read."`
	Get    jobsGetCmd    `cmd:"" help:"Print a job's state."`
	Cancel jobsCancelCmd `cmd:"" help:"Cancel a job (queued: at once; running: its process is stopped)."`
	Retry  jobsRetryCmd  `cmd:"" help:"Submit a job that failed, timed out or was cancelled again, as a new job."`
}

type jobsGetCmd struct {
	Server serverFlags `embed:""`
	Out    outputFlags `embed:""`
	ID     string      `arg:"" name:"job" help:"Job id."`
}

func (c *jobsGetCmd) Run(ctx context.Context, std stdio) error {
	srv, err := c.Server.resolve("")
	if err != nil {
		return err
	}
	j, err := srv.client().Job(ctx, c.ID)
	if err != nil {
		return explain(err)
	}
	return c.Out.print(std.out, j, func(w *tabwriter.Writer, paint func(contracts.Status) string) {
		jobTable(w, paint, j.JobState)
	})
}

// jobTable prints one job as rows of field and value.
func jobTable(w io.Writer, paint func(contracts.Status) string, j contracts.JobState) {
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "%s\t%s\n", k, v)
		}
	}
	row("JOB", j.JobID)
	row("PROJECT", j.Project)
	row("KIND", string(j.Kind))
	row("PRIORITY", string(j.Priority))
	row("STATUS", paint(j.Status))
	row("ATTEMPT", fmt.Sprint(j.Attempt))
	if j.ExitCode != nil {
		row("EXIT CODE", fmt.Sprint(*j.ExitCode))
	}
	row("REASON", strings.TrimSpace(j.Reason+" "+j.Message))
	row("LINES", fmt.Sprint(j.Lines))
	row("SUBMITTED", j.SubmittedAt.Format(time.RFC3339))
	if j.RunAt != nil {
		row("RUN AT", j.RunAt.Format(time.RFC3339))
	}
	if j.Deadline != nil {
		row("DEADLINE", j.Deadline.Format(time.RFC3339))
	}
	if j.StartedAt != nil {
		row("STARTED", j.StartedAt.Format(time.RFC3339))
	}
	if j.FinishedAt != nil {
		row("FINISHED", j.FinishedAt.Format(time.RFC3339))
	}
	row("BATCH", j.BatchID)
	row("STREAM", j.StreamID)
}

type jobsCancelCmd struct {
	Server serverFlags `embed:""`
	Out    outputFlags `embed:""`
	ID     string      `arg:"" name:"job" help:"Job id."`
}

func (c *jobsCancelCmd) Run(ctx context.Context, std stdio) error {
	srv, err := c.Server.resolve("")
	if err != nil {
		return err
	}
	j, err := srv.client().Cancel(ctx, c.ID)
	if err != nil {
		return explain(err)
	}
	return c.Out.print(std.out, j, func(w *tabwriter.Writer, paint func(contracts.Status) string) {
		jobTable(w, paint, j.JobState)
	})
}

type jobsRetryCmd struct {
	Server serverFlags `embed:""`
	Out    outputFlags `embed:""`
	Follow bool        `short:"f" help:"Follow the new job like rdev run: its output, its exit code; Ctrl-C cancels it (-o is then ignored)."`
	ID     string      `arg:"" name:"job" help:"Id of the job to run again."`
}

func (c *jobsRetryCmd) Run(ctx context.Context, forced forcedStop, std stdio) error {
	srv, err := c.Server.resolve("")
	if err != nil {
		return err
	}
	cl := srv.client()
	sub, err := cl.Retry(ctx, c.ID)
	if err != nil {
		return explain(err)
	}
	if !c.Follow {
		return c.Out.print(std.out, sub, func(w *tabwriter.Writer, _ func(contracts.Status) string) {
			printDetached(stdio{out: w}, srv, sub)
		})
	}
	return followJob(ctx, forced, cl, srv, sub.JobID, sub.StreamID, std)
}

// logsCmd prints a job's output: what is stored, or (-f) replayed and
// followed to the job's end.
type logsCmd struct {
	Server     serverFlags `embed:""`
	Follow     bool        `short:"f" help:"Follow the output until the job ends (stdout lines to stdout, stderr lines to stderr)."`
	Since      string      `help:"Only lines read at or after this: a duration back from now (10m, 1h30m) or an RFC 3339 time."`
	Timestamps bool        `help:"Start each line with the time it was read (RFC 3339)."`
	ID         string      `arg:"" name:"job" help:"Job id."`
}

func (c *logsCmd) Run(ctx context.Context, forced forcedStop, std stdio) error {
	since, err := sinceTime(c.Since, time.Now())
	if err != nil {
		return err
	}
	srv, err := c.Server.resolve("")
	if err != nil {
		return err
	}
	cl := srv.client()
	if !c.Follow {
		// What is stored now, as the API's plain text: no stream to
		// open, and a running job's lines so far.
		r, err := cl.Logs(ctx, c.ID, client.LogsOptions{Since: since, Timestamps: c.Timestamps})
		if err != nil {
			return explain(err)
		}
		defer func() { _ = r.Close() }()
		if _, err := io.Copy(std.out, r); err != nil {
			return fmt.Errorf("read the logs of job %s: %w", c.ID, err)
		}
		return nil
	}
	j, err := cl.Job(ctx, c.ID)
	if err != nil {
		return explain(err)
	}
	w := jobWatch{cl: cl, std: std, jobID: c.ID, url: srv.streamURL + j.EventsURL, timestamps: c.Timestamps, since: since}
	err = w.run(ctx, forced)
	var ee *exitError
	if errors.As(err, &ee) && ctx.Err() == nil {
		return nil // the job's own end is no error of logs
	}
	return err
}

// sinceTime reads --since: a duration back from now, or an RFC 3339
// time; "" is the zero time (every line).
func sinceTime(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--since %q: want a duration like 10m or an RFC 3339 time like 2026-12-05T01:00:00Z", s)
	}
	return t, nil
}
