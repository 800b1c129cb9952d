// Package natsjs reads rdev streams from NATS JetStream: stream references
// from the state bucket, single messages by sequence, replays through
// short-lived consumers and live feeds through ordered consumers.
package natsjs

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
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
	// Batch is how many messages one replay fetch asks for. It bounds the
	// memory a replaying client holds.
	Batch int
	// Idle is how long the server keeps a consumer nobody pulls from. The
	// store deletes its consumers itself; Idle only cleans up after a
	// process that died. It must exceed the longest pause between two
	// fetches of a replay (a write blocked on a slow client).
	Idle time.Duration
	// CleanupTimeout bounds deleting a consumer.
	CleanupTimeout time.Duration
	// StallCheck is how long a live feed may wait for a message before it
	// asks JetStream whether its consumer owes it messages (see
	// feed.check). It exceeds the ordered consumer's own missing-heartbeat
	// window (two heartbeats, 10s), so that the client library's recovery
	// acts first. Default 15s.
	StallCheck time.Duration
}

// Store reads streams from JetStream. It is safe for concurrent use.
type Store struct {
	js    jetstream.JetStream
	state *state.Store
	cfg   Config
	log   *slog.Logger

	mu     sync.Mutex
	output jetstream.Stream // cached handle of contracts.StreamOutput
}

