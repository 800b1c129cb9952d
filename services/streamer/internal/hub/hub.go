// Package hub fans the live entries of a stream out to every client watching
// it, over one feed per stream: the first client to join opens the feed and
// the last to leave closes it. A client that does not keep up is cut loose
// rather than allowed to slow the feed or the other clients.
//
// Each subscription queues its entries in a slice that grows only as far as
// its client lags, up to a bound in entries and in bytes, and shrinks back
// once the client has caught up: an idle client holds a few hundred bytes,
// and a burst is absorbed rather than sent to storage.
//
// Every subscription gets the same entry, with one entry.Shared attached
// when there are several: what the clients encode from it (an SSE frame)
// is made once for the stream and copied by each, not encoded once per
// client.
package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rdev-dev/rdev/services/streamer/internal/entry"
)

// Feed is the live entries of one stream, in storage order, each once.
type Feed interface {
	// Next blocks until the next entry. An error means the feed has ended
	// for good: it was closed or it failed.
	Next() (entry.Entry, error)
	// Close ends the feed and releases what it holds; a blocked Next
	// returns. It may be called concurrently with Next, and more than once.
	Close()
}

// Notifier is a Feed that says when it has entries: its hub then runs a
// goroutine only while there are entries to fan out, rather than one
// parked in Next for as long as the stream is watched. Thousands of
// watched streams on one shared consumer (natsjs), most of them quiet,
// held a goroutine each for nothing.
type Notifier interface {
	Feed
	// TryNext returns the next entry without waiting (ok), or the error
	// that ended the feed once every entry queued before it was taken.
	// With neither, nothing is queued now and the feed calls the wake
	// function set by Notify once something is: the taker has stopped
	// taking and starts again only when woken.
	TryNext() (e entry.Entry, ok bool, err error)
	// Notify sets wake and starts the feed's notifications: wake is
	// called, from any goroutine and never while a call of TryNext or
	// Next is in progress on it, once after each TryNext that found
	// nothing, when an entry arrives or the feed ends; and at once if the
	// feed holds entries or has ended already. It is called once, before
	// any TryNext.
	Notify(wake func())
}

// Source opens feeds.
type Source interface {
	// Open starts a feed of the entries of streamID stored after the
	// current end of the stream and returns that end: the sequence of the
	// last message stored before the feed starts (0 for an empty stream).
	Open(ctx context.Context, streamID string) (Feed, uint64, error)
}

var (
	// ErrOverflow ends a subscription whose queue was full when the hub
	// had an entry for it. Its client missed that entry: it must replay
	// from its cursor and join again.
	ErrOverflow = errors.New("hub: subscriber buffer full")
	// ErrClosed is returned by Join, and ends every subscription, once
	// Close was called.
	ErrClosed = errors.New("hub: closed")
	// ErrBusy is returned by Join when the hub's turn to open its feed
	// did not come within OpenTimeout: waiting in line behind other
	// opens, not a storage failure (follow.ErrBusy is the same error).
	ErrBusy = errors.New("storage busy: waiting for a turn")
)

// Config sizes the hubs.
type Config struct {
	// Buffer is how many entries a subscription may queue before the hub
	// cuts it loose.
	Buffer int
	// BufferBytes is how many bytes of entry data a subscription may
	// queue before the hub cuts it loose; 0 means no bound but Buffer. An
	// entry larger than the bound alone still fits an empty queue.
	BufferBytes int
	// OpenTimeout bounds opening a feed, and separately its wait for a
	// turn to open.
	OpenTimeout time.Duration
	// Opens is how many feeds open at once (each asks the server for the
	// stream's end and creates a consumer); more wait in line. Ten
	// thousand streams watched at once opened their feeds together, the
	// server answered too slowly and the opens failed. Default
	// DefaultOpens.
	Opens int
}

// DefaultOpens is Config.Opens's default.
const DefaultOpens = 32

