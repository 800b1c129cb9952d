package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/streamer/internal/entry"
	"github.com/rdev-dev/rdev/services/streamer/internal/follow"
)

// ErrBusy is yielded by Replay when its turn to read storage did not come
// within Config.ReadWait: more clients are replaying than storage reads
// are allowed to run at once (Config.Reads). Nothing was lost; the caller
// keeps its client and replays again later (it wraps follow.ErrBusy, so
// follow waits for another turn, pinging the client meanwhile, however
// long the queue).
var ErrBusy = fmt.Errorf("too many replays waiting to read storage: %w", follow.ErrBusy)

// readWait bounds one direct-get batch; it returns as soon as the server
// sent the batch.
const readWait = 5 * time.Second

// replicasTTL is how long the store trusts the replica count it read
// from the output stream's info (see source.confirm).
const replicasTTL = 10 * time.Second

// Replay yields the entries of streamID stored after sequence after, up to
// until: it stops after the entry at until or when nothing more is stored
// up to it, and never yields one beyond (the filters are read at different
// times, so beyond until a filter's end says nothing about what another's
// later entries skip; follow's live feed starts after until). The caller
// knows until stored (a hub's boundary): every read this replay relies on
// for the end of a filter goes out after it began. It implements
// follow.History.
//
// It reads with batched JetStream direct gets (nats-server 2.11+, see
// direct), no consumer: a reconnect storm of thousands of clients must not create a
// consumer each (the server limits them per stream, and creating one is a
// request to the meta leader on a cluster). A stream's history is stored
// under three subject filters (contracts.StreamFilters); each is read in
// batches of Config.Batch from its own position and the three are merged
// in stream-sequence order, lazily: a filter is read again only once its
// batch has been yielded, so a replaying client holds at most three
// batches. Every batch waits for one of Config.Reads turns; a replay
// holds none while its caller writes to the client.
func (s *Store) Replay(ctx context.Context, streamID string, after, until uint64) iter.Seq2[entry.Entry, error] {
	return func(yield func(entry.Entry, error) bool) {
		for m, err := range s.ReplayStored(ctx, streamID, after, until) {
			if err != nil {
				yield(entry.Entry{}, err)
				return
			}
			e, err := entry.Parse(streamID, m.Subject, m.Seq, m.Data)
			if err != nil {
				s.log.Warn("undecodable message", "stream_id", streamID, "seq", m.Seq, "err", err)
				e.Kind = entry.Invalid
			}
			if !yield(e, nil) {
				return
			}
		}
	}
}

// Stored is one message of a stream as stored: what ReplayStored yields.
type Stored struct {
	Subject string
	Seq     uint64
	Data    []byte
}

// ReplayStored is Replay before decoding: the stored messages of
// streamID after sequence after, up to until, in stream order, read as
// Replay reads them (the same bounded storage reads). Replay over NATS
// (the streamer's replay service) sends them on unchanged.
func (s *Store) ReplayStored(ctx context.Context, streamID string, after, until uint64) iter.Seq2[Stored, error] {
	return func(yield func(Stored, error) bool) {
		fs := filters(streamID)
		srcs := make([]source, len(fs))
		since := s.clock.Add(1)
		for i, f := range fs {
			srcs[i] = source{s: s, filter: f, next: after + 1, since: since}
		}
		for {
			var best *source
			for i := range srcs {
				src := &srcs[i]
				for len(src.buf) == 0 && !src.done {
					if err := src.fill(ctx, until); err != nil {
						yield(Stored{}, fmt.Errorf("replay of %s: %w", streamID, err))
						return
					}
				}
				if len(src.buf) > 0 && (best == nil || src.buf[0].seq < best.buf[0].seq) {
					best = src
				}
			}
			if best == nil || best.buf[0].seq > until {
				return // nothing more stored up to until
			}
			m := best.buf[0]
			best.buf[0] = getMsg{} // the batch's array outlives the message
			best.buf = best.buf[1:]
			if !yield(Stored{Subject: m.subject, Seq: m.seq, Data: m.data}, nil) || m.seq >= until {
				return
			}
		}
	}
}

