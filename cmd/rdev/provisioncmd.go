package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/access/natskv"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology"
)

// topologyCmd creates or updates the streams and buckets, then exits:
// the one step of a deployment that needs the NATS admin user (compose's
// provision service, the Helm chart's hook Job), so that the services run
// as their own least-privileged users.
type topologyCmd struct {
	NATS     natsFlags     `embed:""`
	Topology topologyFlags `embed:""`
}

func (c *topologyCmd) Run(ctx context.Context, log *slog.Logger, stdout io.Writer) error {
	opts, err := c.NATS.auth().Options()
	if err != nil {
		return err
	}
	nc, err := nats.Connect(c.NATS.NatsURL, append(opts, nats.Name("rdev provision"))...)
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", c.NATS.NatsURL, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	tcfg := topology.Config{OutputMaxAge: c.Topology.OutputMaxAge, StateTTL: c.Topology.StateTTL, Replicas: c.Topology.Replicas}
	// Ensure, not only check: this is the process meant to change them.
	if err := provision(ctx, js, tcfg, true, log); err != nil {
		return err
	}
	// The access bucket's layout mark and stream token secret are written
	// by whoever opens the bucket first; the streamer's user may not
	// write, so a streamer that starts before any api would fail.
	accessKV, err := js.KeyValue(ctx, contracts.BucketAccess)
	if err != nil {
		return fmt.Errorf("access bucket: %w", err)
	}
	store, err := natskv.Open(ctx, accessKV)
	if err != nil {
		return err
	}
	if _, err := store.TokenSecret(ctx); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "rdev provisioned replicas=%d\n", c.Topology.Replicas)
	return err
}
