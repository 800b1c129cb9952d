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

// adminFlags are what every admin command takes: the server and the
// output format.
type adminFlags struct {
	Server serverFlags `embed:""`
	Out    outputFlags `embed:""`
}

// adminCall resolves the server and runs fn with its client, printing what fn
// returns with table for -o table.
func adminCall[T any](ctx context.Context, f adminFlags, std stdio, fn func(*client.Client) (T, error), table func(w *tabwriter.Writer, v T)) error {
	srv, err := f.Server.resolve("")
	if err != nil {
		return err
	}
	v, err := fn(srv.client())
	if err != nil {
		return explain(err)
	}
	return f.Out.print(std.out, v, func(w *tabwriter.Writer, _ func(contracts.Status) string) { table(w, v) })
}

// projectFlags are what every command on one project's resources
// (schedules, webhooks) takes: the server, the output and the project.
type projectFlags struct {
	Server  serverFlags `embed:""`
	Out     outputFlags `embed:""`
	Project string      `short:"p" env:"RDEV_PROJECT" help:"Project (default: the context's)."`
}

// projectCall resolves the server and project and runs fn with its
// client, printing what fn returns with table for -o table.
func projectCall[T any](ctx context.Context, f projectFlags, std stdio, fn func(cl *client.Client, project string) (T, error),
	table func(w *tabwriter.Writer, v T)) error {
	srv, err := f.Server.resolveProject(f.Project)
	if err != nil {
		return err
	}
	v, err := fn(srv.client(), srv.project)
	if err != nil {
		return explain(err)
	}
	return f.Out.print(std.out, v, func(w *tabwriter.Writer, _ func(contracts.Status) string) { table(w, v) })
}

func when(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Format(time.RFC3339)
}

// projectsCmd manages projects.
type projectsCmd struct {
	Ls     projectsLsCmd     `cmd:"" help:"List the projects the key may see."`
	Create projectsCreateCmd `cmd:"" help:"Create a project (admin)."`
}

type projectsLsCmd struct {
	adminFlags `embed:""`
}

func (c *projectsLsCmd) Run(ctx context.Context, std stdio) error {
	return adminCall(ctx, c.adminFlags, std, func(cl *client.Client) ([]contracts.Project, error) { return cl.Projects(ctx) },
		func(w *tabwriter.Writer, ps []contracts.Project) {
			fmt.Fprintln(w, "ID\tNAME\tPRIORITY\tMAX JOBS\tCREATED")
			for _, p := range ps {
				fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\n", p.ID, p.Name, cmpOr(string(p.DefaultPriority), "normal"), p.MaxConcurrentJobs, p.CreatedAt.Format(time.RFC3339))
			}
		})
}

type projectsCreateCmd struct {
	adminFlags `embed:""`
	ID         string `arg:"" help:"Project id."`
	Name       string `help:"Display name."`
	Priority   string `enum:",high,normal,low" default:"" help:"Default priority of its jobs."`
	MaxJobs    int    `name:"max-concurrent-jobs" help:"Most jobs of the project running at once (0: no limit)."`
}

func (c *projectsCreateCmd) Run(ctx context.Context, std stdio) error {
	req := contracts.ProjectRequest{ID: c.ID, Name: c.Name, DefaultPriority: contracts.Priority(c.Priority), MaxConcurrentJobs: c.MaxJobs}
	return adminCall(ctx, c.adminFlags, std, func(cl *client.Client) (contracts.Project, error) { return cl.CreateProject(ctx, req) },
		func(w *tabwriter.Writer, p contracts.Project) { fmt.Fprintf(w, "project %s created\n", p.ID) })
}

// keysCmd manages API keys (admin).
type keysCmd struct {
	Ls     keysLsCmd     `cmd:"" help:"List the API keys (never their secrets)."`
	Create keysCreateCmd `cmd:"" help:"Create an API key; its secret is printed this once."`
	Revoke keysRevokeCmd `cmd:"" help:"Revoke an API key."`
}

type keysLsCmd struct {
	adminFlags `embed:""`
}

func (c *keysLsCmd) Run(ctx context.Context, std stdio) error {
	return adminCall(ctx, c.adminFlags, std, func(cl *client.Client) ([]contracts.Key, error) { return cl.Keys(ctx) },
		func(w *tabwriter.Writer, ks []contracts.Key) {
			fmt.Fprintln(w, "ID\tNAME\tSCOPES\tEXPIRES\tREVOKED\tLAST USED")
			for _, k := range ks {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Name, strings.Join(k.Scopes, ","), when(k.ExpiresAt), when(k.RevokedAt), when(k.LastUsedAt))
			}
		})
}

type keysCreateCmd struct {
	adminFlags `embed:""`
	Name       string        `arg:"" help:"Name of the key."`
	Scopes     []string      `name:"scope" required:"" help:"Scope, e.g. admin or project:demo:submit; repeat or comma separate."`
	TTL        time.Duration `name:"ttl" help:"Expire the key after this long (default: never)."`
}