// source is one subject filter of a replay.
type source struct {
	s      *Store
	filter string
	next   uint64   // stream sequence to read from
	buf    []getMsg // read, not yet yielded
	done   bool     // nothing more stored
	// since is Store.clock when the replay began, after its caller knew
	// until was stored: a read whose request went out later (batch.sent
	// above since) was answered with every message of the filter up to
	// until (from a follower on a cluster, maybe not: see confirm).
	since uint64
}

// fill reads the next batch of the filter into buf, or marks it done.
func (src *source) fill(ctx context.Context, until uint64) error {
	if src.next > until {
		src.done = true
		return nil
	}
	r := src.s.read(ctx, src.filter, src.next)
	src.buf = append(src.buf, r.msgs...) // a copy: r.msgs may be shared
	if n := len(r.msgs); n > 0 {
		src.next = r.msgs[n-1].seq + 1
	}
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case r.err != nil:
		return r.err
	case r.more:
		return nil
	case r.sent < src.since:
		// Another replay's read, shared, that went out before this replay
		// began: messages stored since, up to until, may follow the end
		// it found. Read on from there rather than stop short (a client
		// rejoining its hub would skip them). This ends: a read found in
		// flight again either went out after this replay began or was
		// asked for before (a finite number of them), and each is gone
		// once read.
		return nil
	}
	// The server answering had nothing more.
	return src.confirm(ctx, until)
}

// batch is what one read of a filter got.
type batch struct {
	msgs []getMsg // in stream order; shared by every replay of the read
	more bool     // read on after the last of msgs
	err  error
	sent uint64 // Store.clock when the request went out (see source.since)
}

// flight is a read in progress, which replays of the same filter from the
// same sequence share.
type flight struct {
	done    chan struct{}
	b       batch
	waiters int // replays waiting for it besides its reader (tests wait on it); guarded by Store.flightsMu
}

// read reads a batch of filter from sequence seq. Replays asking for the
// same batch while it is being read share the read: clients of one stream
// reconnecting at once after a streamer restart cost one read, not one
// each. The read runs on its own time (ReadWait, then readWait), not the
// first caller's, so that one client leaving does not fail the others.
//
// A read shared may have gone out before the replay sharing it began: its
// messages are the filter's as far as they go, but the end of the filter
// it found is as of then (see fill).
func (s *Store) read(ctx context.Context, filter string, seq uint64) batch {
	key := filter + " " + strconv.FormatUint(seq, 10)
	s.flightsMu.Lock()
	f, shared := s.flights[key]
	if shared {
		f.waiters++
	} else {
		f = &flight{done: make(chan struct{})}
		s.flights[key] = f
	}
	s.flightsMu.Unlock()
	if shared {
		select {
		case <-f.done:
			return f.b
		case <-ctx.Done():
			return batch{err: ctx.Err()}
		}
	}
	f.b = s.readBatch(context.WithoutCancel(ctx), filter, seq)
	s.flightsMu.Lock()
	delete(s.flights, key)
	s.flightsMu.Unlock()
	close(f.done)
	return f.b
}

// errLost stops a batch whose messages skip one.
var errLost = errors.New("direct get lost a message")

