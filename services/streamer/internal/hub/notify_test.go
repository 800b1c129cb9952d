package hub_test

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/services/streamer/internal/entry"
	"github.com/rdev-dev/rdev/services/streamer/internal/hub"
)

// notifyFeed is a hub.Notifier the test pushes entries into, as the
// shared live feed's members are (natsjs). It records a hub that breaks
// the contract: waiting in Next, or taking from two goroutines at once.
type notifyFeed struct {
	mu   sync.Mutex
	q    []entry.Entry
	err  error
	wake func()
	idle bool

	taking  atomic.Int32 // TryNext calls in progress
	overlap atomic.Bool  // two were at once
	waited  atomic.Bool  // Next was called
	wakes   atomic.Int64
}

func (f *notifyFeed) Next() (entry.Entry, error) {
	f.waited.Store(true)
	return entry.Entry{}, errors.New("a hub waited in a Notifier's Next")
}

func (f *notifyFeed) TryNext() (entry.Entry, bool, error) {
	if f.taking.Add(1) > 1 {
		f.overlap.Store(true)
	}
	defer f.taking.Add(-1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.q) > 0 {
		e := f.q[0]
		f.q = f.q[1:]
		return e, true, nil
	}
	if f.err != nil {
		return entry.Entry{}, false, f.err
	}
	f.idle = true
	return entry.Entry{}, false, nil
}

func (f *notifyFeed) Notify(wake func()) {
	f.mu.Lock()
	f.wake, f.idle = wake, true
	f.signalLocked()
}

// signalLocked wakes an idle taker when there is something to take, and
// unlocks f.mu.
func (f *notifyFeed) signalLocked() {
	wake := f.wake
	if !f.idle || (len(f.q) == 0 && f.err == nil) {
		wake = nil
	} else {
		f.idle = false
	}
	f.mu.Unlock()
	if wake != nil {
		f.wakes.Add(1)
		wake()
	}
}

func (f *notifyFeed) push(seq uint64) {
	f.mu.Lock()
	f.q = append(f.q, entry.Entry{StreamSeq: seq, Kind: entry.Line, Line: seq})
	f.signalLocked()
}

func (f *notifyFeed) end(err error) {
	f.mu.Lock()
	if f.err == nil {
		f.err = err
	}
	f.signalLocked()
}

func (f *notifyFeed) Close() { f.end(errors.New("feed closed")) }

func (f *notifyFeed) quiet() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.idle && len(f.q) == 0
}

// notifySource opens notifyFeeds and remembers them.
type notifySource struct {
	mu    sync.Mutex
	feeds map[string]*notifyFeed
}

func (s *notifySource) Open(_ context.Context, id string) (hub.Feed, uint64, error) {
	f := &notifyFeed{}
	s.mu.Lock()
	s.feeds[id] = f
	s.mu.Unlock()
	return f, 7, nil
}

func (s *notifySource) feed(id string) *notifyFeed {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.feeds[id]
}

func notifySetup(t *testing.T) (*hub.Hubs, *notifySource) {
	t.Helper()
	src := &notifySource{feeds: map[string]*notifyFeed{}}
	h := hub.New(src, hub.Config{Buffer: 1 << 16}, slog.New(slog.DiscardHandler))
	t.Cleanup(h.Close)
	return h, src
}

// A hub on a Notifier feed takes its entries when woken, never by waiting
// in Next, one taker at a time: every client gets every entry once, in
// order, across bursts and quiet spells; the feed's end ends the clients'
// subscriptions with it.
func TestNotifierFeedFansOutEveryEntryOnceInOrder(t *testing.T) {
	t.Parallel()
	h, src := notifySetup(t)
	a, _ := join(t, h, "s1")
	b, _ := join(t, h, "s1")
	f := src.feed("s1")
	const n = 2000 // queued on the subscriptions (Buffer 1<<16), read after
	for seq := uint64(8); seq < 8+n; seq++ {
		f.push(seq)
		if seq%100 == 0 { // a quiet spell: the hub stops taking
			await.Until(t, "the hub idle", f.quiet)
		}
	}
	failed := errors.New("feed failed")
	f.end(failed)
	got := make([][]uint64, 2)
	for i, c := range []*client{a, b} {
		for {
			seq, ok := recv(t, c)
			if !ok {
				break
			}
			got[i] = append(got[i], seq)
		}
	}
	for i, g := range got {
		if len(g) != n {
			t.Fatalf("client %d got %d entries, want %d", i, len(g), n)
		}
		for k, seq := range g {
			if seq != uint64(8+k) {
				t.Fatalf("client %d: entry %d is %d, want %d", i, k, seq, 8+k)
			}
		}
	}
	for _, c := range []*client{a, b} {
		if !errors.Is(c.sub.Err(), failed) {
			t.Fatalf("subscription ended with %v, want the feed's error", c.sub.Err())
		}
	}
	if f.waited.Load() || f.overlap.Load() {
		t.Fatalf("hub waited in Next (%v) or took from two goroutines at once (%v)", f.waited.Load(), f.overlap.Load())
	}
	if w := f.wakes.Load(); w < n/100 {
		t.Fatalf("%d wakes for %d quiet spells", w, n/100)
	}
}

// A hub whose feed is a Notifier holds no goroutine while the feed is
// quiet: thousands of watched, quiet streams on the shared live feed cost
// no goroutine each. Not parallel: it counts the process's goroutines.
func TestQuietNotifierFeedsHoldNoGoroutine(t *testing.T) { //nolint:paralleltest // counts goroutines
	h, src := notifySetup(t)
	const n = 200
	before := runtime.NumGoroutine()
	for i := range n {
		id := "s" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		c, _ := join(t, h, id)
		f := src.feed(id)
		f.push(8)
		if seq, ok := recv(t, c); !ok || seq != 8 {
			t.Fatalf("stream %s: got %d (open %v), want 8", id, seq, ok)
		}
		await.Until(t, "the hub idle", f.quiet)
	}
	// A drain that found the feed quiet may still be returning.
	await.Until(t, "drains returned", func() bool { return runtime.NumGoroutine()-before < n/10 })
	if st := h.Stats(); st.Running != n {
		t.Fatalf("stats %+v: want %d hubs running", st, n)
	}
	h.Close() // ends every feed, and waits for the hubs
	for id, f := range src.feeds {
		if f.waited.Load() {
			t.Fatalf("hub of %s waited in Next", id)
		}
	}
}
