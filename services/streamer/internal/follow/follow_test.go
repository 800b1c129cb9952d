package follow_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/streamer/internal/entry"
	"github.com/rdev-dev/rdev/services/streamer/internal/follow"
	"github.com/rdev-dev/rdev/services/streamer/internal/hub"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitFor = 5 * time.Second

// store is a stream: what History replays and what the live feed carries.
// It can be made to fail: the next opens and replays, or the open feed.
type store struct {
	mu          sync.Mutex
	entries     []entry.Entry
	live        chan entry.Entry
	feedErr     chan error // a value sent here ends the open feed with it
	replays     int
	opens       int
	failOpens   int // how many of the next opens fail
	failReplays int // how many of the next replays fail
	busyReplays int // how many of the next replays wait for their turn (follow.ErrBusy)
}

var errStorage = errors.New("storage unavailable")

func newStore() *store {
	return &store{live: make(chan entry.Entry), feedErr: make(chan error)}
}

// append stores e and, when a hub is following, hands it over live.
func (s *store) append(t *testing.T, e entry.Entry, live bool) {
	t.Helper()
	s.mu.Lock()
	s.entries = append(s.entries, e)
	s.mu.Unlock()
	if !live {
		return
	}
	select {
	case s.live <- e:
	case <-time.After(waitFor):
		t.Fatal("hub did not take the entry")
	}
}

// failFeed ends the open feed with errStorage.
func (s *store) failFeed(t *testing.T) {
	t.Helper()
	select {
	case s.feedErr <- errStorage:
	case <-time.After(waitFor):
		t.Fatal("no feed to fail")
	}
}

// feedOpen reports whether a feed was opened.
func (s *store) feedOpen() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opens > 0
}

func (s *store) end() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.entries) == 0 {
		return 0
	}
	return s.entries[len(s.entries)-1].StreamSeq
}

func (s *store) Open(context.Context, string) (hub.Feed, uint64, error) {
	s.mu.Lock()
	s.opens++
	fail := s.failOpens > 0
	if fail {
		s.failOpens--
	}
	s.mu.Unlock()
	if fail {
		return nil, 0, errStorage
	}
	return &feed{s: s, closed: make(chan struct{})}, s.end(), nil
}

// feed is one live feed of a store.
type feed struct {
	s      *store
	closed chan struct{}
	once   sync.Once
}

func (f *feed) Next() (entry.Entry, error) {
	select {
	case e := <-f.s.live:
		return e, nil
	case err := <-f.s.feedErr:
		return entry.Entry{}, err
	case <-f.closed:
		return entry.Entry{}, errors.New("closed")
	}
}

func (f *feed) Close() { f.once.Do(func() { close(f.closed) }) }

func (s *store) Replay(_ context.Context, _ string, after, until uint64) iter.Seq2[entry.Entry, error] {
	s.mu.Lock()
	s.replays++
	fail := s.failReplays > 0
	if fail {
		s.failReplays--
	}
	busy := !fail && s.busyReplays > 0
	if busy {
		s.busyReplays--
	}
	var out []entry.Entry
	for _, e := range s.entries {
		if e.StreamSeq > after {
			out = append(out, e)
		}
	}
	s.mu.Unlock()
	return func(yield func(entry.Entry, error) bool) {
		if fail {
			yield(entry.Entry{}, errStorage)
			return
		}
		if busy {
			yield(entry.Entry{}, fmt.Errorf("queued: %w", follow.ErrBusy))
			return
		}
		for _, e := range out {
			if !yield(e, nil) || e.StreamSeq >= until {
				return
			}
		}
	}
}

// sink records what a client received. Until released it blocks on Send,
// like a client that does not read.
type sink struct {
	mu        sync.Mutex
	got       []entry.Entry
	unflushed int // entries sent since the last flush
	flushes   int
	pings     int
	release   chan struct{}
	blocked   chan struct{} // closed when Send first blocks
	once      sync.Once
}

