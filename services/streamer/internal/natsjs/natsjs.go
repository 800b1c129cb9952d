// Package natsjs reads rdev streams from NATS JetStream: stream references
// from the state bucket, single messages by sequence, replays through
// batched direct gets (no consumer per client) and live feeds through
// ordered consumers: one per stream while few are watched, one shared by
// every stream beyond Config.SharedAfter.
package natsjs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/state"
	"github.com/rdev-dev/rdev/services/streamer/internal/entry"
	"github.com/rdev-dev/rdev/services/streamer/internal/hub"
)

// ErrNoMessage is returned by At when nothing is stored at the sequence:
// it was never written, or it expired.
var ErrNoMessage = errors.New("no message at sequence")

// Config tunes the store.
type Config struct {
	// Batch is how many messages one replay read (a direct get of one of
	// the stream's subject filters) asks for. With BatchBytes it bounds
	// the memory a replaying client holds: three batches. Default 128.
	Batch int
	// BatchBytes bounds the bytes of one replay read. Default 256 KiB.
	BatchBytes int
	// Reads is how many replay reads run at once; more wait their turn in
	// line. It bounds the load a reconnect storm puts on the servers.
	// Default DefaultReads.
	Reads int
	// ReadWait is how long a replay read waits for its turn before the
	// replay yields ErrBusy (its caller retries later). Default 10s.
	ReadWait time.Duration
	// Idle is how long the server keeps a live feed's consumer nobody
	// pulls from. The store deletes its consumers itself; Idle only cleans
	// up after a process that died.
	Idle time.Duration
	// CleanupTimeout bounds deleting a consumer.
	CleanupTimeout time.Duration
	// StallCheck is how long a live feed may wait for a message before it
	// asks JetStream whether its consumer owes it messages (see
	// feed.check). It exceeds the ordered consumer's own missing-heartbeat
	// window (two heartbeats, 10s), so that the client library's recovery
	// acts first. Default 15s.
	StallCheck time.Duration
	// SharedAfter is how many open live feeds make the next one join the
	// shared feed (shared.go), one consumer for every stream, instead of
	// having an ordered consumer of its own. 0 means never; a negative
	// value means always. Feeds keep the consumer they opened with.
	SharedAfter int
	// SharedLinger is how long the shared feed keeps running with no
	// feed on it, so that a stream watched again soon finds it still
	// there. Default 30s.
	SharedLinger time.Duration
	// SharedBuffer is how many entries a feed on the shared feed may hold
	// before the shared feed fails it (ErrFeedOverflow) rather than wait.
	// The queue grows only as far as its hub lags. Default 4096.
	SharedBuffer int
	// SharedBufferBytes bounds the same lag in bytes of entry data; an
	// entry larger than the bound alone still fits an empty queue.
	// Default 4 MiB.
	SharedBufferBytes int
	// EventLinger is how long a busy lifecycle-event feed (ProjectEvents)
	// holds its caller's flush: an event that comes less than EventLinger
	// after the last flush is marked More and a Flush follows once
	// EventLinger has passed, so a feed taking a thousand events a second
	// costs its client a write every few milliseconds instead of one per
	// event. An event after a quiet spell is flushed at once. Default
	// DefaultEventLinger; negative turns it off.
	EventLinger time.Duration
}

// DefaultEventLinger is Config.EventLinger's default: well under what a
// person watching a dashboard or a CLI notices.
const DefaultEventLinger = 5 * time.Millisecond

// Store reads streams from JetStream. It is safe for concurrent use.
type Store struct {
	js    jetstream.JetStream
	state *state.Store
	cfg   Config
	log   *slog.Logger

	direct  *direct       // replays' reads
	reads   chan struct{} // one token per replay read running
	waiting atomic.Int64  // replay reads waiting for a token

	lastMu     sync.Mutex
	lastFlight *lastFlight // LastSeq request of boundary in progress

	flightsMu sync.Mutex
	flights   map[string]*flight // reads in progress, by filter and sequence
	clock     atomic.Uint64      // orders replays' beginnings and their reads' requests

	refresh    sync.Mutex // held while replicasN is read from the server
	mu         sync.Mutex
	output     jetstream.Stream // cached handle of contracts.StreamOutput
	replicasN  int              // the output stream's replicas, read at replicasAt
	replicasAt time.Time

	own       atomic.Int64  // live feeds with a consumer of their own
	onShared  atomic.Int64  // live feeds on the shared feed
	overflows atomic.Uint64 // feeds on the shared feed failed for overflow
	shMu      sync.Mutex
	sh        *shared // the shared feed running or starting; nil if none
	shClosed  bool    // set by Close: no shared feed starts again
}

