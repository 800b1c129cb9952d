package natsjs

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
)

// A live feed that stops receiving reopens from the message after the last
// it received: nothing is lost, whether the missing messages are still
// pending at the server or were delivered to a subscription that dropped
// them. The stall is staged by stopping the feed's iterator (its
// outstanding pull request may still take messages) and swapping in one
// that never delivers (white box: the real cause was seen once and not
// reproduced).
func TestStalledFeedReopensWithoutLoss(t *testing.T) {
	t.Parallel()
	_, _, js := natstest.Provisioned(t)
	kv, err := js.KeyValue(context.Background(), contracts.BucketState)
	if err != nil {
		t.Fatal(err)
	}
	s := New(js, kv, Config{Batch: 8, StallCheck: 200 * time.Millisecond}, slog.New(slog.DiscardHandler))
	pub := func(seq uint64) {
		b, _ := json.Marshal(contracts.OutputLine{V: contracts.Version, StreamID: "st1", Seq: seq, Text: "x"})
		if _, err := js.Publish(context.Background(), contracts.SubjectOutput("st1"), b); err != nil {
			t.Fatal(err)
		}
	}
	hf, _, err := s.Open(context.Background(), "st1")
	if err != nil {
		t.Fatal(err)
	}
	f := hf.(*feed)
	defer f.Close()
	pub(1)
	if e, err := f.Next(); err != nil || e.Line != 1 {
		t.Fatalf("first entry %+v, %v", e, err)
	}

	// Stall: the real iterator stops; an iterator on a silent subject
	// takes its place.
	f.it.Stop()
	silent, err := js.OrderedConsumer(context.Background(), contracts.StreamOutput, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{contracts.SubjectOutput("silent")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if f.it, err = silent.Messages(); err != nil {
		t.Fatal(err)
	}
	pub(2)
	pub(3)

	for want := uint64(2); want <= 3; want++ {
		e, err := f.Next()
		if err != nil || e.Line != want {
			t.Fatalf("after the stall got %+v, %v; want line %d", e, err, want)
		}
	}
}
