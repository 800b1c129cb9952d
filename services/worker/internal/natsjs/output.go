// Package natsjs is the worker's JetStream adapter: job consumers, the
// output line publisher, lifecycle events and job state.
package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// Output publishes output lines to their stream's subject.
//
// Lines are stored by compare-and-set on the subject: every publish says
// which stream sequence the stream's last stored line has
// (Nats-Expected-Last-Subject-Sequence), so JetStream refuses a line that
// does not follow the last one stored, whatever failed in between (a lost
// publish, a reconnect, a stream leader change, a node that came back).
// A lone line is one publish; lines that queue up behind it go as one
// batch: on a single-replica stream a fast batch (nats-server 2.14+),
// pipelined, only its first line checked against the last stored line and
// the server refusing any gap after it, so a busy command costs about what
// plain asynchronous publishes cost; on a replicated stream an atomic batch
// (see publishAtomic).
type Output struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	window  int
	timeout time.Duration
	linger  time.Duration

	mu         sync.Mutex
	stream     jetstream.Stream // cached once looked up
	replicated bool             // the stream has more than one replica
}

// NewOutput returns an Output buffering up to window unstored lines per
// stream (flow control: a writer blocks beyond it, and so does the
// command's pipe).
func NewOutput(nc *nats.Conn, js jetstream.JetStream, window int) *Output {
	if window <= 0 {
		window = 1024
	}
	return &Output{nc: nc, js: js, window: window, timeout: js.Options().DefaultTimeout, linger: DefaultLinger}
}

// DefaultLinger is how long a busy stream's writer gathers lines before
// its next publish (see LineWriter.gather).
const DefaultLinger = 5 * time.Millisecond

// SetLinger sets how long a busy stream's writer gathers lines before its
// next publish; 0 publishes whenever the last publish has ended. Call it
// before Open.
func (o *Output) SetLinger(d time.Duration) { o.linger = max(d, 0) }

// gatherMax is how many queued lines end a gathering at once.
const gatherMax = 256

func (o *Output) outputStream(ctx context.Context) (jetstream.Stream, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.stream == nil {
		s, err := o.js.Stream(ctx, contracts.StreamOutput)
		if err != nil {
			return nil, err
		}
		o.stream, o.replicated = s, s.CachedInfo().Config.Replicas > 1
	}
	return o.stream, nil
}

// isReplicated reports whether the output stream has replicas, as of the
// last look-up (which every writer's first resync or LastSeq makes).
func (o *Output) isReplicated() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.replicated
}

// position is a stream's last stored line: its Seq and its JetStream
// stream sequence (0, 0 when none is stored).
type position struct{ line, stored uint64 }

func (o *Output) last(ctx context.Context, project, streamID string) (position, error) {
	s, err := o.outputStream(ctx)
	if err != nil {
		return position{}, fmt.Errorf("output stream: %w", err)
	}
	p, err := lastOn(ctx, s, contracts.SubjectOutput(project, streamID))
	if err != nil || p.line > 0 {
		return p, err
	}
	// A stream begun before lines carried the project (a job retried
	// across the upgrade) continues its numbering; the compare-and-set
	// is on the new subject, which holds nothing yet (stored stays 0).
	p, err = lastOn(ctx, s, contracts.SubjectOutputLegacy(streamID))
	return position{line: p.line}, err
}

// lastOn returns the last line stored on subject, or the zero position.
func lastOn(ctx context.Context, s jetstream.Stream, subject string) (position, error) {
	m, err := s.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return position{}, nil
	}
	if err != nil {
		return position{}, fmt.Errorf("last line on %s: %w", subject, err)
	}
	var l contracts.OutputLine
	if err := json.Unmarshal(m.Data, &l); err != nil {
		return position{}, fmt.Errorf("decode last line on %s: %w", subject, err)
	}
	return position{line: l.Seq, stored: m.Sequence}, nil
}

// LastSeq returns the Seq of the last line stored for a project's
// stream, 0 if none.
func (o *Output) LastSeq(ctx context.Context, project, streamID string) (uint64, error) {
	p, err := o.last(ctx, project, streamID)
	return p.line, err
}

// Open returns a writer for one attempt of a job whose next line is
// firstSeq. A first line of 1 means the stream holds no line yet;
// otherwise the writer looks the last one up before its first publish.
func (o *Output) Open(job contracts.Job, attempt int, firstSeq uint64) *LineWriter {
	ctx, cancel := context.WithCancel(context.Background())
	w := &LineWriter{
		o:       o,
		subj:    contracts.SubjectOutput(job.Project, job.StreamID),
		project: job.Project,
		base:    contracts.OutputLine{V: contracts.OutputLineVersion, StreamID: job.StreamID, JobID: job.ID, Attempt: attempt},
		seq:     firstSeq - 1,
		stored:  firstSeq - 1,
		known:   firstSeq <= 1,
		wake:    make(chan struct{}, 1),
		changed: make(chan struct{}),
		stop:    cancel,
		done:    make(chan struct{}),
	}
	go w.flush(ctx)
	return w
}