// FeedStats counts live feeds.
type FeedStats struct {
	// Own is the number of open live feeds with an ordered consumer of
	// their own.
	Own int64
	// Shared is the number of open live feeds on the shared feed.
	Shared int64
	// Overflows counts the feeds on the shared feed failed because their
	// buffer was full.
	Overflows uint64
}

// FeedStats returns the current counts.
func (s *Store) FeedStats() FeedStats {
	return FeedStats{Own: s.own.Load(), Shared: s.onShared.Load(), Overflows: s.overflows.Load()}
}

// DefaultReads is Config.Reads's default: enough to keep a server busy
// (each read is one request of up to Batch messages), few enough that a
// storm of replays queues here rather than on the server.
const DefaultReads = 32

// New returns a store reading output from js and stream references from
// kv (the contracts.BucketState bucket).
func New(js jetstream.JetStream, kv jetstream.KeyValue, cfg Config, log *slog.Logger) *Store {
	if cfg.Batch <= 0 {
		cfg.Batch = 128
	}
	if cfg.BatchBytes <= 0 {
		cfg.BatchBytes = 256 << 10
	}
	if cfg.Reads <= 0 {
		cfg.Reads = DefaultReads
	}
	if cfg.ReadWait <= 0 {
		cfg.ReadWait = 10 * time.Second
	}
	if cfg.Idle <= 0 {
		cfg.Idle = 5 * time.Minute
	}
	if cfg.CleanupTimeout <= 0 {
		cfg.CleanupTimeout = 5 * time.Second
	}
	if cfg.StallCheck <= 0 {
		cfg.StallCheck = 15 * time.Second
	}
	if cfg.SharedLinger <= 0 {
		cfg.SharedLinger = 30 * time.Second
	}
	if cfg.SharedBuffer <= 0 {
		cfg.SharedBuffer = 4096
	}
	if cfg.EventLinger == 0 {
		cfg.EventLinger = DefaultEventLinger
	}
	if cfg.SharedBufferBytes <= 0 {
		cfg.SharedBufferBytes = 4 << 20
	}
	s := &Store{js: js, state: state.New(kv), cfg: cfg, log: log, reads: make(chan struct{}, cfg.Reads),
		flights: make(map[string]*flight)}
	s.direct = newDirect(js.Conn(), s.apiSubject("DIRECT.GET."+contracts.StreamOutput))
	return s
}

// Ref returns the reference stored for streamID, or state.ErrNotFound.
func (s *Store) Ref(ctx context.Context, streamID string) (contracts.StreamRef, error) {
	ref, _, err := s.state.Streams.Get(ctx, streamID)
	return ref, err
}

// Batch returns a batch record, or state.ErrNotFound.
func (s *Store) Batch(ctx context.Context, id string) (contracts.Batch, error) {
	b, _, err := s.state.Batches.Get(ctx, id)
	return b, err
}

// At returns the entry of streamID stored at seq. It returns ErrNoMessage
// when nothing is stored there and entry.ErrForeign when the message
// belongs to another stream. An undecodable message of the stream comes
// back as an entry.Invalid entry without error.
func (s *Store) At(ctx context.Context, streamID string, seq uint64) (entry.Entry, error) {
	st, err := s.stream(ctx)
	if err != nil {
		return entry.Entry{}, err
	}
	// A direct get (the stream allows them) may be answered by a follower
	// that has not stored seq yet: a client resuming right after a live
	// event would be told its id expired. The leader has the last word.
	var m getMsg
	msg, err := st.GetMsg(ctx, seq)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		lm, err := s.leaderAt(ctx, seq)
		if err != nil {
			return entry.Entry{}, err
		}
		if lm == nil {
			return entry.Entry{}, ErrNoMessage
		}
		m = *lm
	case err != nil:
		return entry.Entry{}, fmt.Errorf("get message %d: %w", seq, err)
	default:
		m = getMsg{subject: msg.Subject, seq: msg.Sequence, data: msg.Data}
	}
	e, err := entry.Parse(streamID, m.subject, m.seq, m.data)
	if errors.Is(err, entry.ErrForeign) {
		return e, err
	}
	if err != nil {
		s.log.Warn("undecodable message", "stream_id", streamID, "seq", seq, "err", err)
	}
	return e, nil
}

