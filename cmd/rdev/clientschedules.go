package main

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rdev-dev/rdev/pkg/client"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// schedulesCmd manages a project's cron schedules.
type schedulesCmd struct {
	Ls      schedulesLsCmd      `cmd:"" help:"List a project's cron schedules with their next run."`
	Get     schedulesGetCmd     `cmd:"" help:"Show a cron schedule: its next 5 runs and its last runs with their jobs."`
	Create  schedulesCreateCmd  `cmd:"" help:"Create a cron schedule that runs a command: rdev schedules create NAME 'CRON' -- COMMAND..."`
	Delete  schedulesDeleteCmd  `cmd:"" help:"Delete a cron schedule (its queued jobs stay)."`
	Trigger schedulesTriggerCmd `cmd:"" help:"Run a cron schedule now, outside its times."`
	Pause   schedulesPauseCmd   `cmd:"" help:"Pause a cron schedule: it fires nothing until resumed."`
	Resume  schedulesResumeCmd  `cmd:"" help:"Resume a paused cron schedule; times passed while paused are not run."`
}

type schedulesLsCmd struct {
	projectFlags `embed:""`
}

func (c *schedulesLsCmd) Run(ctx context.Context, std stdio) error {
	return projectCall(ctx, c.projectFlags, std, func(cl *client.Client, p string) (contracts.ScheduleList, error) {
		return cl.Schedules(ctx, p)
	}, func(w *tabwriter.Writer, l contracts.ScheduleList) {
		fmt.Fprintln(w, "ID\tNAME\tCRON\tTIMEZONE\tPAUSED\tNEXT RUN\tLAST RUN")
		for _, s := range l.Schedules {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%t\t%s\t%s\n", s.ID, s.Name, s.Cron, zoneName(s.Timezone), s.Paused, nextRun(s), lastRun(s.Runs))
		}
	})
}

type schedulesGetCmd struct {
	projectFlags `embed:""`
	ID           string `arg:"" help:"Schedule id."`
}

func (c *schedulesGetCmd) Run(ctx context.Context, std stdio) error {
	return projectCall(ctx, c.projectFlags, std, func(cl *client.Client, p string) (contracts.ScheduleResponse, error) {
		return cl.Schedule(ctx, p, c.ID)
	}, scheduleTable)
}

func scheduleTable(w *tabwriter.Writer, s contracts.ScheduleResponse) {
	fmt.Fprintf(w, "id:\t%s\nname:\t%s\ncron:\t%s (%s)\noverlap:\t%s\ncatch up:\t%s\npaused:\t%t\n",
		s.ID, s.Name, s.Cron, zoneName(s.Timezone), s.Overlap, s.CatchUp, s.Paused)
	for i, t := range s.NextRuns {
		label := ""
		if i == 0 {
			label = "next runs:"
		}
		fmt.Fprintf(w, "%s\t%s\n", label, t.Format(time.RFC3339))
	}
	if len(s.Runs) == 0 {
		return
	}
	fmt.Fprintln(w, "\nSCHEDULED AT\tOUTCOME\tJOB\tSTATUS")
	for _, r := range s.Runs {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", r.ScheduledAt.Format(time.RFC3339), r.Outcome, dash(r.JobID), dash(string(r.Status)))
	}
}

type schedulesCreateCmd struct {
	projectFlags `embed:""`
	Name         string   `arg:"" help:"A name for people."`
	Cron         string   `arg:"" help:"5-field cron expression or @hourly, @daily, @weekly, @monthly, @yearly."`
	Command      []string `arg:"" passthrough:"" help:"The command each run executes (after --)."`
	Timezone     string   `name:"tz" help:"IANA zone of the expression (default UTC)."`
	Overlap      string   `enum:",allow,skip,cancel_previous" default:"" help:"While the previous run's job has not ended: allow (default), skip or cancel_previous."`
	CatchUp      string   `name:"catch-up" enum:",none,one,all" default:"" help:"Times missed while no API ran: none (default), one or all."`
	Priority     string   `enum:",high,normal,low" default:"" help:"Priority of the runs' jobs (default: the project's)."`
	Paused       bool     `help:"Create the schedule paused."`
}