// ErrOutputLost is returned by LineWriter.Close when JetStream lost lines
// it had acknowledged (a single server that died before writing them
// out) and they were no longer held to be sent again.
var ErrOutputLost = errors.New("output lines lost by the server")

// LineWriter stores one attempt's lines in Seq order, exactly once: a
// line counts as stored only when JetStream acknowledged the publish that
// carried it, and after any failure the writer asks JetStream for the last
// stored line and sends again from the one after it. Safe for concurrent
// use (stdout and stderr).
type LineWriter struct {
	o       *Output
	subj    string
	project string
	base    contracts.OutputLine

	mu      sync.Mutex
	seq     uint64        // last Seq assigned
	stored  uint64        // Seq of the last line JetStream acknowledged
	last    uint64        // stream sequence of that line; valid when known
	known   bool          // last is known
	queue   []*nats.Msg   // lines after stored, in Seq order
	sent    []*nats.Msg   // the latest acknowledged lines, to send again if the server lost them
	lost    uint64        // lines the server lost that could not be sent again
	err     error         // why the writer gave up; set once
	wake    chan struct{} // tells flush there is work
	closing bool          // Close was called: publish what is queued at once
	changed chan struct{} // closed and replaced whenever stored or err moves
	stop    context.CancelFunc
	done    chan struct{} // closed when flush returns
}

// Line queues one line for storing; it blocks while the window of
// unstored lines is full. data is copied.
func (w *LineWriter) Line(ctx context.Context, fd contracts.FD, data []byte, partial bool) error {
	w.mu.Lock()
	for len(w.queue) >= w.o.window && w.err == nil {
		ch := w.changed
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		w.mu.Lock()
	}
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	w.seq++
	l := w.base
	l.Seq, l.FD, l.Partial, l.Time = w.seq, fd, partial, time.Now().UTC()
	if utf8.Valid(data) {
		l.Text = string(data)
	} else {
		l.Text = strings.ToValidUTF8(string(data), "\uFFFD")
		l.Raw = append([]byte(nil), data...)
	}
	w.queue = append(w.queue, &nats.Msg{Subject: w.subj, Data: appendLine(make([]byte, 0, 192+len(l.Text)+len(l.Raw)*2), &l)})
	w.poke()
	return nil
}

// Close waits until every line is stored and returns the Seq of the last
// one. It returns ErrOutputLost (with that Seq) when lines were lost, and
// any other error when the lines could not be stored before ctx ended or
// the connection closed; the Seq is then what is stored.
func (w *LineWriter) Close(ctx context.Context) (uint64, error) {
	w.mu.Lock()
	w.closing = true
	w.poke()
	for len(w.queue) > 0 && w.err == nil {
		ch := w.changed
		w.mu.Unlock()
		select {
		case <-ch:
			w.mu.Lock()
		case <-ctx.Done():
			w.mu.Lock()
			w.fail(context.Cause(ctx))
		}
	}
	stored, err, lost := w.stored, w.err, w.lost
	w.mu.Unlock()
	w.stop()
	<-w.done
	if err == nil && lost > 0 {
		err = fmt.Errorf("%w: %d of %d", ErrOutputLost, lost, stored)
	}
	return stored, err
}

// poke wakes flush. Called with mu held.
func (w *LineWriter) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// moved tells waiters that stored or err changed. Called with mu held.
func (w *LineWriter) moved() {
	close(w.changed)
	w.changed = make(chan struct{})
}

// fail records why the writer gives up. Called with mu held.
func (w *LineWriter) fail(err error) {
	if w.err == nil {
		w.err = err
		w.moved()
	}
}

// flush stores queued lines, one publish at a time, until stopped.
func (w *LineWriter) flush(ctx context.Context) {
	defer close(w.done)
	backoff := time.Duration(0)
	var began time.Time // the last publish's start
	for {
		w.mu.Lock()
		idle := len(w.queue) == 0 || w.err != nil
		w.mu.Unlock()
		if idle {
			select {
			case <-w.wake:
				continue
			case <-ctx.Done():
				return
			}
		}
		if backoff > 0 {
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
		}
		if !w.gather(ctx, began) {
			return
		}
		began = time.Now()
		err := w.publish(ctx)
		switch {
		case err == nil:
			backoff = 0
		case w.o.nc.IsClosed():
			// A closed connection never comes back (the worker is
			// stopping): retrying would hold the job forever.
			w.mu.Lock()
			w.fail(fmt.Errorf("store output: %w", nats.ErrConnectionClosed))
			w.mu.Unlock()
		case permanent(err):
			w.mu.Lock()
			w.fail(fmt.Errorf("store output: %w", err))
			w.mu.Unlock()
		case wrongLast(err):
			// Someone else's view of the stream was newer: look again now.
			backoff = 0
		default:
			backoff = min(max(2*backoff, 50*time.Millisecond), 2*time.Second)
		}
	}
}

