package natsjs_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
	"github.com/rdev-dev/rdev/services/streamer/internal/entry"
	"github.com/rdev-dev/rdev/services/streamer/internal/follow"
	"github.com/rdev-dev/rdev/services/streamer/internal/hub"
	"github.com/rdev-dev/rdev/services/streamer/internal/natsjs"
)

// A hub that falls behind its feed on the shared feed: the feed's buffer
// overflows, the feed fails rather than hold up the shared feed, and the
// client rejoins from its cursor, reading what it missed from history. It
// gets every line once, in order. The hub is held back by a gate around
// the real feed (what a starved hub goroutine would do); the rest is the
// real store, hubs and follower on an embedded NATS.
func TestOverflowedSharedFeedClientGetsEveryLineOnce(t *testing.T) {
	t.Parallel()
	_, _, js := natstest.Provisioned(t)
	kv, err := js.KeyValue(context.Background(), contracts.BucketState)
	if err != nil {
		t.Fatal(err)
	}
	store := natsjs.New(js, kv, natsjs.Config{SharedAfter: -1, SharedBuffer: 3}, slog.New(slog.DiscardHandler))
	defer store.Close()
	src := &gatedSource{src: store, open: make(chan struct{})}
	close(src.open)
	hubs := hub.New(src, hub.Config{Buffer: 1000}, slog.New(slog.DiscardHandler))
	defer hubs.Close()
	f := &follow.Follower{Hubs: hubs, History: store, Heartbeat: time.Second,
		Retry: follow.Retry{Min: 10 * time.Millisecond, Max: 100 * time.Millisecond, For: time.Minute}}

	const id = "overflowed"
	pub := func(subject string, v any) {
		t.Helper()
		b, _ := json.Marshal(v)
		if _, err := js.Publish(context.Background(), subject, b); err != nil {
			t.Fatal(err)
		}
	}
	line := func(n uint64) {
		pub(contracts.SubjectOutput("p", id), contracts.OutputLine{V: contracts.Version, StreamID: id, Seq: n, Text: "x"})
	}
	pub(contracts.SubjectEvent("p", id, contracts.EventStarted), contracts.Event{V: contracts.Version, Type: contracts.EventStarted, StreamID: id, Project: "p"})

	k := &recorder{}
	done := make(chan error, 1)
	go func() { done <- f.Run(context.Background(), f.Prepare(context.Background(), id), &follow.Cursor{}, k) }()
	await.Within(t, 30*time.Second, "the client following live", func() bool { return store.FeedStats().Shared == 1 })
	line(1)
	line(2)
	await.Within(t, 30*time.Second, "lines 1 and 2", func() bool { return k.lines() == 2 })

	src.hold()
	for n := uint64(3); n <= 10; n++ {
		line(n)
	}
	await.Within(t, 30*time.Second, "the held feed to overflow", func() bool { return store.FeedStats().Overflows == 1 })
	src.release()
	pub(contracts.SubjectEvent("p", id, contracts.EventSucceeded), contracts.Event{V: contracts.Version, Type: contracts.EventSucceeded,
		Status: contracts.StatusSucceeded, StreamID: id, Project: "p", Lines: 10})
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the client did not complete")
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	var want uint64
	for _, e := range k.got {
		if e.Kind != entry.Line {
			continue
		}
		want++
		if e.Line != want {
			t.Fatalf("line %d where %d was due", e.Line, want)
		}
	}
	if want != 10 {
		t.Fatalf("%d lines, want 10", want)
	}
	if last := k.got[len(k.got)-1]; last.Kind != entry.Complete {
		t.Fatalf("last entry %+v, want the terminal event", last)
	}
}

// gatedSource opens real feeds whose Next waits while the gate is held.
type gatedSource struct {
	src  hub.Source
	mu   sync.Mutex
	open chan struct{} // closed while the gate is open
}

func (g *gatedSource) hold() {
	g.mu.Lock()
	g.open = make(chan struct{})
	g.mu.Unlock()
}

func (g *gatedSource) release() {
	g.mu.Lock()
	close(g.open)
	g.mu.Unlock()
}

func (g *gatedSource) Open(ctx context.Context, streamID string) (hub.Feed, uint64, error) {
	f, last, err := g.src.Open(ctx, streamID)
	if err != nil {
		return nil, 0, err
	}
	return &gatedFeed{Feed: f, g: g}, last, nil
}

type gatedFeed struct {
	hub.Feed
	g *gatedSource
}

func (f *gatedFeed) Next() (entry.Entry, error) {
	f.g.mu.Lock()
	open := f.g.open
	f.g.mu.Unlock()
	<-open
	return f.Feed.Next()
}

// recorder is a client: it keeps what it is sent.
type recorder struct {
	mu  sync.Mutex
	got []entry.Entry
}

func (r *recorder) Send(e entry.Entry) error {
	r.mu.Lock()
	r.got = append(r.got, e)
	r.mu.Unlock()
	return nil
}

func (r *recorder) Flush() error { return nil }
func (r *recorder) Ping() error  { return nil }

func (r *recorder) lines() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.got {
		if e.Kind == entry.Line {
			n++
		}
	}
	return n
}
