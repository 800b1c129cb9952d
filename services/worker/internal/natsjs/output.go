// Package natsjs is the worker's JetStream adapter: job consumers, the
// output line publisher, lifecycle events and job state.
package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// Output publishes output lines to their stream's subject.
//
// The connection behind js must be made with nats.ReconnectBufSize(-1):
// then a publish during a disconnect fails instead of being buffered, and
// what the server stored of a stream is always a prefix of what was sent,
// which is what lets a LineWriter recover without reordering lines.
type Output struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	window int

	mu     sync.Mutex
	stream jetstream.Stream // cached once looked up
}

// NewOutput returns an Output keeping up to window publishes unacknowledged
// per stream (flow control: a writer blocks beyond it).
func NewOutput(nc *nats.Conn, js jetstream.JetStream, window int) *Output {
	if window <= 0 {
		window = 1024
	}
	return &Output{nc: nc, js: js, window: window}
}

func (o *Output) outputStream(ctx context.Context) (jetstream.Stream, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.stream == nil {
		s, err := o.js.Stream(ctx, contracts.StreamOutput)
		if err != nil {
			return nil, err
		}
		o.stream = s
	}
	return o.stream, nil
}

// LastSeq returns the Seq of the last line stored for a stream, 0 if none.
func (o *Output) LastSeq(ctx context.Context, streamID string) (uint64, error) {
	s, err := o.outputStream(ctx)
	if err != nil {
		return 0, fmt.Errorf("output stream: %w", err)
	}
	m, err := s.GetLastMsgForSubject(ctx, contracts.SubjectOutput(streamID))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("last line of %s: %w", streamID, err)
	}
	var l contracts.OutputLine
	if err := json.Unmarshal(m.Data, &l); err != nil {
		return 0, fmt.Errorf("decode last line of %s: %w", streamID, err)
	}
	return l.Seq, nil
}

// Open returns a writer for one attempt of a job whose next line is
// firstSeq.
func (o *Output) Open(job contracts.Job, attempt int, firstSeq uint64) *LineWriter {
	return &LineWriter{
		o:    o,
		subj: contracts.SubjectOutput(job.StreamID),
		base: contracts.OutputLine{V: contracts.Version, StreamID: job.StreamID, JobID: job.ID, Attempt: attempt},
		seq:  firstSeq - 1,
		gen:  o.nc.Stats().Reconnects,
	}
}

type pending struct {
	seq      uint64
	msg      *nats.Msg
	fut      jetstream.PubAckFuture // nil when the publish failed at once
	resolved bool
	failed   bool
}

// resolve records the outcome of p's publish, waiting for it when block is
// set. A future's channels deliver once, so the outcome is kept here.
func (p *pending) resolve(ctx context.Context, block bool) error {
	if p.resolved {
		return nil
	}
	if p.fut == nil {
		p.resolved, p.failed = true, true
		return nil
	}
	var done <-chan struct{}
	if block {
		done = ctx.Done()
	} else {
		closed := make(chan struct{})
		close(closed)
		done = closed
	}
	select {
	case <-p.fut.Ok():
		p.resolved = true
	case <-p.fut.Err(): //nolint:errcheck // only the outcome matters: recovery asks JetStream what it stored
		p.resolved, p.failed = true, true
	case <-done:
		if block {
			return context.Cause(ctx)
		}
	}
	return nil
}

// LineWriter publishes one attempt's lines in Seq order, pipelined: up to
// the window unacknowledged. Safe for concurrent use (stdout and stderr).
//
// When a publish fails or the connection reconnects, it waits for every
// outstanding acknowledgement, asks JetStream for the last stored Seq and
// publishes again what follows it, so no line is lost and none stored out
// of order. A line whose acknowledgement timed out but that was stored
// anyway can appear twice; readers drop a Seq they have seen.
type LineWriter struct {
	o    *Output
	subj string
	base contracts.OutputLine

	mu  sync.Mutex
	seq uint64 // last Seq assigned
	gen uint64 // reconnect count the window was published under
	win []pending
}

// Line publishes one line. data is copied.
func (w *LineWriter) Line(ctx context.Context, fd contracts.FD, data []byte, partial bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seq++
	l := w.base
	l.Seq, l.FD, l.Partial, l.Time = w.seq, fd, partial, time.Now().UTC()
	if utf8.Valid(data) {
		l.Text = string(data)
	} else {
		l.Text = strings.ToValidUTF8(string(data), "\uFFFD")
		l.Raw = append([]byte(nil), data...)
	}
	msg := &nats.Msg{Subject: w.subj, Data: appendLine(make([]byte, 0, 192+len(l.Text)+len(l.Raw)*2), &l)}

	// Acks are collected in batches: a failed publish is noticed at the
	// latest a batch later, and recovery republishes from the last stored
	// line whenever it is noticed.
	if full := len(w.win) >= w.o.window; full || len(w.win)%64 == 0 {
		if err := w.settle(ctx, full); err != nil {
			return err
		}
	}
	w.win = append(w.win, pending{seq: w.seq, msg: msg})
	if w.o.nc.Stats().Reconnects != w.gen {
		return w.recover(ctx)
	}
	// No expected-stream header: it costs a header parse per line on both
	// sides, and a missing stream fails the publish with no responders.
	fut, err := w.o.js.PublishMsgAsync(msg)
	if err != nil {
		return w.recover(ctx)
	}
	w.win[len(w.win)-1].fut = fut
	return nil
}

// Close waits until every line is stored and returns the last Seq.
func (w *LineWriter) Close(ctx context.Context) (uint64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(w.win) > 0 {
		if err := w.settle(ctx, true); err != nil {
			return 0, err
		}
	}
	return w.seq, nil
}

// settle drops acknowledged publishes from the front of the window; with
// wait it blocks for at least one. A failure triggers recover.
func (w *LineWriter) settle(ctx context.Context, wait bool) error {
	for len(w.win) > 0 {
		p := &w.win[0]
		if err := p.resolve(ctx, wait); err != nil {
			return err
		}
		if !p.resolved {
			return nil
		}
		if p.failed {
			return w.recover(ctx)
		}
		wait = false
		w.win[0] = pending{}
		w.win = w.win[1:]
	}
	return nil
}

// recover republishes, in order, every line of the window JetStream has
// not stored. It retries until it succeeds or ctx ends.
func (w *LineWriter) recover(ctx context.Context) error {
	backoff := 50 * time.Millisecond
	for {
		for i := range w.win {
			if err := w.win[i].resolve(ctx, true); err != nil {
				return err
			}
		}
		if err := w.republish(ctx); err == nil {
			return nil
		}
		if w.o.nc.IsClosed() {
			// A closed connection never comes back (the worker is
			// stopping): retrying would hold the job forever.
			return nats.ErrConnectionClosed
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func (w *LineWriter) republish(ctx context.Context) error {
	gen := w.o.nc.Stats().Reconnects
	last, err := w.o.LastSeq(ctx, w.base.StreamID)
	if err != nil {
		return err
	}
	keep := w.win[:0]
	for _, p := range w.win {
		if p.seq > last {
			keep = append(keep, pending{seq: p.seq, msg: p.msg})
		}
	}
	w.win = keep
	w.gen = gen
	for i := range w.win {
		fut, err := w.o.js.PublishMsgAsync(w.win[i].msg)
		if err != nil {
			// Unpublished entries stay (fut nil) and count as failed.
			return err
		}
		w.win[i].fut = fut
	}
	return nil
}