// LastSeq returns the sequence of the last message stored in the output
// stream, of any rdev stream.
func (s *Store) LastSeq(ctx context.Context) (uint64, error) {
	st, err := s.stream(ctx)
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream info %s: %w", contracts.StreamOutput, err)
	}
	return info.State.LastSeq, nil
}

// boundary is LastSeq for a live feed opening: feeds opening at once share
// one stream info request (a burst of new streams made one each, and on a
// loaded server they timed out). A value read since the caller asked, or
// while it asked, is no later than the stream's end now, and any such
// boundary is exact for the feed: the replay covers up to it, the feed
// from after it, and what both deliver is sent once (follow).
func (s *Store) boundary(ctx context.Context) (uint64, error) {
	s.lastMu.Lock()
	f, lead := s.lastFlight, false
	if f == nil {
		f, lead = &lastFlight{done: make(chan struct{})}, true
		s.lastFlight = f
	}
	s.lastMu.Unlock()
	if lead {
		f.seq, f.err = s.LastSeq(context.WithoutCancel(ctx))
		s.lastMu.Lock()
		s.lastFlight = nil
		s.lastMu.Unlock()
		close(f.done)
	}
	select {
	case <-f.done:
		return f.seq, f.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// lastFlight is a LastSeq request shared by the feeds opening meanwhile.
type lastFlight struct {
	done chan struct{}
	seq  uint64
	err  error
}

func (s *Store) stream(ctx context.Context) (jetstream.Stream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.output != nil {
		return s.output, nil
	}
	st, err := s.js.Stream(ctx, contracts.StreamOutput)
	if err != nil {
		return nil, fmt.Errorf("open stream %s: %w", contracts.StreamOutput, err)
	}
	s.output = st
	return st, nil
}

func filters(streamID string) []string { return contracts.StreamFilters(streamID) }

// Open starts a live feed of streamID that begins right after the current
// end of the output stream. It implements hub.Source. The feed has an
// ordered consumer of its own while fewer than Config.SharedAfter feeds
// are open, and joins the shared feed (shared.go) from then on.
//
// A feed of its own is a consumer that delivers only what is stored after
// it is made, and the end it starts after comes back with it. A consumer
// made to start at a given sequence makes the server count what it would
// deliver from there, walking the per-subject state of the output
// stream's blocks while it holds the stream's store lock: every write of
// output and events waited for it, and a high-priority job's events took
// 15 ms at p99 instead of 4 (docs/performance.md). This way the count
// starts past the end and costs nothing, and no stream info request is
// needed either.
func (s *Store) Open(ctx context.Context, streamID string) (hub.Feed, uint64, error) {
	if !s.claimOwn() {
		return s.openShared(ctx, streamID)
	}
	subjects := filters(streamID)
	cons, err := s.js.OrderedConsumer(ctx, contracts.StreamOutput, jetstream.OrderedConsumerConfig{
		FilterSubjects:    subjects,
		DeliverPolicy:     jetstream.DeliverNewPolicy,
		InactiveThreshold: s.cfg.Idle,
	})
	if err == nil {
		var it jetstream.MessagesContext
		if it, err = cons.Messages(jetstream.PullMaxMessages(s.cfg.Batch)); err == nil {
			info := cons.CachedInfo()
			last := info.Delivered.Stream // the stream's end when the consumer was made
			fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
			f := &feed{s: s, streamID: streamID, filters: subjects, cons: cons, it: it, ctx: fctx, cancel: cancel,
				next: last + 1, first: info.Name}
			f.onClose = func() { s.own.Add(-1) }
			return f, last, nil
		}
	}
	s.own.Add(-1)
	return nil, 0, fmt.Errorf("ordered consumer: %w", err)
}

// openOwn starts a feed of the messages on subjects from stream sequence
// start, through an ordered consumer of its own. label names it in logs.
func (s *Store) openOwn(ctx context.Context, label string, subjects []string, start uint64) (*feed, error) {
	cons, it, err := s.openAt(ctx, subjects, start)
	if err != nil {
		return nil, err
	}
	// The feed outlives ctx, which only bounds opening it.
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	return &feed{s: s, streamID: label, filters: subjects, cons: cons, it: it, ctx: fctx, cancel: cancel, next: start}, nil
}

// openAt starts an ordered consumer of subjects at stream sequence start.
func (s *Store) openAt(ctx context.Context, subjects []string, start uint64) (jetstream.Consumer, jetstream.MessagesContext, error) {
	cons, err := s.js.OrderedConsumer(ctx, contracts.StreamOutput, jetstream.OrderedConsumerConfig{
		FilterSubjects:    subjects,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       start,
		InactiveThreshold: s.cfg.Idle,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("ordered consumer: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(s.cfg.Batch))
	if err != nil {
		return nil, nil, fmt.Errorf("consume: %w", err)
	}
	return cons, it, nil
}

type feed struct {
	s        *Store
	streamID string          // the stream fed, or what the feed is called in logs
	filters  []string        // the consumer's filter subjects
	onClose  func()          // run once by Close, if set
	ctx      context.Context // cancelled by Close, to unblock Next
	cancel   context.CancelFunc
	once     sync.Once
	next     uint64 // stream sequence after the last message delivered
	owed     uint64 // next when a check last found messages owed; 0 for none
	// first names the consumer Open made to deliver only new messages,
	// until the feed has received a message; "" then, and for a feed
	// made to start at a sequence. See reset.
	first string

	// cons and it are replaced by Next's goroutine (reopen) and read by
	// Close's; Next's goroutine reads them without the lock.
	mu   sync.Mutex
	cons jetstream.Consumer
	it   jetstream.MessagesContext
}

func (f *feed) Next() (entry.Entry, error) {
	msg, seq, err := f.msg()
	if err != nil {
		return entry.Entry{}, err
	}
	e, err := entry.Parse(f.streamID, msg.Subject(), seq, msg.Data())
	if err != nil {
		f.s.log.Warn("undecodable message", "stream_id", f.streamID, "seq", seq, "err", err)
		e.Kind = entry.Invalid
	}
	return e, nil
}

// msg blocks until the next message and returns it with its stream
// sequence. While none comes it checks the consumer every StallCheck.
func (f *feed) msg() (jetstream.Msg, uint64, error) {
	var msg jetstream.Msg
	for {
		wait, cancel := context.WithTimeout(f.ctx, f.s.cfg.StallCheck)
		m, err := f.it.Next(jetstream.NextContext(wait))
		cancel()
		if err == nil {
			msg = m
			break
		}
		if f.ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return nil, 0, err
		}
		f.check()
	}
	if f.first != "" {
		switch reopened, err := f.reset(); {
		case err != nil:
			return nil, 0, err // the hub fails; its clients read what they lack from history
		case reopened:
			return f.msg() // the new consumer sends everything after where the feed started
		}
		f.first = ""
	}
	md, err := msg.Metadata()
	if err != nil {
		return nil, 0, fmt.Errorf("message metadata: %w", err)
	}
	f.next = md.Sequence.Stream + 1
	return msg, md.Sequence.Stream, nil
}

// check runs when the feed has received nothing for StallCheck. It asks
// JetStream whether the consumer owes the feed messages: messages it
// delivered that the feed has not received, or pending ones it has not
// sent. Owing is not losing. On a busy connection (an overloaded streamer
// reads slower than the server sends) what the server delivered is still
// queued on the way, often ahead of the very answer to this check, and a
// consumer sends no more until the feed takes what it was given. Reopening
// then would throw away what is about to arrive and send it all again,
// over the same busy connection. So one check only takes note; the feed is
// reopened from where it stopped when the next check, a full StallCheck
// later, finds messages still owed and not one received in between, or
// when the consumer is gone. What that catches is a real loss the ordered
// consumer cannot see: a message the client library dropped (its buffer
// full) with no later one to reveal the gap.
func (f *feed) check() {
	if f.first != "" {
		if reopened, err := f.reset(); reopened || err != nil {
			return // an error: try again at the next check
		}
	}
	ctx, cancel := context.WithTimeout(f.ctx, f.s.cfg.CleanupTimeout)
	defer cancel()
	info, err := f.cons.Info(ctx)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		f.s.log.Warn("live feed lost its consumer; reopening it", "stream_id", f.streamID, "from_seq", f.next)
	case err != nil:
		return // no way to tell now: ask again after the next wait
	case info.NumPending == 0 && info.Delivered.Stream < f.next:
		f.owed = 0 // idle, and nothing owed
		return
	case f.owed != f.next:
		f.owed = f.next // owed: maybe on the way; look again next time
		return
	default:
		f.s.log.Warn("live feed stalled; reopening it", "stream_id", f.streamID, "pending", info.NumPending,
			"delivered_seq", info.Delivered.Stream, "from_seq", f.next)
	}
	_ = f.reopen(ctx) // on failure the old consumer stays, and the next check tries again
}

// reset reopens the feed from where it started when its consumer, made to
// deliver only new messages, was made again before the feed received any:
// nats.go makes an ordered consumer again with its first configuration
// until it has delivered something (after a reconnect, say), so the new
// one skipped what was stored in between. It reports whether it reopened
// the feed, and an error when it could not; either way the message in
// hand, if any, must not be used.
func (f *feed) reset() (bool, error) {
	if info := f.cons.CachedInfo(); info != nil && info.Name == f.first {
		return false, nil
	}
	f.s.log.Warn("live feed's consumer was made again before its first message; reopening it", "stream_id", f.streamID,
		"from_seq", f.next)
	ctx, cancel := context.WithTimeout(f.ctx, f.s.cfg.CleanupTimeout)
	defer cancel()
	if err := f.reopen(ctx); err != nil {
		return false, fmt.Errorf("reopen live feed after its consumer was made again: %w", err)
	}
	return true, nil
}

// reopen replaces the feed's consumer with one starting after the last
// message received. The old one is kept until the new one exists: if
// JetStream cannot create it now, the next check tries again.
func (f *feed) reopen(ctx context.Context) error {
	cons, it, err := f.s.openAt(ctx, f.filters, f.next)
	if err != nil {
		if f.ctx.Err() == nil {
			f.s.log.Warn("reopen live feed", "stream_id", f.streamID, "err", err)
		}
		return err
	}
	f.mu.Lock()
	old, oldIt := f.cons, f.it
	if f.ctx.Err() == nil {
		f.cons, f.it, f.owed, f.first = cons, it, 0, ""
	} else { // closed meanwhile: drop the new one instead
		old, oldIt = cons, it
		err = errFeedClosed
	}
	f.mu.Unlock()
	oldIt.Stop()
	if ci := old.CachedInfo(); ci != nil {
		f.s.deleteConsumer(ctx, ci.Name)
	}
	return err
}

func (f *feed) Close() {
	f.once.Do(func() {
		f.mu.Lock()
		f.cancel()
		cons, it := f.cons, f.it
		f.mu.Unlock()
		it.Stop()
		if info := cons.CachedInfo(); info != nil {
			f.s.deleteConsumer(f.ctx, info.Name)
		}
		if f.onClose != nil {
			f.onClose()
		}
	})
}

// deleteConsumer deletes a consumer, even when ctx is already cancelled:
// cleanup must outlive the client that caused it.
func (s *Store) deleteConsumer(ctx context.Context, name string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.CleanupTimeout)
	defer cancel()
	err := s.js.DeleteConsumer(ctx, contracts.StreamOutput, name)
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		s.log.Warn("delete consumer", "consumer", name, "err", err)
	}
}

// End returns the sequence of the last message stored in the output
// stream, as LastSeq, sharing the request with every caller asking
// meanwhile (see boundary): what a replay over NATS reads up to.
func (s *Store) End(ctx context.Context) (uint64, error) { return s.boundary(ctx) }