func (s *Store) readBatch(ctx context.Context, filter string, seq uint64) batch {
	if err := s.acquire(ctx); err != nil {
		return batch{err: err}
	}
	defer s.release()
	rctx, cancel := context.WithTimeout(ctx, readWait)
	defer cancel()
	var (
		b       batch
		pending uint64 // after the last message read
	)
	b.sent = s.clock.Add(1)
	err := s.direct.batch(rctx, filter, seq, s.cfg.Batch, s.cfg.BatchBytes, func(m getMsg) error {
		// Each message of a batch counts one fewer pending: another count
		// means one was lost on the way; keep what came before it and
		// read on from there.
		if (len(b.msgs) > 0 && m.pending+1 != pending) || m.seq < seq {
			return errLost
		}
		b.msgs = append(b.msgs, m)
		pending = m.pending
		return nil
	})
	n := len(b.msgs)
	switch {
	case errors.Is(err, errNoMessages):
	case errors.Is(err, errLost) && n == 0:
		b.err = errors.New("direct get: batch lost its first message")
	case errors.Is(err, errLost), errors.Is(err, context.DeadlineExceeded) && n > 0:
		b.more = true // cut short: read on from the last message kept
	case errors.Is(err, context.DeadlineExceeded):
		b.err = errors.New("direct get: no answer within " + readWait.String())
	case err != nil:
		b.err = err
	default:
		b.more = pending > 0
	}
	return b
}

// confirm runs when a direct get found nothing more of the filter from
// src.next. On one server that is the truth. On a cluster any replica may
// answer a direct get, and a follower serves them while it is still
// catching up (from 90 % on, in nats-server 2.15) and for as long as it is
// cut off from the leader, so it may lack the newest messages, and a replay would end short of until, which the
// stream's live feed starts after: a gap. So the stream's leader, which
// has everything stored, is asked for the filter's next message; if it is
// at or before until the replay goes on from it.
func (src *source) confirm(ctx context.Context, until uint64) error {
	if src.next > until {
		src.done = true
		return nil
	}
	replicas, err := src.s.replicas(ctx)
	if err != nil {
		return err
	}
	if replicas <= 1 {
		src.done = true
		return nil
	}
	m, err := src.s.leaderNext(ctx, src.filter, src.next)
	if err != nil {
		return err
	}
	if m == nil || m.seq > until {
		src.done = true
		return nil
	}
	src.buf = append(src.buf, *m)
	src.next = m.seq + 1
	return nil
}

// acquire waits for a turn to read storage: at most Config.Reads reads
// run at once, the others wait in line (a channel's waiters are served in
// order), for at most Config.ReadWait.
func (s *Store) acquire(ctx context.Context) error {
	select {
	case s.reads <- struct{}{}:
		return nil
	default:
	}
	s.waiting.Add(1)
	defer s.waiting.Add(-1)
	t := time.NewTimer(s.cfg.ReadWait)
	defer t.Stop()
	select {
	case s.reads <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return ErrBusy
	}
}

func (s *Store) release() { <-s.reads }

// Waiting returns how many replays wait for a turn to read storage now.
func (s *Store) Waiting() int64 { return s.waiting.Load() }

// replicas returns the output stream's replica count, read again from the
// server after replicasTTL (a deployment scaled to three replicas in
// place). One caller reads it while the others wait: a storm of replays
// must not become a storm of stream info requests.
func (s *Store) replicas(ctx context.Context) (int, error) {
	s.refresh.Lock()
	defer s.refresh.Unlock()
	s.mu.Lock()
	n, at := s.replicasN, s.replicasAt
	s.mu.Unlock()
	if !at.IsZero() && time.Since(at) < replicasTTL {
		return n, nil
	}
	st, err := s.stream(ctx)
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream info %s: %w", contracts.StreamOutput, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replicasN, s.replicasAt = info.Config.Replicas, time.Now()
	return s.replicasN, nil
}