// New returns a store reading output from js and stream references from
// kv (the contracts.BucketState bucket).
func New(js jetstream.JetStream, kv jetstream.KeyValue, cfg Config, log *slog.Logger) *Store {
	if cfg.Batch <= 0 {
		cfg.Batch = 128
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
	return &Store{js: js, state: state.New(kv), cfg: cfg, log: log}
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
	msg, err := st.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return entry.Entry{}, ErrNoMessage
	}
	if err != nil {
		return entry.Entry{}, fmt.Errorf("get message %d: %w", seq, err)
	}
	e, err := entry.Parse(streamID, msg.Subject, msg.Sequence, msg.Data)
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

// Open starts a live feed of streamID through one ordered consumer that
// begins right after the current end of the output stream. It implements
// hub.Source.
func (s *Store) Open(ctx context.Context, streamID string) (hub.Feed, uint64, error) {
	last, err := s.LastSeq(ctx)
	if err != nil {
		return nil, 0, err
	}
	cons, it, err := s.openAt(ctx, streamID, last+1)
	if err != nil {
		return nil, 0, err
	}
	// The feed outlives ctx, which only bounds opening it.
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	return &feed{s: s, streamID: streamID, cons: cons, it: it, ctx: fctx, cancel: cancel, next: last + 1}, last, nil
}

// openAt starts an ordered consumer of streamID's subjects at stream
// sequence start.
func (s *Store) openAt(ctx context.Context, streamID string, start uint64) (jetstream.Consumer, jetstream.MessagesContext, error) {
	cons, err := s.js.OrderedConsumer(ctx, contracts.StreamOutput, jetstream.OrderedConsumerConfig{
		FilterSubjects:    filters(streamID),
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
	streamID string
	ctx      context.Context // cancelled by Close, to unblock Next
	cancel   context.CancelFunc
	once     sync.Once
	next     uint64 // stream sequence after the last message delivered
	owed     uint64 // next when a check last found messages owed; 0 for none

	// cons and it are replaced by Next's goroutine (reopen) and read by
	// Close's; Next's goroutine reads them without the lock.
	mu   sync.Mutex
	cons jetstream.Consumer
	it   jetstream.MessagesContext
}

func (f *feed) Next() (entry.Entry, error) {
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
			return entry.Entry{}, err
		}
		f.check()
	}
	md, err := msg.Metadata()
	if err != nil {
		return entry.Entry{}, fmt.Errorf("message metadata: %w", err)
	}
	f.next = md.Sequence.Stream + 1
	e, err := entry.Parse(f.streamID, msg.Subject(), md.Sequence.Stream, msg.Data())
	if err != nil {
		f.s.log.Warn("undecodable message", "stream_id", f.streamID, "seq", md.Sequence.Stream, "err", err)
		e.Kind = entry.Invalid
	}
	return e, nil
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
	f.reopen(ctx)
}

// reopen replaces the feed's consumer with one starting after the last
// message received. The old one is kept until the new one exists: if
// JetStream cannot create it now, the next check tries again.
func (f *feed) reopen(ctx context.Context) {
	cons, it, err := f.s.openAt(ctx, f.streamID, f.next)
	if err != nil {
		if f.ctx.Err() == nil {
			f.s.log.Warn("reopen live feed", "stream_id", f.streamID, "err", err)
		}
		return
	}
	f.mu.Lock()
	old, oldIt := f.cons, f.it
	if f.ctx.Err() == nil {
		f.cons, f.it, f.owed = cons, it, 0
	} else { // closed meanwhile: drop the new one instead
		old, oldIt = cons, it
	}
	f.mu.Unlock()
	oldIt.Stop()
	if ci := old.CachedInfo(); ci != nil {
		f.s.deleteConsumer(ctx, ci.Name)
	}
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

// maxRestarts bounds how often one replay recreates its consumer without
// making progress.
const maxRestarts = 3

// Replay yields the entries of streamID stored after sequence after, up to
// the first at or beyond until, or until nothing more is stored. It reads
// through its own ephemeral consumer in batches, which it deletes when the
// iteration ends. It implements follow.History.
//
// The consumer is a plain ephemeral pull consumer rather than
// jetstream.OrderedConsumer because an ordered consumer used with Fetch
// recreates its server-side consumer on every batch. Order is checked the
// same way: a gap in the consumer sequence restarts from the last entry
// yielded.
func (s *Store) Replay(ctx context.Context, streamID string, after, until uint64) iter.Seq2[entry.Entry, error] {
	return func(yield func(entry.Entry, error) bool) {
		r := replay{s: s, streamID: streamID, next: after + 1, until: until}
		defer r.close(ctx)
		if err := r.run(ctx, yield); err != nil {
			yield(entry.Entry{}, err)
		}
	}
}

type replay struct {
	s        *Store
	streamID string
	next     uint64 // stream sequence to resume from
	until    uint64
	cons     jetstream.Consumer
	restarts int
}

// errStop ends a replay that has nothing more to yield.
var errStop = errors.New("replay stopped")

func (r *replay) run(ctx context.Context, yield func(entry.Entry, error) bool) error {
	for {
		pending, err := r.open(ctx)
		if err != nil {
			return err
		}
		if pending == 0 {
			return nil
		}
		err = r.drain(ctx, pending, yield)
		if errors.Is(err, errStop) {
			return nil
		}
		if err != nil {
			return err
		}
		// A gap: the consumer was recreated at r.next; go on.
	}
}

// open (re)creates the consumer at r.next and returns how many messages it
// has to deliver.
func (r *replay) open(ctx context.Context) (uint64, error) {
	r.close(ctx)
	r.restarts++
	if r.restarts > maxRestarts {
		return 0, fmt.Errorf("replay of %s: consumer lost order %d times", r.streamID, maxRestarts)
	}
	cons, err := r.s.js.CreateConsumer(ctx, contracts.StreamOutput, jetstream.ConsumerConfig{
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       r.next,
		AckPolicy:         jetstream.AckNonePolicy,
		FilterSubjects:    filters(r.streamID),
		InactiveThreshold: r.s.cfg.Idle,
		MemoryStorage:     true,
		Replicas:          1,
	})
	if err != nil {
		return 0, fmt.Errorf("replay consumer: %w", err)
	}
	r.cons = cons
	return cons.CachedInfo().NumPending, nil
}

// drain fetches and yields batches until done (errStop), a gap (nil: the
// caller reopens) or an error. pending is what the consumer has to
// deliver; each fetch asks for no more than that, so it returns as soon as
// they arrive. (A no-wait fetch is not enough: under load the server can
// answer one before it has the messages ready, and an empty answer would
// end the replay early, skipping entries.)
func (r *replay) drain(ctx context.Context, pending uint64, yield func(entry.Entry, error) bool) error {
	var consumerSeq uint64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		batch, err := r.cons.Fetch(int(min(pending, uint64(r.s.cfg.Batch))), jetstream.FetchMaxWait(fetchWait))
		if err != nil {
			return fmt.Errorf("fetch: %w", err)
		}
		n := 0
		for msg := range batch.Messages() {
			md, err := msg.Metadata()
			if err != nil {
				return fmt.Errorf("message metadata: %w", err)
			}
			if md.Sequence.Consumer != consumerSeq+1 {
				// A lost delivery; the rest of the batch drains into the
				// fetch's own buffer and is dropped with it.
				return nil
			}
			consumerSeq = md.Sequence.Consumer
			r.restarts = 0
			n++
			e, err := entry.Parse(r.streamID, msg.Subject(), md.Sequence.Stream, msg.Data())
			if err != nil {
				r.s.log.Warn("undecodable message", "stream_id", r.streamID, "seq", md.Sequence.Stream, "err", err)
				e.Kind = entry.Invalid
			}
			r.next = e.StreamSeq + 1
			pending = md.NumPending
			if !yield(e, nil) || e.StreamSeq >= r.until || pending == 0 {
				return errStop
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return fmt.Errorf("fetch: %w", err)
		}
		if n == 0 {
			// Nothing within fetchWait: either the pending messages
			// expired, or the consumer lost them; ask the server.
			info, err := r.cons.Info(ctx)
			if err != nil {
				return fmt.Errorf("replay consumer info: %w", err)
			}
			if info.NumPending == 0 {
				return errStop
			}
			return nil // reopen at r.next
		}
	}
}

// fetchWait bounds one replay fetch; it returns sooner once the messages
// asked for arrive.
const fetchWait = 5 * time.Second

func (r *replay) close(ctx context.Context) {
	if r.cons == nil {
		return
	}
	r.s.deleteConsumer(ctx, r.cons.CachedInfo().Name)
	r.cons = nil
}