func (k *sink) Send(e entry.Entry) error {
	if k.release != nil {
		k.once.Do(func() { close(k.blocked) })
		<-k.release
	}
	k.mu.Lock()
	k.got = append(k.got, e)
	k.unflushed++
	k.mu.Unlock()
	return nil
}

func (k *sink) Flush() error {
	k.mu.Lock()
	k.unflushed = 0
	k.flushes++
	k.mu.Unlock()
	return nil
}

func (k *sink) Ping() error {
	k.mu.Lock()
	k.pings++
	k.mu.Unlock()
	return nil
}

// eventually polls cond, under k's lock, until it holds.
func (k *sink) eventually(t *testing.T, what string, cond func(*sink) bool) {
	t.Helper()
	await.Within(t, waitFor, what, func() bool {
		k.mu.Lock()
		defer k.mu.Unlock()
		return cond(k)
	})
}

func line(streamSeq, lineSeq uint64) entry.Entry {
	return entry.Entry{StreamSeq: streamSeq, Kind: entry.Line, Line: lineSeq}
}

func setup(t *testing.T, st *store, buffer int) (*follow.Follower, *hub.Hubs) {
	t.Helper()
	h := hub.New(st, hub.Config{Buffer: buffer}, slog.New(slog.DiscardHandler))
	t.Cleanup(h.Close)
	return &follow.Follower{Hubs: h, History: st, Heartbeat: time.Hour}, h
}

// run follows in the background; the returned channel yields Run's result.
func run(t *testing.T, f *follow.Follower, cur *follow.Cursor, k follow.Sink) <-chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		done <- f.Run(ctx, f.Prepare(ctx, "s1"), cur, k)
	}()
	t.Cleanup(func() {
		cancel()
		<-exited
	})
	return done
}

func wait(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(waitFor):
		t.Fatal("Run did not end")
	}
}

func seqs(es []entry.Entry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.StreamSeq
	}
	return out
}

