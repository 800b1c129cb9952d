package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// natsCredentialsCmd mints a NATS credential of a project for a direct
// subscriber and prints it, with the nats CLI lines that use it (follow
// live, replay a stream).
type natsCredentialsCmd struct {
	Server  serverFlags `embed:""`
	Out     outputFlags `embed:""`
	Project string      `short:"p" env:"RDEV_PROJECT" help:"Project to read (default: the context's)."`
}

func (c *natsCredentialsCmd) Run(ctx context.Context, std stdio) error {
	srv, err := c.Server.resolveProject(c.Project)
	if err != nil {
		return err
	}
	cred, err := srv.client().NATSCredentials(ctx, srv.project)
	if err != nil {
		return explain(err)
	}
	return c.Out.print(std.out, cred, func(w *tabwriter.Writer, _ func(contracts.Status) string) {
		fmt.Fprintf(w, "token:\t%s\n", cred.Token)
		fmt.Fprintf(w, "expires at:\t%s (in %s)\n", cred.ExpiresAt.Local().Format(time.RFC3339), time.Until(cred.ExpiresAt).Round(time.Second))
		fmt.Fprintf(w, "follow:\tnats --server <nats-url> --token %s sub %q\n", cred.Token, contracts.SubjectProjectOutput(srv.project))
		fmt.Fprintf(w, "inbox prefix:\t%s\n", cred.InboxPrefix)
		fmt.Fprintf(w, "replay:\tnats --server <nats-url> --token %s --inbox-prefix %s req %q '{\"after\":0}'\n",
			cred.Token, cred.InboxPrefix, contracts.SubjectReplay(srv.project, "<stream_id>"))
	})
}
