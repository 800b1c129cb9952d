package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
	"github.com/rdev-dev/rdev/services/streamer/internal/entry"
)

func replaySetup(t *testing.T, cfg Config) (*Store, jetstream.JetStream) {
	t.Helper()
	_, _, js := natstest.Provisioned(t)
	kv, err := js.KeyValue(context.Background(), contracts.BucketState)
	if err != nil {
		t.Fatal(err)
	}
	return New(js, kv, cfg, slog.New(slog.DiscardHandler)), js
}

func put(t *testing.T, js jetstream.JetStream, subject string, v any) uint64 {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := js.Publish(context.Background(), subject, b)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// history stores a stream's entries under all three of its filters,
// interleaved with another stream's, and returns the sequences of the
// stream's own entries in storage order.
func history(t *testing.T, js jetstream.JetStream, streamID string, lines int) []uint64 {
	t.Helper()
	var seqs []uint64
	seqs = append(seqs, put(t, js, contracts.SubjectEvent("p", streamID, contracts.EventQueued),
		contracts.Event{V: contracts.Version, Type: contracts.EventQueued, StreamID: streamID}))
	for i := 1; i <= lines; i++ {
		subject := contracts.SubjectOutput("p", streamID)
		if i <= lines/3 { // the oldest lines predate project subjects
			subject = contracts.SubjectOutputLegacy(streamID)
		}
		seqs = append(seqs, put(t, js, subject, contracts.OutputLine{V: 1, StreamID: streamID, Seq: uint64(i), Text: "x"}))
		put(t, js, contracts.SubjectOutput("p", streamID+"-other"), contracts.OutputLine{V: 1, StreamID: streamID + "-other", Seq: uint64(i)})
		if i == lines/2 {
			seqs = append(seqs, put(t, js, contracts.SubjectEvent("p", streamID, contracts.EventStarted),
				contracts.Event{V: contracts.Version, Type: contracts.EventStarted, StreamID: streamID}))
		}
	}
	return seqs
}

func collect(t *testing.T, s *Store, streamID string, after, until uint64) []uint64 {
	t.Helper()
	var got []uint64
	for e, err := range s.Replay(context.Background(), streamID, after, until) {
		if err != nil {
			t.Fatalf("replay: %v", err)
		}
		if e.Kind == entry.Invalid {
			t.Fatalf("invalid entry at %d", e.StreamSeq)
		}
		got = append(got, e.StreamSeq)
	}
	return got
}

func equal(t *testing.T, what string, got, want []uint64) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

// A replay merges the stream's three subject filters (lines on the
// project subject and on the legacy one, and events) in storage order,
// reading each in batches smaller than the history, from after and up to
// until, never beyond.
func TestReplayMergesFiltersInOrder(t *testing.T) {
	t.Parallel()
	s, js := replaySetup(t, Config{Batch: 4})
	seqs := history(t, js, "m1", 30)
	last := seqs[len(seqs)-1]

	equal(t, "all", collect(t, s, "m1", 0, 1<<62), seqs)
	equal(t, "after the 5th", collect(t, s, "m1", seqs[4], 1<<62), seqs[5:])
	// until between two entries: the replay ends before the one beyond.
	equal(t, "up to before the 20th", collect(t, s, "m1", seqs[2], seqs[19]-1), seqs[3:19])
	equal(t, "up to the 20th exactly", collect(t, s, "m1", seqs[2], seqs[19]), seqs[3:20])
	equal(t, "after the last", collect(t, s, "m1", last, 1<<62), nil)
	equal(t, "unknown stream", collect(t, s, "nobody", 0, 1<<62), nil)

	// An early break ends the replay, and no consumer was ever made.
	for range s.Replay(context.Background(), "m1", 0, 1<<62) {
		break
	}
	st, err := js.Stream(context.Background(), contracts.StreamOutput)
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Consumers; n != 0 {
		t.Fatalf("%d consumers", n)
	}
}

// On a cluster a replay asks the stream's leader whether a filter really
// has nothing more (a follower answering a direct get may lag). Forced
// here on one server, where the leader's answers must agree: the replay
// is the same, and the leader is asked for what follows.
func TestReplayConfirmsTheEndWithTheLeader(t *testing.T) {
	t.Parallel()
	s, js := replaySetup(t, Config{Batch: 5})
	seqs := history(t, js, "c1", 12)
	s.mu.Lock()
	s.replicasN, s.replicasAt = 3, time.Now().Add(time.Hour)
	s.mu.Unlock()
	equal(t, "all", collect(t, s, "c1", 0, 1<<62), seqs)
	equal(t, "middle", collect(t, s, "c1", seqs[3], seqs[8]), seqs[4:9])

	ctx := context.Background()
	m, err := s.leaderNext(ctx, contracts.SubjectStreamOutput("c1"), seqs[5])
	if err != nil || m == nil || m.seq != seqs[5] {
		t.Fatalf("leaderNext = %+v, %v; want the line at %d", m, err, seqs[5])
	}
	if m, err := s.leaderNext(ctx, contracts.SubjectStreamOutput("c1"), seqs[len(seqs)-1]+1); err != nil || m != nil {
		t.Fatalf("leaderNext past the end = %+v, %v; want nothing", m, err)
	}

	// A follower that lagged: the direct get found nothing from seqs[5]
	// on, the leader has it.
	src := source{s: s, filter: contracts.SubjectStreamOutput("c1"), next: seqs[5]}
	if err := src.confirm(ctx, 1<<62); err != nil || src.done || len(src.buf) != 1 || src.buf[0].seq != seqs[5] {
		t.Fatalf("confirm: done %v, buf %d, err %v; want the leader's message", src.done, len(src.buf), err)
	}
}

// Replays wait in line for a turn to read: with one turn, many at once
// all get their whole history; a replay whose turn does not come within
// ReadWait yields ErrBusy and nothing else.
func TestReplaysQueueForReads(t *testing.T) {
	t.Parallel()
	s, js := replaySetup(t, Config{Batch: 3, Reads: 1, ReadWait: time.Minute})
	seqs := history(t, js, "q1", 10)
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for range 50 {
		wg.Go(func() {
			var got []uint64
			for e, err := range s.Replay(context.Background(), "q1", 0, 1<<62) {
				if err != nil {
					errs <- err
					return
				}
				got = append(got, e.StreamSeq)
			}
			if fmt.Sprint(got) != fmt.Sprint(seqs) {
				errs <- fmt.Errorf("got %v", got)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	busy := New(s.js, nil, Config{Reads: 1, ReadWait: 50 * time.Millisecond}, slog.New(slog.DiscardHandler))
	busy.reads <- struct{}{} // the one turn is taken
	n := 0
	for e, err := range busy.Replay(context.Background(), "q1", 0, 1<<62) {
		n++
		if !errors.Is(err, ErrBusy) || e.StreamSeq != 0 {
			t.Fatalf("got %+v, %v; want ErrBusy", e, err)
		}
	}
	if n != 1 {
		t.Fatalf("%d yields, want one error", n)
	}
}

// At asks the stream's leader before it calls a sequence missing, on a
// replicated stream (forced here on one server, where the leader agrees
// with the direct get): a follower that has not stored a just-written
// event would otherwise turn a client's resume into an expired one. A
// sequence the direct get finds, and any on a single replica, costs no
// leader request.
func TestAtAsksTheLeaderBeforeCallingASequenceMissing(t *testing.T) {
	t.Parallel()
	s, js := replaySetup(t, Config{})
	seqs := history(t, js, "a1", 3)
	gone := put(t, js, contracts.SubjectOutput("p", "a1"), contracts.OutputLine{V: 1, StreamID: "a1", Seq: 4})
	st, err := js.Stream(context.Background(), contracts.StreamOutput)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(context.Background(), gone); err != nil {
		t.Fatal(err)
	}
	asked, err := js.Conn().SubscribeSync(s.apiSubject("STREAM.MSG.GET." + contracts.StreamOutput))
	if err != nil {
		t.Fatal(err)
	}
	if err := js.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	leaderAsked := func() int {
		n := 0
		for {
			if _, err := asked.NextMsg(200 * time.Millisecond); err != nil {
				return n
			}
			n++
		}
	}
	ctx := context.Background()
	for _, replicas := range []int{1, 3} {
		s.mu.Lock()
		s.replicasN, s.replicasAt = replicas, time.Now().Add(time.Hour)
		s.mu.Unlock()
		if e, err := s.At(ctx, "a1", seqs[1]); err != nil || e.StreamSeq != seqs[1] || e.Line != 1 {
			t.Fatalf("R%d: At(%d) = %+v, %v; want line 1", replicas, seqs[1], e, err)
		}
		if n := leaderAsked(); n != 0 {
			t.Fatalf("R%d: the leader was asked %d times for a message the direct get found", replicas, n)
		}
		if _, err := s.At(ctx, "a1", gone); !errors.Is(err, ErrNoMessage) {
			t.Fatalf("R%d: At(deleted) = %v, want ErrNoMessage", replicas, err)
		}
		want := 0
		if replicas > 1 {
			want = 1
		}
		if n := leaderAsked(); n != want {
			t.Fatalf("R%d: the leader was asked %d times for a missing message, want %d", replicas, n, want)
		}
	}
}