func (c *keysCreateCmd) Run(ctx context.Context, std stdio) error {
	req := contracts.KeyRequest{Name: c.Name, Scopes: c.Scopes}
	if c.TTL > 0 {
		exp := time.Now().Add(c.TTL).UTC()
		req.ExpiresAt = &exp
	}
	return adminCall(ctx, c.adminFlags, std, func(cl *client.Client) (contracts.Key, error) { return cl.CreateKey(ctx, req) },
		func(w *tabwriter.Writer, k contracts.Key) {
			fmt.Fprintf(w, "ID\t%s\nKEY\t%s\t(shown this once: store it now)\n", k.ID, k.Key)
		})
}

type keysRevokeCmd struct {
	adminFlags `embed:""`
	ID         string `arg:"" help:"Key id."`
}

func (c *keysRevokeCmd) Run(ctx context.Context, std stdio) error {
	return adminCall(ctx, c.adminFlags, std, func(cl *client.Client) (contracts.Key, error) { return cl.RevokeKey(ctx, c.ID) },
		func(w *tabwriter.Writer, k contracts.Key) {
			fmt.Fprintf(w, "key %s revoked at %s\n", k.ID, when(k.RevokedAt))
		})
}

// auditCmd reads the audit log.
type auditCmd struct {
	adminFlags `embed:""`
	Project    string        `short:"p" help:"One project's records."`
	Kind       string        `help:"One kind of record, e.g. job.submitted."`
	Actor      string        `help:"One actor's records (a key id)."`
	Since      time.Duration `help:"Records of this long ago and newer, e.g. 1h."`
	Limit      int           `default:"50" help:"Records per page (1 to 1000)."`
	Cursor     string        `help:"The next_cursor of the page before."`
}

func (c *auditCmd) Run(ctx context.Context, std stdio) error {
	q := client.AuditQuery{Project: c.Project, Actor: c.Actor, Kind: contracts.AuditKind(c.Kind), Page: client.Page{Cursor: c.Cursor, Limit: c.Limit}}
	if c.Since > 0 {
		q.Since = time.Now().Add(-c.Since)
	}
	return adminCall(ctx, c.adminFlags, std, func(cl *client.Client) (contracts.AuditPage, error) { return cl.Audit(ctx, q) },
		func(w *tabwriter.Writer, p contracts.AuditPage) {
			fmt.Fprintln(w, "TIME\tKIND\tACTOR\tPROJECT\tJOB")
			for _, r := range p.Records {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", r.Time.Format(time.RFC3339), r.Kind, r.Actor, r.Project, r.JobID)
			}
			if p.NextCursor != "" {
				fmt.Fprintf(w, "next page: --cursor %s\n", p.NextCursor)
			}
		})
}

// deadLettersCmd lists and retries dead letters.
type deadLettersCmd struct {
	Ls    deadLettersLsCmd    `cmd:"" help:"List a project's dead letters."`
	Retry deadLettersRetryCmd `cmd:"" help:"Queue a dead letter's job again."`
}

type deadLettersLsCmd struct {
	adminFlags `embed:""`
	Project    string `short:"p" env:"RDEV_PROJECT" required:"" help:"Project."`
	Limit      int    `default:"100" help:"Letters per page (1 to 1000)."`
	Cursor     string `help:"The next_cursor of the page before."`
}

func (c *deadLettersLsCmd) Run(ctx context.Context, std stdio) error {
	return adminCall(ctx, c.adminFlags, std, func(cl *client.Client) (contracts.DeadLetterPage, error) {
		return cl.DeadLetters(ctx, c.Project, client.Page{Cursor: c.Cursor, Limit: c.Limit})
	}, func(w *tabwriter.Writer, p contracts.DeadLetterPage) {
		fmt.Fprintln(w, "ID\tTIME\tREASON\tATTEMPTS\tRETRIED")
		for _, d := range p.DeadLetters {
			retried := "-"
			if d.Retried != nil {
				retried = d.Retried.RetriedAt.Format(time.RFC3339)
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\n", d.ID, d.Time.Format(time.RFC3339), d.Reason, d.Attempts, retried)
		}
		if p.NextCursor != "" {
			fmt.Fprintf(w, "next page: --cursor %s\n", p.NextCursor)
		}
	})
}

type deadLettersRetryCmd struct {
	adminFlags `embed:""`
	ID         string `arg:"" help:"Dead letter id."`
	Force      bool   `help:"Retry a letter that was retried before."`
}

func (c *deadLettersRetryCmd) Run(ctx context.Context, std stdio) error {
	return adminCall(ctx, c.adminFlags, std, func(cl *client.Client) (contracts.SubmitResponse, error) {
		return cl.RetryDeadLetter(ctx, c.ID, c.Force)
	}, func(w *tabwriter.Writer, s contracts.SubmitResponse) {
		fmt.Fprintf(w, "job %s queued again: rdev logs -f %s\n", s.JobID, s.JobID)
	})
}