// Hubs keeps one hub per watched stream. It is safe for concurrent use.
type Hubs struct {
	src    Source
	cfg    Config
	log    *slog.Logger
	ctx    context.Context // cancelled by Close, so opens in progress give up
	cancel context.CancelFunc

	opens chan struct{} // one token per feed opening

	mu     sync.Mutex
	hubs   map[string]*hub
	closed bool
	wg     sync.WaitGroup // hub goroutines

	started   atomic.Uint64
	overflows atomic.Uint64
}

// New returns hubs that open their feeds from src.
func New(src Source, cfg Config, log *slog.Logger) *Hubs {
	if cfg.Buffer <= 0 {
		cfg.Buffer = 1
	}
	cfg.BufferBytes = max(cfg.BufferBytes, 0)
	if cfg.OpenTimeout <= 0 {
		cfg.OpenTimeout = 10 * time.Second
	}
	if cfg.Opens <= 0 {
		cfg.Opens = DefaultOpens
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Hubs{src: src, cfg: cfg, log: log, ctx: ctx, cancel: cancel, opens: make(chan struct{}, cfg.Opens), hubs: map[string]*hub{}}
}

// Stats counts hubs and their subscribers' overflows.
type Stats struct {
	// Running is the number of hubs with an open feed or opening one.
	Running int
	// Started is the number of feeds opened since New.
	Started uint64
	// Overflows is the number of subscriptions cut loose as ErrOverflow.
	Overflows uint64
}

// Stats returns the current counts.
func (r *Hubs) Stats() Stats {
	r.mu.Lock()
	n := len(r.hubs)
	r.mu.Unlock()
	return Stats{Running: n, Started: r.started.Load(), Overflows: r.overflows.Load()}
}

type hub struct {
	id    string
	refs  int           // guarded by Hubs.mu: subscriptions and joins in progress
	ready chan struct{} // closed once feed or err is set
	feed  Feed
	err   error // why the feed could not be opened

	mu      sync.Mutex
	last    uint64 // sequence of the last entry fanned out, or the start boundary
	subs    map[*Sub]struct{}
	stopErr error // set when the hub was asked to stop, before its feed closes
	dead    error // set once the hub stopped: no more subscriptions
}

// Sub is one client's subscription to a stream's live entries.
type Sub struct {
	h     *hub
	r     *Hubs
	once  sync.Once
	ready chan struct{} // holds a token once entries arrive in an empty queue or the subscription ends

	mu    sync.Mutex
	q     []entry.Entry // entries not yet taken, in order
	bytes int           // data bytes in q
	err   error         // why the subscription ended; nil while it runs
}

// keepCap is the largest queue kept for reuse once a client has caught up:
// enough that a client keeping pace reuses its two queues (they hold a few
// entries each at full speed), small enough that an idle one holds under
// 2 KiB. A larger queue grown by a burst is dropped.
const keepCap = 16

// Ready receives a signal when entries arrive in an empty queue or the
// subscription ends. A signal can be stale: Take may then return nothing.
func (s *Sub) Ready() <-chan struct{} { return s.ready }

// Take returns the queued entries, in order, and takes back spare, the
// batch a previous Take returned, for reuse: the caller must be done with
// its entries. With nothing queued, it returns an empty batch and, once the
// subscription has ended, why: ErrOverflow when the hub cut it loose (its
// client must replay from its cursor and join again), another error when
// the hub stopped. Entries queued before the end are still returned first.
func (s *Sub) Take(spare []entry.Entry) ([]entry.Entry, error) {
	clear(spare) // the entries' data is not kept alive by a spare queue
	spare = spare[:0]
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.q) == 0 {
		// Caught up: give back what a burst grew.
		if cap(s.q) > keepCap {
			s.q = nil
		}
		if cap(spare) > keepCap {
			spare = nil
		}
		return spare, s.err
	}
	batch := s.q
	s.q, s.bytes = spare, 0
	return batch, nil
}