// leaderNext asks the output stream's leader (the JetStream API, not a
// direct get any replica may answer) for the first message of filter at or
// after seq. It returns nil when there is none.
//
// Every node hears the request, and only the first answer reaches the
// client (the API's answers pass a service import that forwards one per
// request). A replica that lost its leader answers at once, with
// errCodeClusterNotAvailable, often before the leader does (nats-server
// 2.15 delays that answer to a stream info request, not to a message
// get). That is not the leader's answer: leaderNext asks again, after a
// short pause, within readWait, and returns that error only if nothing
// else came.
func (s *Store) leaderNext(ctx context.Context, filter string, seq uint64) (*getMsg, error) {
	req, err := json.Marshal(struct {
		Seq     uint64 `json:"seq"`
		NextFor string `json:"next_by_subj"`
	}{seq, filter})
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, readWait)
	defer cancel()
	for pause := 10 * time.Millisecond; ; pause = min(2*pause, 250*time.Millisecond) {
		m, err := s.leaderAsk(rctx, req)
		if !errors.Is(err, errUnavailable) {
			if err != nil {
				return nil, fmt.Errorf("get next message of %s from the leader: %w", filter, err)
			}
			return m, nil
		}
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-rctx.Done():
			t.Stop()
			return nil, fmt.Errorf("get next message of %s from the leader: %w", filter, err)
		}
	}
}

// leaderAsk sends one message get to the output stream's leader and
// decodes the answer: the message, nil when there is none, or the error
// it carries.
func (s *Store) leaderAsk(ctx context.Context, req []byte) (*getMsg, error) {
	answers, done, err := s.direct.ask(s.apiSubject("STREAM.MSG.GET."+contracts.StreamOutput), req, 1)
	if err != nil {
		return nil, err
	}
	defer done()
	select {
	case reply := <-answers:
		return leaderAnswer(reply)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// errCodeClusterNotAvailable is the JetStream API's error code for
// "JetStream system temporarily unavailable" (JSClusterNotAvailErr).
const errCodeClusterNotAvailable = 10008

// errUnavailable marks an answer with errCodeClusterNotAvailable.
var errUnavailable = errors.New("JetStream system temporarily unavailable")

// leaderAnswer decodes an answer to a message get.
func leaderAnswer(reply *nats.Msg) (*getMsg, error) {
	if status := reply.Header.Get("Status"); status != "" && len(reply.Data) == 0 {
		if status == "503" {
			return nil, nats.ErrNoResponders
		}
		return nil, fmt.Errorf("status %s %s", status, reply.Header.Get("Description"))
	}
	var resp struct {
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
		Message *struct {
			Subject  string `json:"subject"`
			Sequence uint64 `json:"seq"`
			Data     []byte `json:"data"`
		} `json:"message"`
	}
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return nil, err
	}
	switch {
	case resp.Error != nil && resp.Error.ErrCode == int(jetstream.JSErrCodeMessageNotFound):
		return nil, nil
	case resp.Error != nil && resp.Error.ErrCode == errCodeClusterNotAvailable:
		return nil, fmt.Errorf("%w (%d)", errUnavailable, resp.Error.ErrCode)
	case resp.Error != nil:
		return nil, fmt.Errorf("%s (%d)", resp.Error.Description, resp.Error.ErrCode)
	case resp.Message == nil:
		return nil, errors.New("empty reply")
	}
	return &getMsg{subject: resp.Message.Subject, seq: resp.Message.Sequence, data: resp.Message.Data}, nil
}

// leaderAt confirms with the stream's leader that nothing is stored at
// seq, on a replicated stream (one server's direct get is the leader's
// answer). It returns the message when the leader has it after all.
func (s *Store) leaderAt(ctx context.Context, seq uint64) (*getMsg, error) {
	n, err := s.replicas(ctx)
	if err != nil || n <= 1 {
		return nil, err
	}
	// No filter: the message at seq exactly.
	m, err := s.leaderNext(ctx, "", seq)
	if m != nil && m.seq != seq {
		return nil, nil
	}
	return m, err
}

// apiSubject is the JetStream API subject of op under js's prefix or
// domain.
func (s *Store) apiSubject(op string) string {
	o := s.js.Options()
	switch {
	case o.APIPrefix != "":
		return strings.TrimSuffix(o.APIPrefix, ".") + "." + op
	case o.Domain != "":
		return "$JS." + o.Domain + ".API." + op
	}
	return "$JS.API." + op
}
