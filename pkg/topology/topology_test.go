package topology_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
)

// Ensure runs at every service start: a second run with new limits must
// update the streams in place and keep what they hold.
func TestEnsureIsIdempotentAndKeepsMessages(t *testing.T) {
	t.Parallel()
	_, _, js := natstest.Provisioned(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// A stream just placed on a cluster may not answer for a moment while
	// its leader starts (no response from stream): publish again, as a
	// client would, under one message id so that a retry stores nothing
	// twice.
	for deadline := time.Now().Add(30 * time.Second); ; {
		_, err := js.Publish(ctx, contracts.SubjectOutput("p1", "s1"), []byte(`{"v":1}`), jetstream.WithMsgID("first"))
		if err == nil {
			break
		}
		if !errors.Is(err, jetstream.ErrNoStreamResponse) || time.Now().After(deadline) {
			t.Fatalf("first publish: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := js.Publish(ctx, contracts.SubjectJob(contracts.PriorityLow, "demo"), []byte(`{"v":1}`)); err != nil {
		t.Fatal(err)
	}
	// A stream provisioned before replays used direct gets has them off,
	// and the server's default consumer limit: the next Ensure sets both
	// in place.
	out, err := js.Stream(ctx, contracts.StreamOutput)
	if err != nil {
		t.Fatal(err)
	}
	old := out.CachedInfo().Config
	old.AllowDirect, old.MaxConsumers = false, 0
	if _, err := js.UpdateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	if ok, err := topology.Current(ctx, js, topology.Config{}); ok || err != nil {
		t.Fatalf("Current without direct gets = %v, %v; want false", ok, err)
	}
	if _, err := topology.Ensure(ctx, js, topology.Config{OutputMaxAge: 2 * time.Hour}); err != nil {
		t.Fatalf("second Ensure: %v", err)
	}
	for name, want := range map[string]uint64{contracts.StreamOutput: 1, contracts.StreamJobs: 1} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs != want {
			t.Errorf("%s holds %d messages after update, want %d", name, info.State.Msgs, want)
		}
		if name == contracts.StreamOutput && info.Config.MaxAge != 2*time.Hour {
			t.Errorf("%s max age %s, want 2h", name, info.Config.MaxAge)
		}
		if name == contracts.StreamOutput && (!info.Config.AllowDirect || info.Config.MaxConsumers != topology.OutputMaxConsumers) {
			t.Errorf("%s after update: allow direct %v, max consumers %d; want true, %d", name,
				info.Config.AllowDirect, info.Config.MaxConsumers, topology.OutputMaxConsumers)
		}
	}
	s, err := js.Stream(ctx, contracts.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := s.Info(ctx)
	if info.Config.Retention != jetstream.WorkQueuePolicy {
		t.Errorf("jobs retention %v, want work queue", info.Config.Retention)
	}
}

// The upgrade path of --replicas: streams and buckets provisioned with one
// replica on a cluster are scaled to three in place by the next Ensure,
// keeping what they hold; on a single server, more than one replica is a
// clear error that names the setting.
func TestEnsureScalesReplicasInPlace(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	t.Parallel()
	c := natstest.NewCluster(t, 3)
	js := c.Provision(1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// A stream just created on a fresh cluster may not answer every server
	// yet (its subject's interest is still spreading): a publish meanwhile
	// gets no response, so it is tried again (every 250 ms, for 30 s).
	if _, err := js.Publish(ctx, contracts.SubjectOutput("p1", "s1"), []byte(`{"v":1}`), jetstream.WithRetryAttempts(120)); err != nil {
		t.Fatal(err)
	}
	// Right after the cluster forms, its meta leader may not count every
	// peer as current yet and refuses R3 placement; an operator's retry
	// (or the services' start-up retries) gets past it, and so does this.
	for deadline := time.Now().Add(30 * time.Second); ; {
		_, err := topology.Ensure(ctx, js, topology.Config{Replicas: 3})
		if err == nil {
			break
		}
		if !strings.Contains(err.Error(), "no suitable peers") || time.Now().After(deadline) {
			t.Fatalf("Ensure with 3 replicas: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, name := range []string{contracts.StreamOutput, contracts.StreamJobs, contracts.StreamAudit, contracts.StreamDead,
		"KV_" + contracts.BucketState, "KV_" + contracts.BucketAccess} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.Config.Replicas != 3 {
			t.Errorf("%s has %d replicas after the upgrade, want 3", name, info.Config.Replicas)
		}
		if name == contracts.StreamOutput && info.State.Msgs != 1 {
			t.Errorf("%s holds %d messages after the upgrade, want 1", name, info.State.Msgs)
		}
	}

	_, _, single := natstest.Provisioned(t)
	_, err := topology.Ensure(ctx, single, topology.Config{Replicas: 3})
	if err == nil || !strings.Contains(err.Error(), "replicas") {
		t.Fatalf("3 replicas on a single server: %v, want an error naming replicas", err)
	}
}

func TestCurrent(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	js, err := jetstream.New(natstest.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := topology.Config{Memory: true}
	if ok, err := topology.Current(ctx, js, cfg); ok || err != nil {
		t.Fatalf("fresh server: current %v, %v", ok, err)
	}
	if _, err := topology.Ensure(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	if ok, err := topology.Current(ctx, js, cfg); !ok || err != nil {
		t.Fatalf("after Ensure: current %v, %v", ok, err)
	}
	cfg.OutputMaxAge = time.Hour
	if ok, err := topology.Current(ctx, js, cfg); ok || err != nil {
		t.Fatalf("another max age: current %v, %v", ok, err)
	}
}

// Each watched stream holds an ordered consumer of the output stream on
// each streamer. nats-server 2.15 allows 1,000 consumers per stream unless
// the stream sets its own limit, and the 1,001st watched stream failed
// with "maximum consumers limit reached" (10026): the output stream sets
// topology.OutputMaxConsumers.
func TestOutputStreamHoldsMoreThanTheServersDefaultConsumers(t *testing.T) {
	t.Parallel()
	_, _, js := natstest.Provisioned(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range 1010 {
		if _, err := js.OrderedConsumer(ctx, contracts.StreamOutput, jetstream.OrderedConsumerConfig{
			FilterSubjects: contracts.StreamFilters(fmt.Sprintf("s%d", i)),
		}); err != nil {
			t.Fatalf("consumer %d: %v", i+1, err)
		}
	}
}
