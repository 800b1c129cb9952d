package hub_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rdev-dev/rdev/services/streamer/internal/entry"
	"github.com/rdev-dev/rdev/services/streamer/internal/hub"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitFor = 5 * time.Second

// feed is a hub.Feed the test pushes entries into.
type feed struct {
	c      chan entry.Entry
	fail   chan error
	closed chan struct{}
	once   sync.Once
}

func (f *feed) Next() (entry.Entry, error) {
	select {
	case e := <-f.c:
		return e, nil
	case err := <-f.fail:
		return entry.Entry{}, err
	case <-f.closed:
		return entry.Entry{}, errors.New("feed closed")
	}
}

func (f *feed) Close() { f.once.Do(func() { close(f.closed) }) }

// push hands e to the hub; it returns once the hub took it.
func (f *feed) push(t *testing.T, seq uint64) {
	t.Helper()
	select {
	case f.c <- entry.Entry{Seq: seq, Kind: entry.Line, Line: seq}:
	case <-time.After(waitFor):
		t.Fatal("hub did not take the entry")
	}
}

// source opens feeds and remembers them.
type source struct {
	end   uint64
	mu    sync.Mutex
	feeds []*feed
}

func (s *source) Open(context.Context, string) (hub.Feed, uint64, error) {
	f := &feed{c: make(chan entry.Entry), fail: make(chan error, 1), closed: make(chan struct{})}
	s.mu.Lock()
	s.feeds = append(s.feeds, f)
	s.mu.Unlock()
	return f, s.end, nil
}

func (s *source) feed(t *testing.T, i int) *feed {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if i >= len(s.feeds) {
		t.Fatalf("feed %d not opened (%d opened)", i, len(s.feeds))
	}
	return s.feeds[i]
}

func setup(t *testing.T, buffer int) (*hub.Hubs, *source) {
	t.Helper()
	src := &source{end: 7}
	h := hub.New(src, hub.Config{Buffer: buffer}, slog.New(slog.DiscardHandler))
	t.Cleanup(h.Close)
	return h, src
}

func join(t *testing.T, h *hub.Hubs, id string) (*hub.Sub, uint64) {
	t.Helper()
	s, b, err := h.Join(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Leave)
	return s, b
}

func recv(t *testing.T, s *hub.Sub) (uint64, bool) {
	t.Helper()
	select {
	case e, ok := <-s.C():
		return e.Seq, ok
	case <-time.After(waitFor):
		t.Fatal("nothing received")
		return 0, false
	}
}

func TestJoinSharesOneFeedAndReturnsTheBoundary(t *testing.T) {
	t.Parallel()
	h, src := setup(t, 4)
	a, b := join(t, h, "s1")
	if b != 7 {
		t.Fatalf("first boundary %d, want the stream end 7", b)
	}
	src.feed(t, 0).push(t, 8)
	if seq, _ := recv(t, a); seq != 8 {
		t.Fatalf("got %d, want 8", seq)
	}
	c, b := join(t, h, "s1")
	if b != 8 {
		t.Fatalf("second boundary %d, want the last entry fanned out, 8", b)
	}
	src.feed(t, 0).push(t, 9)
	for _, s := range []*hub.Sub{a, c} {
		if seq, _ := recv(t, s); seq != 9 {
			t.Fatalf("got %d, want 9", seq)
		}
	}
	if st := h.Stats(); st.Started != 1 || st.Running != 1 {
		t.Fatalf("stats %+v: want one feed", st)
	}
}

func TestSlowSubscriberIsCutLooseWithoutBlockingOthers(t *testing.T) {
	t.Parallel()
	h, src := setup(t, 2)
	slow, _ := join(t, h, "s1")
	fast, _ := join(t, h, "s1")
	f := src.feed(t, 0)
	for seq := uint64(8); seq < 20; seq++ {
		f.push(t, seq)
		if got, _ := recv(t, fast); got != seq {
			t.Fatalf("fast got %d, want %d", got, seq)
		}
	}
	// The slow one keeps what fitted, then its channel is closed.
	for _, want := range []uint64{8, 9} {
		if got, ok := recv(t, slow); !ok || got != want {
			t.Fatalf("slow got %d (open %v), want %d", got, ok, want)
		}
	}
	if _, ok := recv(t, slow); ok {
		t.Fatal("slow subscription still open")
	}
	if !errors.Is(slow.Err(), hub.ErrOverflow) {
		t.Fatalf("err %v, want ErrOverflow", slow.Err())
	}
	if st := h.Stats(); st.Overflows != 1 {
		t.Fatalf("stats %+v: want one overflow", st)
	}
}

func TestLastLeaveClosesTheFeed(t *testing.T) {
	t.Parallel()
	h, src := setup(t, 2)
	a, _, err := h.Join(context.Background(), "s1")
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := h.Join(context.Background(), "s1")
	if err != nil {
		t.Fatal(err)
	}
	a.Leave()
	a.Leave() // twice is fine
	f := src.feed(t, 0)
	select {
	case <-f.closed:
		t.Fatal("feed closed while a subscriber remains")
	default:
	}
	b.Leave()
	select {
	case <-f.closed:
	case <-time.After(waitFor):
		t.Fatal("feed not closed after the last leave")
	}
	join(t, h, "s1")
	src.feed(t, 1) // a new one opened
	if st := h.Stats(); st.Started != 2 || st.Running != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestFeedFailureEndsSubscriptionsAndNextJoinReopens(t *testing.T) {
	t.Parallel()
	h, src := setup(t, 2)
	a, _ := join(t, h, "s1")
	src.feed(t, 0).fail <- errors.New("boom")
	if _, ok := recv(t, a); ok {
		t.Fatal("subscription still open")
	}
	if a.Err() == nil || errors.Is(a.Err(), hub.ErrOverflow) {
		t.Fatalf("err %v, want the feed's failure", a.Err())
	}
	join(t, h, "s1")
	src.feed(t, 1)
}

func TestCloseEndsEverything(t *testing.T) {
	t.Parallel()
	h, src := setup(t, 2)
	a, _ := join(t, h, "s1")
	h.Close()
	if _, ok := recv(t, a); ok || !errors.Is(a.Err(), hub.ErrClosed) {
		t.Fatalf("after Close: err %v", a.Err())
	}
	select {
	case <-src.feed(t, 0).closed:
	default:
		t.Fatal("feed not closed")
	}
	if _, _, err := h.Join(context.Background(), "s1"); !errors.Is(err, hub.ErrClosed) {
		t.Fatalf("join after Close: %v", err)
	}
	h.Close()
}