func check(t *testing.T, k *sink, want ...uint64) {
	t.Helper()
	k.mu.Lock()
	got := seqs(k.got)
	k.mu.Unlock()
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

func TestReplaysThenGoesLive(t *testing.T) {
	t.Parallel()
	st := newStore()
	st.append(t, line(1, 1), false)
	st.append(t, line(2, 2), false)
	st.append(t, line(3, 2), false) // a duplicate line
	f, _ := setup(t, st, 8)
	k := &sink{}
	cur := &follow.Cursor{}
	done := run(t, f, cur, k)
	st.append(t, line(4, 3), true)
	st.append(t, entry.Entry{StreamSeq: 5, Kind: entry.Invalid}, true)
	st.append(t, entry.Entry{StreamSeq: 6, Kind: entry.Complete, Line: 3}, true)
	wait(t, done)
	check(t, k, 1, 2, 4, 6)
	if *cur != (follow.Cursor{StreamSeq: 6, Line: 3}) {
		t.Fatalf("cursor %+v", *cur)
	}
}

func TestResumeSkipsWhatTheClientHas(t *testing.T) {
	t.Parallel()
	st := newStore()
	for i := uint64(1); i <= 4; i++ {
		st.append(t, line(i, i), false)
	}
	st.append(t, line(5, 4), false) // duplicate of the line the client resumes after
	st.append(t, entry.Entry{StreamSeq: 6, Kind: entry.Complete, Line: 4}, false)
	f, _ := setup(t, st, 8)
	k := &sink{}
	wait(t, run(t, f, &follow.Cursor{StreamSeq: 4, Line: 4}, k))
	check(t, k, 6)
}

func TestCutLooseClientCatchesUpFromHistory(t *testing.T) {
	t.Parallel()
	st := newStore()
	f, h := setup(t, st, 2)
	k := &sink{release: make(chan struct{}), blocked: make(chan struct{})}
	done := run(t, f, &follow.Cursor{}, k)
	// Once the hub runs, everything arrives live.
	hubStarted(t, h)
	// Entry 1 blocks the client; the hub keeps going and cuts it loose.
	const n = 20
	st.append(t, line(1, 1), true)
	select {
	case <-k.blocked:
	case <-time.After(waitFor):
		t.Fatal("client never blocked")
	}
	for i := uint64(2); i <= n; i++ {
		st.append(t, line(i, i), true)
	}
	st.append(t, entry.Entry{StreamSeq: n + 1, Kind: entry.Complete, Line: n}, true)
	if o := h.Stats().Overflows; o != 1 {
		t.Fatalf("overflows %d, want 1", o)
	}
	close(k.release)
	wait(t, done)
	want := make([]uint64, 0, n+1)
	for i := uint64(1); i <= n+1; i++ {
		want = append(want, i)
	}
	check(t, k, want...)
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.replays != 1 {
		t.Fatalf("replays %d, want 1", st.replays)
	}
}

// hubStarted waits until the client's hub runs, so that every entry
// appended from then on arrives live.
func hubStarted(t *testing.T, h *hub.Hubs) {
	t.Helper()
	await.Within(t, waitFor, "the hub started", func() bool { return h.Stats().Started != 0 })
}

func TestBurstIsQueuedAndFlushedTogether(t *testing.T) {
	t.Parallel()
	st := newStore()
	f, h := setup(t, st, 4096)
	k := &sink{release: make(chan struct{}), blocked: make(chan struct{})}
	done := run(t, f, &follow.Cursor{}, k)
	hubStarted(t, h)
	// Entry 1 blocks the client while a burst far larger than the fixed
	// buffer of old queues up behind it.
	const n = 1000
	st.append(t, line(1, 1), true)
	select {
	case <-k.blocked:
	case <-time.After(waitFor):
		t.Fatal("client never blocked")
	}
	for i := uint64(2); i <= n; i++ {
		st.append(t, line(i, i), true)
	}
	close(k.release)
	k.eventually(t, "the burst delivered and flushed", func(k *sink) bool { return len(k.got) == n && k.unflushed == 0 })
	k.mu.Lock()
	flushes := k.flushes
	k.mu.Unlock()
	if flushes > 2 {
		t.Errorf("%d flushes for one burst, want it flushed as one", flushes)
	}
	st.append(t, entry.Entry{StreamSeq: n + 1, Kind: entry.Complete, Line: n}, true)
	wait(t, done)
	if o := h.Stats().Overflows; o != 0 {
		t.Errorf("overflows %d: the burst should have been queued", o)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.replays != 0 {
		t.Errorf("replays %d: the burst should not have been read from storage", st.replays)
	}
}

func TestEveryEntryIsFlushedBeforeWaiting(t *testing.T) {
	t.Parallel()
	st := newStore()
	f, h := setup(t, st, 8)
	k := &sink{}
	run(t, f, &follow.Cursor{}, k)
	hubStarted(t, h)
	for i := uint64(1); i <= 5; i++ {
		st.append(t, line(i, i), true)
		k.eventually(t, "the entry flushed with nothing after it", func(k *sink) bool {
			return len(k.got) == int(i) && k.unflushed == 0
		})
	}
}

func TestPingsWhileWaiting(t *testing.T) {
	t.Parallel()
	st := newStore()
	h := hub.New(st, hub.Config{Buffer: 8}, slog.New(slog.DiscardHandler))
	t.Cleanup(h.Close)
	f := &follow.Follower{Hubs: h, History: st, Heartbeat: 5 * time.Millisecond}
	a, b := &sink{}, &sink{}
	run(t, f, &follow.Cursor{}, a)
	done := run(t, f, &follow.Cursor{}, b)
	for _, k := range []*sink{a, b} {
		k.eventually(t, "three pings", func(k *sink) bool { return k.pings >= 3 })
	}
	st.append(t, entry.Entry{StreamSeq: 1, Kind: entry.Complete}, true)
	wait(t, done)
}

func TestQuitEndsRun(t *testing.T) {
	t.Parallel()
	st := newStore()
	h := hub.New(st, hub.Config{Buffer: 8}, slog.New(slog.DiscardHandler))
	t.Cleanup(h.Close)
	quit, stop := context.WithCancel(context.Background())
	f := &follow.Follower{Hubs: h, History: st, Heartbeat: time.Hour, Quit: quit}
	done := run(t, f, &follow.Cursor{}, &sink{})
	hubStarted(t, h)
	stop()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: %v, want the quit context's error", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Run did not end")
	}
}

// retry rides out failures at test speed.
var retry = follow.Retry{Min: time.Millisecond, Max: 5 * time.Millisecond, For: waitFor}

// A hub that cannot be opened, a replay that fails and a live feed that
// ends mid-stream (NATS reconnecting, a JetStream request timing out under
// load) do not end the client's stream: it joins again from its cursor and
// gets every entry once, in order.
func TestRidesOutStorageFailures(t *testing.T) {
	t.Parallel()
	st := newStore()
	st.append(t, line(1, 1), false)
	st.append(t, line(2, 2), false)
	st.failOpens, st.failReplays = 2, 2
	f, _ := setup(t, st, 8)
	f.Retry = retry
	k := &sink{}
	done := run(t, f, &follow.Cursor{}, k)
	k.eventually(t, "the stored entries", func(k *sink) bool { return len(k.got) == 2 })
	st.append(t, line(3, 3), true)
	k.eventually(t, "the live entry", func(k *sink) bool { return len(k.got) == 3 })

	// Entries 4 and 5 are stored but never reach the feed, which then
	// fails: the client must get them from history.
	st.append(t, line(4, 4), false)
	st.append(t, entry.Entry{StreamSeq: 5, Kind: entry.Complete, Line: 4}, false)
	st.failFeed(t)
	wait(t, done)
	check(t, k, 1, 2, 3, 4, 5)
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.opens < 4 || st.replays < 4 {
		t.Fatalf("%d opens and %d replays: the failures were not retried", st.opens, st.replays)
	}
}

// When storage keeps failing, Run gives up after Retry.For with the last
// failure, having kept the client's connection alive meanwhile; with no
// Retry it returns the first failure.
func TestGivesUpWhenStorageKeepsFailing(t *testing.T) {
	t.Parallel()
	for _, r := range []follow.Retry{{}, {Min: time.Millisecond, Max: 2 * time.Millisecond, For: 100 * time.Millisecond}} {
		st := newStore()
		st.append(t, line(1, 1), false)
		st.failReplays = 1 << 30
		h := hub.New(st, hub.Config{Buffer: 8}, slog.New(slog.DiscardHandler))
		t.Cleanup(h.Close)
		f := &follow.Follower{Hubs: h, History: st, Heartbeat: time.Millisecond, Retry: r}
		k := &sink{}
		start := time.Now()
		select {
		case err := <-run(t, f, &follow.Cursor{}, k):
			if !errors.Is(err, errStorage) {
				t.Fatalf("retry %+v: Run: %v, want the storage failure", r, err)
			}
		case <-time.After(waitFor):
			t.Fatalf("retry %+v: Run did not give up", r)
		}
		elapsed := time.Since(start)
		st.mu.Lock()
		replays := st.replays
		st.mu.Unlock()
		k.mu.Lock()
		pings := k.pings
		k.mu.Unlock()
		switch {
		case r.For == 0 && replays != 1:
			t.Errorf("no retry: %d replays, want 1", replays)
		case r.For > 0 && (elapsed < r.For || replays < 2 || pings == 0):
			t.Errorf("retry %+v: gave up after %s, %d replays, %d pings", r, elapsed, replays, pings)
		}
	}
}

// A replay queued behind others (a reconnect storm) is a wait, not a
// failure: the client keeps its stream, pinged meanwhile, however much
// longer than Retry.For the queue takes, and then gets every entry.
func TestQueuedReplayWaitsPastRetryFor(t *testing.T) {
	t.Parallel()
	st := newStore()
	st.append(t, line(1, 1), false)
	st.append(t, entry.Entry{StreamSeq: 2, Kind: entry.Complete, Line: 1}, false)
	st.busyReplays = 200 // at least 200 waits of Retry.Min: ten times Retry.For
	f, _ := setup(t, st, 8)
	f.Heartbeat = time.Millisecond
	f.Retry = follow.Retry{Min: time.Millisecond, Max: 2 * time.Millisecond, For: 20 * time.Millisecond}
	k := &sink{}
	start := time.Now()
	wait(t, run(t, f, &follow.Cursor{}, k))
	check(t, k, 1, 2)
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.busyReplays != 0 || time.Since(start) < f.Retry.For {
		t.Fatalf("%d queued replays left after %s: the queue was not waited out", st.busyReplays, time.Since(start))
	}
}

// Lines missing from a stream (lost by a server, never sent again) are
// announced before the line that follows them, and lines the terminal
// event counts but the client never got before it: a watcher is told,
// never left silent. Nothing is claimed where the client's last line is
// unknown.
func TestGapsAreAnnounced(t *testing.T) {
	t.Parallel()
	gapOf := func(e entry.Entry) contracts.SSEGapData {
		var g contracts.SSEGapData
		if err := json.Unmarshal(e.Data, &g); err != nil {
			t.Fatal(err)
		}
		return g
	}
	st := newStore()
	st.append(t, line(1, 1), false)
	st.append(t, line(2, 2), false)
	st.append(t, line(3, 5), false)
	st.append(t, entry.Entry{StreamSeq: 4, Kind: entry.Complete, Line: 7}, false)
	f, _ := setup(t, st, 8)

	k := &sink{}
	wait(t, run(t, f, &follow.Cursor{}, k))
	check(t, k, 1, 2, 2, 3, 3, 4)
	k.mu.Lock()
	got := k.got
	k.mu.Unlock()
	if got[2].Kind != entry.Gap || gapOf(got[2]) != (contracts.SSEGapData{From: 3, To: 4}) {
		t.Errorf("before line 5: %+v, want a gap of lines 3-4", got[2])
	}
	if got[4].Kind != entry.Gap || gapOf(got[4]) != (contracts.SSEGapData{From: 6, To: 7}) {
		t.Errorf("before the complete event: %+v, want a gap of lines 6-7", got[4])
	}

	unknown := &sink{}
	wait(t, run(t, f, &follow.Cursor{StreamSeq: 2}, unknown))
	check(t, unknown, 3, 3, 4) // line 5 is the first it knows; 6-7 are missing after it
}

// A join prepared before Run opens the stream's feed at once; what the
// feed carries before Run begins is queued for it, and Run delivers the
// history and then that, each entry once.
func TestPreparedJoinOpensTheFeedBeforeRun(t *testing.T) {
	t.Parallel()
	st := newStore()
	st.append(t, line(1, 1), false)
	f, _ := setup(t, st, 8)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	j := f.Prepare(ctx, "s1")
	await.Within(t, waitFor, "the feed opened", st.feedOpen)
	st.append(t, line(2, 2), true) // carried before Run
	k := &sink{}
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx, j, &follow.Cursor{}, k) }()
	st.append(t, entry.Entry{StreamSeq: 3, Kind: entry.Complete, Line: 2}, true)
	wait(t, done)
	check(t, k, 1, 2, 3)
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.opens != 1 {
		t.Fatalf("%d feeds opened, want 1", st.opens)
	}
}

// A prepared join that is abandoned leaves the hub: its feed closes.
func TestAbandonedJoinClosesTheFeed(t *testing.T) {
	t.Parallel()
	st := newStore()
	f, h := setup(t, st, 8)
	j := f.Prepare(context.Background(), "s1")
	await.Within(t, waitFor, "the feed opened", func() bool { return h.Stats().Running == 1 })
	j.Abandon()
	await.Within(t, waitFor, "the feed closed", func() bool { return h.Stats().Running == 0 })
}
