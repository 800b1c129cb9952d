package main

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
)

// rdev provision creates the topology on a server that has none, with
// the flags' settings, and exits.
func TestProvisionCommand(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	must(t, run(ctx, []string{"provision", "--nats-url", srv.ClientURL(), "--output-max-age", "2h"}, &out, io.Discard), "rdev provision")
	if out.String() != "rdev provisioned replicas=1\n" {
		t.Errorf("printed %q", out.String())
	}
	js, err := jetstream.New(natstest.Connect(t, srv))
	must(t, err, "jetstream")
	s, err := js.Stream(ctx, contracts.StreamOutput)
	must(t, err, "output stream")
	if got := s.CachedInfo().Config.MaxAge; got != 2*time.Hour {
		t.Errorf("output max age %s, want 2h", got)
	}
	if _, err := js.KeyValue(ctx, contracts.BucketState); err != nil {
		t.Errorf("state bucket: %v", err)
	}
	// What a streamer's user cannot write is there before any api starts.
	accessKV, err := js.KeyValue(ctx, contracts.BucketAccess)
	must(t, err, "access bucket")
	for _, k := range []string{"meta.layout", "meta.token_secret"} {
		if _, err := accessKV.Get(ctx, k); err != nil {
			t.Errorf("access bucket %s: %v", k, err)
		}
	}
	// A server that refuses the connection is an error, not a hang.
	err = run(ctx, []string{"provision", "--nats-url", "nats://127.0.0.1:1"}, io.Discard, io.Discard)
	if err == nil {
		t.Error("provision without a server succeeded")
	}
}