// gather lets more lines join the next publish while the stream is busy:
// when the last publish began less than the linger ago, it waits until
// the linger has passed since then, gatherMax lines are queued or the
// writer is closing. A command printing a line a millisecond cost a
// publish and its round trip per line, in the worker and in the server,
// about twenty times a batched line's CPU; gathered, a few lines share
// one. A line after a quiet spell is published at once, so a command's
// first line is not delayed. It returns false once ctx ends.
func (w *LineWriter) gather(ctx context.Context, began time.Time) bool {
	if w.o.linger <= 0 || began.IsZero() {
		return true
	}
	until := began.Add(w.o.linger)
	for {
		wait := time.Until(until)
		w.mu.Lock()
		enough := len(w.queue) >= gatherMax || w.closing || w.err != nil
		w.mu.Unlock()
		if wait <= 0 || enough {
			return true
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
			return true
		case <-w.wake: // a line came, or Close: look again
			t.Stop()
		case <-ctx.Done():
			t.Stop()
			return false
		}
	}
}

// publish stores queued lines. On an error the outcome is unknown: the
// next call looks up what is stored before sending again.
func (w *LineWriter) publish(ctx context.Context) error {
	w.mu.Lock()
	known, last, queued := w.known, w.last, len(w.queue)
	w.mu.Unlock()
	if !known {
		return w.resync(ctx)
	}
	if _, err := w.o.outputStream(ctx); err != nil { // how many replicas it has
		return err
	}
	switch {
	case queued == 1:
		return w.publishOne(ctx, last)
	case w.o.isReplicated():
		return w.publishAtomic(ctx, last)
	default:
		return w.publishBatch(ctx, last)
	}
}

// maxAtomic is the most lines one atomic batch carries; the server's
// default limit is 1,000.
const maxAtomic = 1000

