package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/topology"
)

// provisionWait is how long a process retries the topology at start.
const provisionWait = 30 * time.Second

// provision checks the streams and buckets and creates or updates what is
// not current, retrying for up to provisionWait: a process that starts
// while its NATS cluster still elects leaders, or restarts, waits for it
// rather than exiting. A lone service (not embedding NATS) only checks
// first, since provisioning needs the admin user.
func provision(ctx context.Context, js jetstream.JetStream, tcfg topology.Config, embedded bool, log *slog.Logger) error {
	deadline := time.Now().Add(provisionWait)
	backoff := 250 * time.Millisecond
	for {
		err := provisionOnce(ctx, js, tcfg, embedded)
		if err == nil || ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		log.Warn("NATS topology not ready; retrying", "err", err, "in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return err
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func provisionOnce(ctx context.Context, js jetstream.JetStream, tcfg topology.Config, embedded bool) error {
	// One attempt's requests may go unanswered while a cluster elects.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if !embedded {
		current, err := topology.Current(ctx, js, tcfg)
		if err != nil {
			return fmt.Errorf("check the NATS topology: %w", err)
		}
		if current {
			return nil
		}
	}
	if _, err := topology.Ensure(ctx, js, tcfg); err != nil {
		return fmt.Errorf("%w (provisioning needs the NATS admin user or a server without users; see docs/security.md)", err)
	}
	return nil
}
