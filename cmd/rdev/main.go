// Command rdev runs the rdev system: `rdev up` runs everything in one
// process on an embedded NATS server; `rdev api`, `rdev worker` and
// `rdev streamer` run one service against an external NATS.
package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"syscall"

	"github.com/alecthomas/kong"
	"github.com/willabides/kongplete"

	"github.com/rdev-dev/rdev/pkg/lifecycle"
	"github.com/rdev-dev/rdev/pkg/telemetry"
	"github.com/rdev-dev/rdev/pkg/telemetry/propagate"
)

func main() {
	// The first signal shuts down gracefully; a second stops waiting.
	ctx, forced, stop := lifecycle.Signals(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := runWith(ctx, forced, os.Args[1:], os.Stdout, os.Stderr, telemetry.Config{})
	stop()
	if err != nil {
		os.Exit(exitCode(err, os.Stderr))
	}
}

// forcedStop ends when the shutdown must stop waiting (a second signal).
type forcedStop context.Context

// runWith parses args (flags fall back to RDEV_* environment variables)
// and runs the chosen command until ctx ends; forced ending cuts its
// shutdown short. extra are telemetry destinations (tests and benchmarks:
// an in-memory span exporter, a manual metric reader).
func runWith(ctx, forced context.Context, args []string, stdout, stderr io.Writer, extra telemetry.Config) error {
	var c cli
	parser, err := newParser(&c, stdout, stderr)
	if err != nil {
		return err
	}
	// A shell asking for completions (COMP_LINE set) is answered here.
	kongplete.Complete(parser)
	kctx, err := parser.Parse(args)
	if err != nil {
		return err
	}
	kctx.BindTo(ctx, (*context.Context)(nil))
	kctx.BindTo(forced, (*forcedStop)(nil))
	kctx.BindTo(stdout, (*io.Writer)(nil))
	kctx.Bind(stdio{in: os.Stdin, out: stdout, err: stderr})
	tel := extra
	tel.OTLPEndpoint, tel.OTLPProtocol = c.Telemetry.OTLPEndpoint, c.Telemetry.OTLPProtocol
	tel.OTLPTracesEndpoint, tel.OTLPMetricsEndpoint = c.Telemetry.OTLPTracesEndpoint, c.Telemetry.OTLPMetricsEndpoint
	kctx.Bind(tel)
	return kctx.Run(c.Log.logger(stderr))
}

// newParser is rdev's command line, filling c.
func newParser(c *cli, stdout, stderr io.Writer) (*kong.Kong, error) {
	return kong.New(c,
		kong.Name("rdev"),
		kong.Description("Run commands in per-project workspaces from a prioritized NATS JetStream queue and watch their output live."),
		kong.UsageOnError(),
		kong.Writers(stdout, stderr),
		defaults(),
	)
}

func (l logFlags) logger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: l.Level}
	if l.Format == "json" {
		return slog.New(propagate.LogHandler(slog.NewJSONHandler(w, opts)))
	}
	return slog.New(propagate.LogHandler(slog.NewTextHandler(w, opts)))
}
