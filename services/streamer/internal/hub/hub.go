// Package hub fans the live entries of a stream out to every client watching
// it, over one feed per stream: the first client to join opens the feed and
// the last to leave closes it. A client that does not keep up is cut loose
// rather than allowed to slow the feed or the other clients.
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

// Source opens feeds.
type Source interface {
	// Open starts a feed of the entries of streamID stored after the
	// current end of the stream and returns that end: the sequence of the
	// last message stored before the feed starts (0 for an empty stream).
	Open(ctx context.Context, streamID string) (Feed, uint64, error)
}

var (
	// ErrOverflow ends a subscription whose buffer was full when the hub
	// had an entry for it. Its client missed that entry: it must replay
	// from its cursor and join again.
	ErrOverflow = errors.New("hub: subscriber buffer full")
	// ErrClosed is returned by Join, and ends every subscription, once
	// Close was called.
	ErrClosed = errors.New("hub: closed")
)

// Config sizes the hubs.
type Config struct {
	// Buffer is how many entries a subscription holds before the hub cuts
	// it loose.
	Buffer int
	// OpenTimeout bounds opening a feed.
	OpenTimeout time.Duration
}

// Hubs keeps one hub per watched stream. It is safe for concurrent use.
type Hubs struct {
	src    Source
	cfg    Config
	log    *slog.Logger
	ctx    context.Context // cancelled by Close, so opens in progress give up
	cancel context.CancelFunc

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
	if cfg.OpenTimeout <= 0 {
		cfg.OpenTimeout = 10 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Hubs{src: src, cfg: cfg, log: log, ctx: ctx, cancel: cancel, hubs: map[string]*hub{}}
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
	c    chan entry.Entry
	err  error // set before c is closed
	h    *hub
	r    *Hubs
	once sync.Once
}

// C delivers the live entries, in order. It is closed when the hub cuts the
// subscription loose (Err is ErrOverflow) or stops (any other Err); entries
// buffered before that are still received.
func (s *Sub) C() <-chan entry.Entry { return s.c }

// Err says why C was closed. Call it only after C was seen closed.
func (s *Sub) Err() error { return s.err }

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
// arrives on the subscription's channel, so a client that replays history
// up to the boundary and then reads the channel misses nothing.
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
		r.open(h)
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
	s := &Sub{c: make(chan entry.Entry, r.cfg.Buffer), h: h, r: r}
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
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.OpenTimeout)
	feed, last, err := r.src.Open(ctx, h.id)
	cancel()
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
		r.wg.Add(1)
		go r.run(h)
	}
	r.mu.Unlock()
	close(h.ready)
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
	defer r.wg.Done()
	for {
		e, err := h.feed.Next()
		if err != nil {
			r.ended(h, err)
			return
		}
		r.overflows.Add(h.fanOut(e))
	}
}

// fanOut hands e to every subscription without blocking and cuts loose the
// ones whose buffer is full. It returns how many were cut loose.
func (h *hub) fanOut(e entry.Entry) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last = e.Seq
	var n uint64
	for s := range h.subs {
		select {
		case s.c <- e:
		default:
			delete(h.subs, s)
			s.err = ErrOverflow
			close(s.c)
			n++
		}
	}
	return n
}

// ended runs once h's feed returned err: it ends every subscription and,
// when nobody asked the hub to stop, unregisters it so the next Join opens
// a fresh feed.
func (r *Hubs) ended(h *hub, err error) {
	h.feed.Close()
	h.mu.Lock()
	reason := h.stopErr
	failed := reason == nil
	if failed {
		reason = fmt.Errorf("live feed of stream %s: %w", h.id, err)
	}
	h.dead = reason
	for s := range h.subs {
		delete(h.subs, s)
		s.err = reason
		close(s.c)
	}
	h.mu.Unlock()
	if failed {
		r.log.Error("hub feed failed", "stream_id", h.id, "err", err)
		r.mu.Lock()
		if r.hubs[h.id] == h {
			delete(r.hubs, h.id)
		}
		r.mu.Unlock()
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