func (c *schedulesCreateCmd) Run(ctx context.Context, std stdio) error {
	argv := c.Command
	if len(argv) > 0 && argv[0] == "--" {
		argv = argv[1:]
	}
	req := contracts.ScheduleRequest{Name: c.Name, Cron: c.Cron, Timezone: c.Timezone, Overlap: c.Overlap, CatchUp: c.CatchUp, Paused: c.Paused,
		Job: &contracts.BatchItem{Command: argv, SubmitOptions: contracts.SubmitOptions{Priority: c.Priority}}}
	return projectCall(ctx, c.projectFlags, std, func(cl *client.Client, p string) (contracts.ScheduleResponse, error) {
		return cl.CreateSchedule(ctx, p, req)
	}, scheduleTable)
}

// schedulesIDCmd is the arguments of a command on one schedule.
type schedulesIDCmd struct {
	projectFlags `embed:""`
	ID           string `arg:"" help:"Schedule id."`
}

type schedulesDeleteCmd struct {
	schedulesIDCmd `embed:""`
}

func (c *schedulesDeleteCmd) Run(ctx context.Context, std stdio) error {
	return projectCall(ctx, c.projectFlags, std, func(cl *client.Client, p string) (string, error) {
		return "schedule " + c.ID + " deleted", cl.DeleteSchedule(ctx, p, c.ID)
	}, func(w *tabwriter.Writer, s string) { fmt.Fprintln(w, s) })
}

type schedulesTriggerCmd struct {
	schedulesIDCmd `embed:""`
}

func (c *schedulesTriggerCmd) Run(ctx context.Context, std stdio) error {
	return projectCall(ctx, c.projectFlags, std, func(cl *client.Client, p string) (contracts.ScheduleRun, error) {
		return cl.TriggerSchedule(ctx, p, c.ID)
	}, func(w *tabwriter.Writer, r contracts.ScheduleRun) {
		if r.JobID == "" {
			fmt.Fprintf(w, "run %s: %s\n", r.Outcome, r.Message)
			return
		}
		fmt.Fprintf(w, "job %s queued (rdev logs -f %s)\n", r.JobID, r.JobID)
	})
}

type schedulesPauseCmd struct {
	schedulesIDCmd `embed:""`
}

func (c *schedulesPauseCmd) Run(ctx context.Context, std stdio) error {
	return projectCall(ctx, c.projectFlags, std, func(cl *client.Client, p string) (contracts.ScheduleResponse, error) {
		return cl.PauseSchedule(ctx, p, c.ID)
	}, scheduleTable)
}

type schedulesResumeCmd struct {
	schedulesIDCmd `embed:""`
}

func (c *schedulesResumeCmd) Run(ctx context.Context, std stdio) error {
	return projectCall(ctx, c.projectFlags, std, func(cl *client.Client, p string) (contracts.ScheduleResponse, error) {
		return cl.ResumeSchedule(ctx, p, c.ID)
	}, scheduleTable)
}

func zoneName(z string) string { return cmp.Or(z, "UTC") }

func nextRun(s contracts.ScheduleResponse) string {
	if len(s.NextRuns) == 0 {
		return "-"
	}
	return s.NextRuns[0].Format(time.RFC3339)
}

func lastRun(runs []contracts.ScheduleRun) string {
	if len(runs) == 0 {
		return "-"
	}
	r := runs[len(runs)-1]
	return strings.TrimSpace(r.ScheduledAt.Format(time.RFC3339) + " " + r.Outcome + " " + string(r.Status))
}

func dash(s string) string { return cmp.Or(s, "-") }
