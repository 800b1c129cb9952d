package topology_test

import (
	"context"
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

	if _, err := js.Publish(ctx, contracts.SubjectOutput("s1"), []byte(`{"v":1}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, contracts.SubjectJob(contracts.PriorityLow, "demo"), []byte(`{"v":1}`)); err != nil {
		t.Fatal(err)
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