// Err says why the subscription ended, or nil while it runs.
func (s *Sub) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// push queues e, or ends the subscription with ErrOverflow when its queue
// is full. It reports whether e was queued.
func (s *Sub) push(e entry.Entry, cfg *Config) bool {
	s.mu.Lock()
	full := len(s.q) >= cfg.Buffer ||
		(cfg.BufferBytes > 0 && len(s.q) > 0 && s.bytes+len(e.Data) > cfg.BufferBytes)
	wake := len(s.q) == 0
	if full {
		s.err, wake = ErrOverflow, true
	} else {
		s.q = append(s.q, e)
		s.bytes += len(e.Data)
	}
	s.mu.Unlock()
	if wake {
		s.signal()
	}
	return !full
}

// end ends the subscription with err.
func (s *Sub) end(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
	s.signal()
}

func (s *Sub) signal() {
	select {
	case s.ready <- struct{}{}:
	default: // a signal is pending already
	}
}

// Leave ends the subscription. It may be called more than once.
func (s *Sub) Leave() {
	s.once.Do(func() {
		s.h.mu.Lock()
		delete(s.h.subs, s)
		s.h.mu.Unlock()
		s.r.release(s.h)
	})
}

// Join subscribes to the live entries of streamID, opening its hub if
// none is running. It returns the boundary: the sequence of the last entry
// the hub handled before the subscription. Every entry after the boundary
// is queued on the subscription, so a client that replays history
// up to the boundary and then takes from the subscription misses nothing.
func (r *Hubs) Join(ctx context.Context, streamID string) (*Sub, uint64, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, 0, ErrClosed
	}
	h, ok := r.hubs[streamID]
	if !ok {
		h = &hub{id: streamID, ready: make(chan struct{}), subs: map[*Sub]struct{}{}}
		r.hubs[streamID] = h
	}
	h.refs++
	r.mu.Unlock()

	if !ok {
		r.open(h) //nolint:contextcheck // the hub outlives the request that created it
	}
	select {
	case <-h.ready:
	case <-ctx.Done():
		r.release(h)
		return nil, 0, ctx.Err()
	}
	if h.err != nil {
		r.release(h)
		return nil, 0, h.err
	}
	s := &Sub{ready: make(chan struct{}, 1), h: h, r: r}
	h.mu.Lock()
	if h.dead != nil {
		err := h.dead
		h.mu.Unlock()
		r.release(h)
		return nil, 0, err
	}
	h.subs[s] = struct{}{}
	boundary := h.last
	h.mu.Unlock()
	return s, boundary, nil
}

// open opens h's feed and starts fanning out, or records why it could not.
func (r *Hubs) open(h *hub) {
	feed, last, err := r.openFeed(h.id)
	if err != nil {
		err = fmt.Errorf("open feed of stream %s: %w", h.id, err)
	}

	r.mu.Lock()
	if err == nil && r.closed {
		feed.Close()
		err = ErrClosed
	}
	if err != nil {
		h.err = err
		if r.hubs[h.id] == h {
			delete(r.hubs, h.id)
		}
	} else {
		h.feed = feed
		h.mu.Lock()
		h.last = last
		h.mu.Unlock()
		r.started.Add(1)
		r.wg.Add(1) // until ended
		if nf, ok := feed.(Notifier); ok {
			nf.Notify(func() { go r.drain(h, nf) })
		} else {
			go r.run(h)
		}
	}
	r.mu.Unlock()
	close(h.ready)
}

// openFeed opens streamID's feed once its turn comes, waiting at most
// OpenTimeout for it; the open itself then has OpenTimeout of its own.
func (r *Hubs) openFeed(streamID string) (Feed, uint64, error) {
	wait := time.NewTimer(r.cfg.OpenTimeout)
	select {
	case r.opens <- struct{}{}:
		wait.Stop()
	case <-wait.C:
		return nil, 0, ErrBusy
	case <-r.ctx.Done():
		wait.Stop()
		return nil, 0, ErrClosed
	}
	defer func() { <-r.opens }()
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.OpenTimeout)
	defer cancel()
	return r.src.Open(ctx, streamID)
}