// publishAtomic stores up to maxAtomic queued lines as one atomic batch
// checked against the stream's last line. A replicated stream gets these
// rather than fast batches: a fast batch interrupted by a leader change was
// seen to store its later lines after a gap (TestLineWriterR3LeaderLoss),
// while an atomic batch is stored whole or not at all. One batch is in
// flight per stream, so this costs about twice what fast batches cost.
func (w *LineWriter) publishAtomic(ctx context.Context, last uint64) error {
	w.mu.Lock()
	batch := append([]*nats.Msg(nil), w.queue[:min(len(w.queue), maxAtomic)]...)
	w.mu.Unlock()
	first := *batch[0]
	first.Header = nats.Header{jetstream.ExpectedLastSubjSeqHeader: []string{strconv.FormatUint(last, 10)}}
	batch[0] = &first
	pctx, cancel := context.WithTimeout(ctx, w.o.timeout)
	defer cancel()
	ack, err := jetstreamext.PublishMsgBatch(pctx, w.o.js, batch,
		jetstreamext.BatchFlowControl{AckFirst: false, AckTimeout: w.o.timeout})
	if err != nil {
		w.unknown()
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.acked(len(batch))
	w.last = ack.Sequence
	return nil
}

// publishOne stores one line: a lone line (a command printing now and
// then) costs one round trip.
func (w *LineWriter) publishOne(ctx context.Context, last uint64) error {
	w.mu.Lock()
	m := *w.queue[0]
	w.mu.Unlock()
	m.Header = nats.Header{jetstream.ExpectedLastSubjSeqHeader: []string{strconv.FormatUint(last, 10)}}
	pctx, cancel := context.WithTimeout(ctx, w.o.timeout)
	defer cancel()
	ack, err := w.o.js.PublishMsg(pctx, &m)
	if err != nil {
		w.unknown()
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.acked(1)
	w.last = ack.Sequence
	return nil
}

// publishBatch streams queued lines as one fast batch until the queue is
// empty, sending the last one as the batch's commit (single-replica
// streams, see publishAtomic). Only its first line is checked against the
// stream's last line; after it, the server refuses any gap in the batch
// (gap mode fail), so what it stores is always a prefix of what was sent,
// while the lines are pipelined under the server's flow control. Committing
// with a line rather than closing the batch afterwards keeps the batch's
// empty end-of-batch message off the subject, where live subscribers
// would receive it.
func (w *LineWriter) publishBatch(ctx context.Context, last uint64) error {
	fp, err := jetstreamext.NewFastPublisher(w.o.js, jetstreamext.FastPublishFlowControl{AckTimeout: w.o.timeout})
	if err != nil {
		return err
	}
	fail := func(err error) error {
		w.unknown()
		if !fp.IsClosed() {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.o.timeout)
			defer cancel()
			_, _ = fp.Close(cctx) // ends the batch on the server; the outcome is looked up anyway
		}
		return err
	}
	// inFlight: lines at the queue's head sent in this batch but not
	// acknowledged; acked: acknowledged so far. publish calls this with
	// at least two lines queued, and a line is only the last one queued
	// when it is committed, so queue[inFlight] always exists.
	var inFlight, acked uint64
	for first := true; ctx.Err() == nil; first = false {
		w.mu.Lock()
		m := w.queue[inFlight]
		final := inFlight == uint64(len(w.queue))-1
		w.mu.Unlock()
		var opts []jetstreamext.BatchMsgOpt
		if first {
			opts = append(opts, jetstreamext.WithBatchExpectLastSequencePerSubject(last))
		}
		if final {
			cctx, cancel := context.WithTimeout(ctx, w.o.timeout)
			ack, err := fp.CommitMsg(cctx, m, opts...)
			cancel()
			if err != nil {
				return fail(err)
			}
			w.mu.Lock()
			defer w.mu.Unlock()
			w.acked(int(inFlight + 1))
			w.last = ack.Sequence
			return nil
		}
		ack, err := fp.AddMsg(m, opts...)
		if err != nil {
			return fail(err)
		}
		inFlight++
		if ack.AckSequence > acked {
			n := ack.AckSequence - acked
			w.mu.Lock()
			w.acked(int(n))
			w.mu.Unlock()
			inFlight -= n
			acked = ack.AckSequence
		}
	}
	// Stopped mid-batch: end it with what was sent (fail looks the
	// outcome up later when this cannot).
	cctx, cancel := context.WithTimeout(ctx, w.o.timeout)
	defer cancel()
	ack, err := fp.Close(cctx)
	if err != nil {
		return fail(err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.acked(int(inFlight))
	w.last = ack.Sequence
	return nil
}

// acked moves the first n queued lines to the stored ones. Called with mu
// held.
func (w *LineWriter) acked(n int) {
	w.keepSent(w.queue[:n])
	clear(w.queue[:n])
	w.queue = w.queue[n:]
	w.stored += uint64(n)
	w.moved()
}

// unknown marks the last stored line as unknown after a failed publish.
func (w *LineWriter) unknown() {
	w.mu.Lock()
	w.known = false
	w.mu.Unlock()
}

// keepSent remembers the latest acknowledged lines, up to the window, so
// lines a restarted single server lost can be sent again. Called with mu
// held.
func (w *LineWriter) keepSent(batch []*nats.Msg) {
	w.sent = append(w.sent, batch...)
	if drop := len(w.sent) - w.o.window; drop > 0 {
		clear(w.sent[:drop])
		w.sent = w.sent[drop:]
	}
}

// resync asks JetStream for the last stored line and lines the queue up
// behind it: lines it already has leave the queue, and lines it
// acknowledged but has lost (a single server restarted) are queued again.
func (w *LineWriter) resync(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, w.o.timeout)
	defer cancel()
	p, err := w.o.last(pctx, w.project, w.base.StreamID)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case p.line >= w.stored:
		// Part of what was in flight may have been stored after all.
		n := min(int(p.line-w.stored), len(w.queue))
		w.keepSent(w.queue[:n])
		clear(w.queue[:n])
		w.queue = w.queue[n:]
		w.stored = p.line
	default:
		// The server lost acknowledged lines: send again those still held.
		missing := w.stored - p.line
		held := min(missing, uint64(len(w.sent)))
		w.lost += missing - held
		w.queue = append(append([]*nats.Msg(nil), w.sent[len(w.sent)-int(held):]...), w.queue...)
		w.sent = w.sent[:len(w.sent)-int(held)]
		w.stored = p.line + (missing - held)
	}
	w.last, w.known = p.stored, true
	w.moved()
	return nil
}

// wrongLast reports a refused compare-and-set: the stream's last line is
// not the one the writer expected.
func wrongLast(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// permanent reports a refusal that sending again cannot change: a line
// larger than the stream allows, or batching disabled on the stream.
func permanent(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode {
	case jetstream.JSErrCodeStreamMessageExceedsMaximum, jetstreamext.JSErrCodeBatchPublishNotEnabled, jetstreamext.JSErrCodeFastBatchNotEnabled:
		return true
	}
	return false
}
