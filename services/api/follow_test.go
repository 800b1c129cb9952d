package api_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
	"github.com/rdev-dev/rdev/services/api"
)

// Submits do not wait on what the API follows: with the follow
// connection (Deps.Follow) passing nothing, a submit is still stored and
// answered. Once it passes again, the job index catches up: nothing is
// lost.
func TestSubmitsDoNotWaitOnTheFollowConnection(t *testing.T) {
	t.Parallel()
	srv, _, js := natstest.Provisioned(t)
	follow := natstest.NewStallable(srv)
	fjs, err := jetstream.New(follow.Connect(t, nats.ReconnectBufSize(-1)))
	if err != nil {
		t.Fatal(err)
	}
	fkv, err := fjs.KeyValue(context.Background(), contracts.BucketState)
	if err != nil {
		t.Fatal(err)
	}
	b := setupWithDeps(t, api.Config{MaxBodyBytes: 64 << 10, MaxTimeout: time.Hour}, js, func(d *api.Deps) {
		d.Follow, d.FollowState = fjs, fkv
	})
	const body = `{"command":["true"]}`
	b.submitN(t, "demo", 1, body)
	b.waitListed(t, "/v1/jobs?project=demo", 1)

	follow.Stall()
	// The stall ends within the server's write deadline either way, so
	// the stalled connection is not cut as a slow consumer.
	unstall := time.AfterFunc(5*time.Second, follow.Resume)
	stalled := b.submitN(t, "demo", 2, body)
	if !unstall.Stop() {
		t.Fatal("the submits waited on the stalled follow connection")
	}
	for _, id := range stalled {
		if _, err := b.kv.Get(context.Background(), contracts.JobKey(id)); err != nil {
			t.Fatalf("job %s answered but its state is not stored: %v", id, err)
		}
	}
	follow.Resume()
	b.waitListed(t, "/v1/jobs?project=demo", 3)
}