// release drops one reference to h and stops it when it was the last.
func (r *Hubs) release(h *hub) {
	r.mu.Lock()
	h.refs--
	last := h.refs == 0 && r.hubs[h.id] == h
	if last {
		delete(r.hubs, h.id)
	}
	r.mu.Unlock()
	if last {
		r.stop(h, nil)
	}
}

// stop closes the feed of a running hub; its goroutine then ends the
// remaining subscriptions with reason (none remain when the last one left).
func (r *Hubs) stop(h *hub, reason error) {
	select {
	case <-h.ready:
	default:
		return // still opening: open sees the hub gone and closes the feed itself
	}
	if h.feed == nil {
		return
	}
	if reason == nil {
		reason = ErrClosed
	}
	h.mu.Lock()
	if h.stopErr == nil {
		h.stopErr = reason
	}
	h.mu.Unlock()
	h.feed.Close()
}

func (r *Hubs) run(h *hub) {
	for {
		e, err := h.feed.Next()
		if err != nil {
			r.ended(h, err)
			return
		}
		r.overflows.Add(r.fanOut(h, e))
	}
}

// drain fans out what a Notifier feed holds and returns once it is empty:
// the feed wakes the next drain when entries come. One drain runs at a
// time (the feed wakes only once TryNext found nothing), so entries are
// fanned out in order.
func (r *Hubs) drain(h *hub, nf Notifier) {
	for {
		e, ok, err := nf.TryNext()
		switch {
		case err != nil:
			r.ended(h, err)
			return
		case !ok:
			return
		}
		r.overflows.Add(r.fanOut(h, e))
	}
}

// fanOut queues e on every subscription without blocking and cuts loose
// the ones whose queue is full. It returns how many were cut loose.
func (r *Hubs) fanOut(h *hub, e entry.Entry) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last = e.StreamSeq
	if len(h.subs) > 1 {
		// One Shared per entry, whatever the number of subscribers: the
		// first client to write the entry encodes it for all of them. A
		// lone client encodes it itself, as it would a replayed entry,
		// without the Shared's allocation.
		e.Shared = new(entry.Shared)
	}
	var n uint64
	for s := range h.subs {
		if !s.push(e, &r.cfg) {
			delete(h.subs, s)
			n++
		}
	}
	return n
}

// ended runs once h's feed returned err: it ends every subscription and,
// when nobody asked the hub to stop, unregisters it so the next Join opens
// a fresh feed.
func (r *Hubs) ended(h *hub, err error) {
	defer r.wg.Done()
	h.feed.Close()
	// The hub is unregistered before its subscriptions end: a client told
	// of the failure may join again at once and must get a fresh feed, not
	// this hub's failure again.
	r.mu.Lock()
	h.mu.Lock()
	reason := h.stopErr
	failed := reason == nil
	if failed {
		reason = fmt.Errorf("live feed of stream %s: %w", h.id, err)
		if r.hubs[h.id] == h {
			delete(r.hubs, h.id)
		}
	}
	r.mu.Unlock()
	h.dead = reason
	for s := range h.subs {
		delete(h.subs, s)
		s.end(reason)
	}
	h.mu.Unlock()
	if failed {
		r.log.Error("hub feed failed", "stream_id", h.id, "err", err)
	}
}

// Close stops every hub, ends every subscription with ErrClosed and waits
// for the hubs' goroutines. Join fails from then on. It may be called more
// than once.
func (r *Hubs) Close() {
	r.mu.Lock()
	r.closed = true
	hubs := r.hubs
	r.hubs = map[string]*hub{}
	r.mu.Unlock()
	r.cancel()
	for _, h := range hubs {
		r.stop(h, ErrClosed)
	}
	r.wg.Wait()
}
