package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/rdev-dev/rdev/pkg/client"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// secretsCmd manages a project's secrets (admin). A value goes in and
// never comes out: not in a listing, and never through an argument, which
// shell history and ps keep.
type secretsCmd struct {
	Ls     secretsLsCmd     `cmd:"" help:"List a project's secrets: names and when each was set, never values."`
	Set    secretsSetCmd    `cmd:"" help:"Set a project secret from standard input (on a terminal, a prompt that does not echo)."`
	Delete secretsDeleteCmd `cmd:"" help:"Delete a project secret; a queued job that references it fails at its start."`
}

type secretsLsCmd struct {
	projectFlags `embed:""`
}

func (c *secretsLsCmd) Run(ctx context.Context, std stdio) error {
	return projectCall(ctx, c.projectFlags, std, func(cl *client.Client, p string) (contracts.SecretList, error) {
		l, err := cl.Secrets(ctx, p)
		return contracts.SecretList{Secrets: l}, err
	}, func(w *tabwriter.Writer, l contracts.SecretList) {
		fmt.Fprintln(w, "NAME\tSET")
		for _, s := range l.Secrets {
			fmt.Fprintf(w, "%s\t%s\n", s.Name, s.UpdatedAt.Format(time.RFC3339))
		}
	})
}

type secretsSetCmd struct {
	projectFlags `embed:""`
	Name         string `arg:"" help:"Secret name (letters, digits, _ and -), referenced in a job's env as {\"secret\":\"NAME\"}."`
	Raw          bool   `help:"Keep the input exactly; by default one trailing newline is dropped (echo adds one)."`
}

// secretSet is what set prints: the name and whether it was new, never
// the value.
type secretSet struct {
	Name    string `json:"name"`
	Created bool   `json:"created"`
}

func (c *secretsSetCmd) Run(ctx context.Context, std stdio) error {
	value, err := readSecret(std, c.Name, c.Raw)
	if err != nil {
		return err
	}
	return projectCall(ctx, c.projectFlags, std, func(cl *client.Client, p string) (secretSet, error) {
		created, err := cl.PutSecret(ctx, p, c.Name, value)
		return secretSet{Name: c.Name, Created: created}, err
	}, func(w *tabwriter.Writer, s secretSet) {
		verb := "replaced"
		if s.Created {
			verb = "set"
		}
		fmt.Fprintf(w, "secret %s %s\n", s.Name, verb)
	})
}

// readSecret reads a value from standard input: on a terminal through a
// prompt that does not echo, else all of it (one trailing newline
// dropped unless raw). More than the API takes is refused here, before
// anything is sent.
func readSecret(std stdio, name string, raw bool) (string, error) {
	if f, ok := std.in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprintf(std.err, "Value of secret %s (not echoed): ", name)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(std.err)
		if err != nil {
			return "", fmt.Errorf("read the value: %w", err)
		}
		return string(b), nil
	}
	b, err := io.ReadAll(io.LimitReader(std.in, contracts.MaxSecretBytes+3))
	if err != nil {
		return "", fmt.Errorf("read the value from standard input: %w", err)
	}
	if !raw {
		b = bytes.TrimSuffix(bytes.TrimSuffix(b, []byte("\n")), []byte("\r"))
	}
	switch {
	case len(b) == 0:
		return "", errors.New("no value on standard input: pipe it in (e.g. rdev secrets set NAME < file), or run on a terminal to be asked")
	case len(b) > contracts.MaxSecretBytes:
		return "", fmt.Errorf("the value is over %d KiB, the most a secret may hold", contracts.MaxSecretBytes>>10)
	}
	return string(b), nil
}

type secretsDeleteCmd struct {
	projectFlags `embed:""`
	Name         string `arg:"" help:"Secret name."`
}

func (c *secretsDeleteCmd) Run(ctx context.Context, std stdio) error {
	return projectCall(ctx, c.projectFlags, std, func(cl *client.Client, p string) (string, error) {
		return "secret " + c.Name + " deleted", cl.DeleteSecret(ctx, p, c.Name)
	}, func(w *tabwriter.Writer, s string) { fmt.Fprintln(w, s) })
}
