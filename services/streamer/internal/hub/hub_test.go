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
	f.pushData(t, seq, nil)
}

func (f *feed) pushData(t *testing.T, seq uint64, data []byte) {
	t.Helper()
	select {
	case f.c <- entry.Entry{StreamSeq: seq, Kind: entry.Line, Line: seq, Data: data}:
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
	return setupConfig(t, hub.Config{Buffer: buffer})
}

func setupConfig(t *testing.T, cfg hub.Config) (*hub.Hubs, *source) {
	t.Helper()
	src := &source{end: 7}
	h := hub.New(src, cfg, slog.New(slog.DiscardHandler))
	t.Cleanup(h.Close)
	return h, src
}

// client reads one subscription the way a follower does, a batch at a
// time, and hands the entries over one by one.
type client struct {
	sub   *hub.Sub
	batch []entry.Entry
	next  int
}

func join(t *testing.T, h *hub.Hubs, id string) (*client, uint64) {
	t.Helper()
	s, b, err := h.Join(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Leave)
	return &client{sub: s}, b
}

// recv returns the next entry's sequence; ok is false once the
// subscription ended and every entry queued before was received.
func recv(t *testing.T, c *client) (uint64, bool) {
	t.Helper()
	timeout := time.After(waitFor)
	for {
		if c.next < len(c.batch) {
			c.next++
			return c.batch[c.next-1].StreamSeq, true
		}
		batch, err := c.sub.Take(c.batch)
		c.batch, c.next = batch, 0
		if len(batch) > 0 {
			continue
		}
		if err != nil {
			return 0, false
		}
		select {
		case <-c.sub.Ready():
		case <-timeout:
			t.Fatal("nothing received")
			return 0, false
		}
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
	for _, s := range []*client{a, c} {
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
	if !errors.Is(slow.sub.Err(), hub.ErrOverflow) {
		t.Fatalf("err %v, want ErrOverflow", slow.sub.Err())
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

// A client told its feed failed may join again at once (the SSE client
// reconnects): that join opens a fresh feed, never the failed one. The
// cycle repeats because the window it guards is short.
func TestFeedFailureEndsSubscriptionsAndNextJoinReopens(t *testing.T) {
	t.Parallel()
	h, src := setup(t, 2)
	const rounds = 200
	for i := range rounds {
		a, _ := join(t, h, "s1")
		src.feed(t, i).fail <- errors.New("boom")
		if _, ok := recv(t, a); ok {
			t.Fatal("subscription still open")
		}
		if a.sub.Err() == nil || errors.Is(a.sub.Err(), hub.ErrOverflow) {
			t.Fatalf("err %v, want the feed's failure", a.sub.Err())
		}
	}
	join(t, h, "s1")
	src.feed(t, rounds)
}

func TestCloseEndsEverything(t *testing.T) {
	t.Parallel()
	h, src := setup(t, 2)
	a, _ := join(t, h, "s1")
	h.Close()
	if _, ok := recv(t, a); ok || !errors.Is(a.sub.Err(), hub.ErrClosed) {
		t.Fatalf("after Close: err %v", a.sub.Err())
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

func TestTakeReturnsEverythingQueuedInOrder(t *testing.T) {
	t.Parallel()
	h, src := setup(t, 1000)
	c, _ := join(t, h, "s1")
	f := src.feed(t, 0)
	for seq := uint64(8); seq <= 600; seq++ { // more than a fixed buffer used to hold
		f.push(t, seq)
	}
	f.push(t, 601) // taken by the hub once 600 is queued
	batch, err := c.sub.Take(nil)
	if err != nil || len(batch) < 593 {
		t.Fatalf("took %d entries (%v), want at least 8..600 in one batch", len(batch), err)
	}
	for i, e := range batch {
		if e.StreamSeq != uint64(8+i) {
			t.Fatalf("entry %d is %d, want %d", i, e.StreamSeq, 8+i)
		}
	}
	if st := h.Stats(); st.Overflows != 0 {
		t.Fatalf("stats %+v: want no overflow", st)
	}
}

func TestByteBoundCutsLoose(t *testing.T) {
	t.Parallel()
	h, src := setupConfig(t, hub.Config{Buffer: 1000, BufferBytes: 10})
	c, _ := join(t, h, "s1")
	f := src.feed(t, 0)
	f.pushData(t, 8, make([]byte, 20)) // larger than the bound, but the queue is empty
	f.pushData(t, 9, make([]byte, 4))  // 24 bytes: over
	f.push(t, 10)                      // taken once 9 was handled
	if got, ok := recv(t, c); !ok || got != 8 {
		t.Fatalf("got %d (open %v), want 8", got, ok)
	}
	if _, ok := recv(t, c); ok || !errors.Is(c.sub.Err(), hub.ErrOverflow) {
		t.Fatalf("err %v, want ErrOverflow", c.sub.Err())
	}
}

// gatedSource opens feeds only when the test lets it, whatever their
// context, counting the opens in progress.
type gatedSource struct {
	source
	gate    chan struct{}
	running sync.Mutex
	now     int
	most    int
}

func (g *gatedSource) Open(ctx context.Context, id string) (hub.Feed, uint64, error) {
	g.running.Lock()
	g.now++
	g.most = max(g.most, g.now)
	g.running.Unlock()
	defer func() {
		g.running.Lock()
		g.now--
		g.running.Unlock()
	}()
	<-g.gate // a server slower than the open's own timeout
	return g.source.Open(ctx, id)
}

// Feeds open Opens at a time; one whose turn does not come within
// OpenTimeout is refused with ErrBusy (waiting, not failing), and joins
// once the line moves.
func TestFeedsOpenInLine(t *testing.T) {
	t.Parallel()
	src := &gatedSource{gate: make(chan struct{})}
	r := hub.New(src, hub.Config{Buffer: 4, Opens: 2, OpenTimeout: time.Second}, slog.New(slog.DiscardHandler))
	defer r.Close()

	// Two opens hold both turns; a third waits its OpenTimeout in line.
	var wg sync.WaitGroup
	subs := make([]*hub.Sub, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() { subs[i], _, errs[i] = r.Join(context.Background(), []string{"a", "b"}[i]) })
	}
	await := time.Now().Add(waitFor)
	for {
		src.running.Lock()
		n := src.now
		src.running.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(await) {
			t.Fatalf("%d opens in progress, want 2", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, _, err := r.Join(context.Background(), "c"); !errors.Is(err, hub.ErrBusy) {
		t.Fatalf("a third open while two hold the turns: %v, want ErrBusy", err)
	}
	// The line moves: every open gets its turn, never more than two at once.
	close(src.gate)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("join %d: %v", i, err)
		}
		subs[i].Leave()
	}
	joined := make([]*hub.Sub, 20)
	for i := range joined {
		wg.Go(func() {
			var err error
			if joined[i], _, err = r.Join(context.Background(), "s"+string(rune('a'+i))); err != nil {
				t.Errorf("join %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	for _, s := range joined {
		if s != nil {
			s.Leave()
		}
	}
	if src.most > 2 {
		t.Fatalf("%d feeds opened at once, want at most 2", src.most)
	}
}

// Every subscription gets a fanned-out entry with the same Shared, so its
// clients encode it once between them; each entry has its own.
func TestFanOutSharesOneEncodingPerEntry(t *testing.T) {
	t.Parallel()
	h, src := setup(t, 4)
	subs := make([]*hub.Sub, 3)
	for i := range subs {
		s, _, err := h.Join(context.Background(), "shared")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Leave)
		subs[i] = s
	}
	src.feed(t, 0).push(t, 8)
	src.feed(t, 0).push(t, 9)
	var first []*entry.Shared
	for i, s := range subs {
		var got []entry.Entry
		await := time.After(waitFor)
		for len(got) < 2 {
			batch, err := s.Take(nil)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, batch...)
			if len(got) < 2 {
				select {
				case <-s.Ready():
				case <-await:
					t.Fatalf("subscription %d: %d entries", i, len(got))
				}
			}
		}
		if got[0].Shared == nil || got[0].Shared == got[1].Shared {
			t.Fatalf("subscription %d: entries share %p and %p, want one Shared each", i, got[0].Shared, got[1].Shared)
		}
		if first == nil {
			first = []*entry.Shared{got[0].Shared, got[1].Shared}
		} else if got[0].Shared != first[0] || got[1].Shared != first[1] {
			t.Fatalf("subscription %d got other Shareds than the first", i)
		}
	}
}

// A lone subscriber's entries carry no Shared: its client encodes them
// itself, without the allocation.
func TestLoneSubscriberGetsNoShared(t *testing.T) {
	t.Parallel()
	h, src := setup(t, 4)
	s, _, err := h.Join(context.Background(), "lone")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Leave)
	src.feed(t, 0).push(t, 8)
	select {
	case <-s.Ready():
	case <-time.After(waitFor):
		t.Fatal("nothing received")
	}
	batch, err := s.Take(nil)
	if err != nil || len(batch) != 1 || batch[0].Shared != nil {
		t.Fatalf("took %+v, %v: want one entry without a Shared", batch, err)
	}
}
