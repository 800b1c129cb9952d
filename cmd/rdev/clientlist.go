package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rdev-dev/rdev/pkg/client"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// jobsLsCmd lists jobs newest first: one project's, or (without a
// project) those of every project the key may read.
type jobsLsCmd struct {
	Server   serverFlags `embed:""`
	Out      outputFlags `embed:""`
	Project  string      `short:"p" env:"RDEV_PROJECT" help:"Project whose jobs to list (default: the context's; without one, every project the key may read)."`
	Status   string      `enum:",scheduled,queued,running,succeeded,failed,timed_out,cancelled,expired" default:"" help:"Jobs of one status: scheduled, queued, running, succeeded, failed, timed_out, cancelled or expired."`
	Priority string      `enum:",high,normal,low" default:"" help:"Jobs of one priority: high, normal or low."`
	Kind     string      `enum:",exec,claude" default:"" help:"Jobs of one kind: exec or claude."`
	Batch    string      `help:"Jobs of one batch (its id)."`
	Since    timeFlag    `placeholder:"TIME" help:"Jobs submitted at or after this time: RFC 3339, or a duration ago such as 1h."`
	Until    timeFlag    `placeholder:"TIME" help:"Jobs submitted at or before this time: RFC 3339, or a duration ago such as 10m."`
	Limit    int         `default:"50" help:"Jobs per page (1 to 1000)."`
	Cursor   string      `help:"The next_cursor of the page before."`
}

func (c *jobsLsCmd) Run(ctx context.Context, std stdio) error {
	srv, err := c.Server.resolve(c.Project)
	if err != nil {
		return err
	}
	f := client.JobFilter{Status: contracts.Status(c.Status), Priority: contracts.Priority(c.Priority), Kind: contracts.Kind(c.Kind),
		BatchID: c.Batch, Since: c.Since.t, Until: c.Until.t}
	p := client.Page{Cursor: c.Cursor, Limit: c.Limit}
	var l contracts.JobList
	if srv.project != "" {
		l, err = srv.client().ListJobs(ctx, srv.project, f, p)
	} else {
		l, err = srv.client().ListAllJobs(ctx, "", f, p)
	}
	if err != nil {
		return explain(err)
	}
	return c.Out.print(std.out, l, func(w *tabwriter.Writer, paint func(contracts.Status) string) {
		fmt.Fprintln(w, "JOB\tPROJECT\tKIND\tPRIORITY\tSTATUS\tATTEMPT\tEXIT\tSUBMITTED\tFINISHED")
		for _, j := range l.Jobs {
			exit := "-"
			if j.ExitCode != nil {
				exit = fmt.Sprint(*j.ExitCode)
			}
			status := paint(j.Status)
			if j.Status == contracts.StatusScheduled && j.RunAt != nil {
				status += " " + j.RunAt.Format(time.RFC3339) // when it runs
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", j.JobID, j.Project, j.Kind, j.Priority, status,
				j.Attempt, exit, j.SubmittedAt.Format(time.RFC3339), when(j.FinishedAt))
		}
		if l.NextCursor != "" {
			fmt.Fprintf(w, "next page: --cursor %s\n", l.NextCursor)
		}
	})
}

// timeFlag is a point in time given as RFC 3339 or as a duration ago.
type timeFlag struct{ t time.Time }

// UnmarshalText reads RFC 3339 (2026-01-02T15:04:05Z) or a duration
// ago (90m, 24h); kong calls it for the flag's value.
func (f *timeFlag) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		f.t = t
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return fmt.Errorf("%q: want RFC 3339 (2026-01-02T15:04:05Z) or a duration ago (1h)", s)
	}
	f.t = time.Now().Add(-d)
	return nil
}

// queuesCmd reads, pauses and resumes the priority levels (admin).
type queuesCmd struct {
	Ls     queuesLsCmd     `cmd:"" help:"List each priority level: paused, waiting and running jobs, oldest wait, dispatches in the last minute."`
	Pause  queuesPauseCmd  `cmd:"" help:"Stop the workers dispatching a priority level; its jobs wait, and the pause outlives restarts."`
	Resume queuesResumeCmd `cmd:"" help:"Let the workers dispatch a paused priority level again."`
}

type queuesLsCmd struct {
	adminFlags `embed:""`
}

func (c *queuesLsCmd) Run(ctx context.Context, std stdio) error {
	return adminCall(ctx, c.adminFlags, std, func(cl *client.Client) (contracts.QueueList, error) { return cl.Queues(ctx) },
		func(w *tabwriter.Writer, l contracts.QueueList) {
			fmt.Fprintln(w, "PRIORITY\tPAUSED\tWAITING\tRUNNING\tOLDEST WAIT\tDISPATCHED/MIN")
			for _, q := range l.Queues {
				oldest := (time.Duration(q.OldestAgeSeconds) * time.Second).String()
				fmt.Fprintf(w, "%s\t%t\t%d\t%d\t%s\t%d\n", q.Priority, q.Paused, q.Waiting, q.Running, oldest, q.DispatchedLastMinute)
			}
		})
}

type queuesPauseCmd struct {
	adminFlags `embed:""`
	Priority   string `arg:"" enum:"high,normal,low" help:"Priority level: high, normal or low."`
}

func (c *queuesPauseCmd) Run(ctx context.Context, std stdio) error {
	return adminCall(ctx, c.adminFlags, std, func(cl *client.Client) (contracts.QueuePause, error) {
		return cl.PauseQueue(ctx, contracts.Priority(c.Priority))
	}, pauseTable)
}

type queuesResumeCmd struct {
	adminFlags `embed:""`
	Priority   string `arg:"" enum:"high,normal,low" help:"Priority level: high, normal or low."`
}

func (c *queuesResumeCmd) Run(ctx context.Context, std stdio) error {
	return adminCall(ctx, c.adminFlags, std, func(cl *client.Client) (contracts.QueuePause, error) {
		return cl.ResumeQueue(ctx, contracts.Priority(c.Priority))
	}, pauseTable)
}

func pauseTable(w *tabwriter.Writer, p contracts.QueuePause) {
	if p.Paused {
		fmt.Fprintf(w, "queue %s paused: its jobs wait until `rdev queues resume %s`\n", p.Priority, p.Priority)
		return
	}
	fmt.Fprintf(w, "queue %s dispatching\n", p.Priority)
}
