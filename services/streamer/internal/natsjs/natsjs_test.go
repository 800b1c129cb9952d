package natsjs_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/state"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
	"github.com/rdev-dev/rdev/services/streamer/internal/entry"
	"github.com/rdev-dev/rdev/services/streamer/internal/natsjs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func setup(t *testing.T) (*natsjs.Store, jetstream.JetStream) {
	t.Helper()
	_, _, js := natstest.Provisioned(t)
	kv, err := js.KeyValue(context.Background(), contracts.BucketState)
	if err != nil {
		t.Fatal(err)
	}
	return natsjs.New(js, kv, natsjs.Config{Batch: 3}, slog.New(slog.DiscardHandler)), js
}

func publish(t *testing.T, js jetstream.JetStream, streamID string, seq uint64) uint64 {
	t.Helper()
	b, _ := json.Marshal(contracts.OutputLine{V: contracts.Version, StreamID: streamID, Seq: seq, Text: "x"})
	ack, err := js.Publish(context.Background(), contracts.SubjectOutput("p", streamID), b)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

func consumers(t *testing.T, js jetstream.JetStream) int {
	t.Helper()
	st, err := js.Stream(context.Background(), contracts.StreamOutput)
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().State.Consumers
}

func TestReplayReadsInBatchesStopsAndCleansUp(t *testing.T) {
	t.Parallel()
	s, js := setup(t)
	var seqs []uint64
	for i := uint64(1); i <= 10; i++ {
		seqs = append(seqs, publish(t, js, "s1", i))
		publish(t, js, "s2", i)
	}
	ctx := context.Background()
	var lines []uint64
	for e, err := range s.Replay(ctx, "s1", 0, 1<<62) {
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, e.Line)
	}
	if len(lines) != 10 || lines[0] != 1 || lines[9] != 10 {
		t.Fatalf("lines %v", lines)
	}

	// From after line 2 up to the boundary at line 5.
	lines = lines[:0]
	for e, err := range s.Replay(ctx, "s1", seqs[1], seqs[4]) {
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, e.Line)
	}
	if len(lines) != 3 || lines[0] != 3 || lines[2] != 5 {
		t.Fatalf("lines %v, want 3..5", lines)
	}

	for range s.Replay(ctx, "s1", 0, 1<<62) {
		break // an early break releases the consumer too
	}
	if n := consumers(t, js); n != 0 {
		t.Fatalf("%d consumers left", n)
	}
}

func TestAtFindsTheStreamsMessagesOnly(t *testing.T) {
	t.Parallel()
	s, js := setup(t)
	mine := publish(t, js, "s1", 4)
	theirs := publish(t, js, "s2", 1)
	ctx := context.Background()
	if e, err := s.At(ctx, "s1", mine); err != nil || e.Kind != entry.Line || e.Line != 4 {
		t.Fatalf("At(mine) = %+v, %v", e, err)
	}
	if _, err := s.At(ctx, "s1", theirs); !errors.Is(err, entry.ErrForeign) {
		t.Fatalf("At(theirs): %v", err)
	}
	if _, err := s.At(ctx, "s1", theirs+10); !errors.Is(err, natsjs.ErrNoMessage) {
		t.Fatalf("At(beyond): %v", err)
	}
	if _, err := s.Ref(ctx, "s1"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("Ref(unknown): %v", err)
	}
}

func TestFeedDeliversWhatFollowsOpenAndCloses(t *testing.T) {
	t.Parallel()
	s, js := setup(t)
	publish(t, js, "s1", 1)
	f, end, err := s.Open(context.Background(), "s1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	if end != 1 {
		t.Fatalf("end %d, want 1", end)
	}
	publish(t, js, "s2", 1)
	want := publish(t, js, "s1", 2)
	got := make(chan entry.Entry, 1)
	go func() {
		e, _ := f.Next()
		got <- e
	}()
	select {
	case e := <-got:
		if e.StreamSeq != want || e.Line != 2 {
			t.Fatalf("got %+v, want line 2 at %d", e, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing delivered")
	}
	f.Close()
	if _, err := f.Next(); err == nil {
		t.Fatal("Next after Close: want an error")
	}
	if n := consumers(t, js); n != 0 {
		t.Fatalf("%d consumers left", n)
	}
}
