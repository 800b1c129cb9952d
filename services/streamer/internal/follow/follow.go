// Package follow delivers one stream to one client without gap or duplicate.
// It joins the stream's hub first, so nothing stored from then on can be
// missed, replays from history what the client lacks up to the hub's
// boundary, then forwards live entries. When the hub cuts the client loose
// for being slow, it goes back to replaying from the client's cursor, so a
// slow client costs storage reads, never more memory than its hub queue's
// bound, nor other clients' time. When the hub or the history fails (NATS
// reconnecting, a JetStream request timing out under load), it waits,
// keeping the client's connection alive, and joins again from the cursor.
package follow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/streamer/internal/entry"
	"github.com/rdev-dev/rdev/services/streamer/internal/freshstack"
	"github.com/rdev-dev/rdev/services/streamer/internal/hub"
)

// History reads the stored entries of a stream.
type History interface {
	// Replay yields, in storage order, the entries of streamID stored after
	// sequence after. It stops once it yielded an entry at or beyond until,
	// or when nothing more is stored. An error is yielded with a zero Entry
	// and ends the iteration. Breaking out of the loop releases everything
	// the replay holds.
	//
	// A history that lets only so many replays read at once yields an
	// error wrapping ErrBusy when a replay's turn did not come soon: Run
	// waits and replays again, keeping the client, however long the queue.
	Replay(ctx context.Context, streamID string, after, until uint64) iter.Seq2[entry.Entry, error]
}

// ErrBusy marks a replay or a feed that is waiting for its turn to read
// storage, not failing: it does not count against Retry.For. It is
// hub.ErrBusy, which a hub's Join returns while its feed waits to open.
var ErrBusy = hub.ErrBusy

// Sink writes to one client. It is used from one goroutine.
type Sink interface {
	// Send writes one entry; it may stay buffered until Flush.
	Send(entry.Entry) error
	// Flush pushes everything written so far to the client.
	Flush() error
	// Ping writes a keep-alive and flushes it.
	Ping() error
}

// Cursor is how far a client got.
type Cursor struct {
	// StreamSeq is the stream sequence of the last entry handled: sent,
	// or skipped as a duplicate or undecodable. Everything after it is
	// owed.
	StreamSeq uint64
	// Line is the highest output line number the client has.
	Line uint64
}

// Follower runs clients' deliveries. It is safe for concurrent use.
type Follower struct {
	// Hubs supplies live entries.
	Hubs *hub.Hubs
	// History supplies stored entries.
	History History
	// Heartbeat is the longest a client waits without Sink.Ping being
	// called. All clients share one timer, so a client's first ping may
	// come sooner.
	Heartbeat time.Duration
	// Quit, when done, ends every Run with its error, as the end of Run's
	// own context does. Nil never ends. One context for all clients saves
	// each a context of its own joining the two for as long as it follows.
	Quit context.Context
	// Retry says how Run rides out failures of the hubs and the history.
	// The zero value returns the first failure.
	Retry Retry
	// Log receives a warning when a client's stream starts failing; nil
	// logs nothing.
	Log *slog.Logger

	beatOnce sync.Once
	beat     *beat
}

// Retry is how Run rides out failures of the hubs and the history: a NATS
// reconnect, a JetStream request timing out on an overloaded server. A
// client's stream is read again from its cursor, so a retry costs a replay,
// never a gap or a duplicate; ending the stream instead would send every
// client back through a new request at once, adding to the load that made
// the request fail.
type Retry struct {
	// Min is the wait after the first failure; each failure in a row
	// doubles it, up to Max.
	Min, Max time.Duration
	// For is how long failures may go on without the client getting an
	// entry before Run gives up and returns the last one. Zero: Run
	// returns the first failure.
	For time.Duration
}

// wait returns the wait before retry n (1 for the first).
func (r Retry) wait(n int) time.Duration {
	d := max(r.Min, time.Millisecond)
	for i := 1; i < n && (r.Max <= 0 || d < r.Max); i++ {
		d *= 2
	}
	if r.Max > 0 {
		d = min(d, r.Max)
	}
	return d
}

// healthy is how long a client must follow live without a failure for
// the next failure to start a new run of them.
func (r Retry) healthy() time.Duration { return max(r.Max, r.Min, time.Second) }

// sourceError marks a failure of the hubs or the history, as opposed to
// the sink's own errors and the end of the client's context.
type sourceError struct{ err error }

func (e sourceError) Error() string { return e.err.Error() }
func (e sourceError) Unwrap() error { return e.err }

// Run sends sink every entry of j's stream after cur, moving cur along,
// until it sent the terminal entry (it returns nil), ctx or f.Quit ends
// (their error), the sink fails (its error) or the hubs and the history
// keep failing for longer than f.Retry allows (the last failure).
//
// Run's goroutine spends the stream waiting in live, shallow; joining and
// replaying, which need a deep stack, run on a fresh one (see freshstack).
// Run's own frame is small too (its state is in a run, the work between
// waits in functions of their own): an idle client's goroutine is a few
// frames deep, so the runtime shrinks its stack to 4 KiB.
func (f *Follower) Run(ctx context.Context, j *Joining, cur *Cursor, sink Sink) error {
	f.beatOnce.Do(func() { f.beat = &beat{period: f.Heartbeat} })
	r := &run{f: f, ctx: ctx, quit: f.quit(), streamID: j.streamID, pre: j, cur: cur, sink: sink}
	defer r.leave()
	for {
		done, err := r.join()
		if err == nil && !done {
			done, err = live(ctx, r.quit, r.sub, cur, sink, f.beat)
		}
		if err == nil && !done {
			continue // cut loose by the hub: join again, then replay what was missed
		}
		if err := r.failed(done, err); err != nil || done {
			return err
		}
	}
}

func (f *Follower) quit() context.Context {
	if f.Quit == nil {
		return context.Background()
	}
	return f.Quit
}

// Joining is a join of a stream's hub begun ahead of its Run.
type Joining struct {
	streamID string
	cancel   context.CancelFunc
	done     chan struct{} // closed once the join below ended
	sub      *hub.Sub
	boundary uint64
	err      error
}

// Prepare begins joining streamID's hub, so that opening its feed (for a
// stream nobody watches yet, a JetStream consumer: two round trips) runs
// while the caller gets the client ready, rather than after: a new
// stream's first line is then not held up by it. The join outlives ctx's
// cancellation (not its values); pass j to RunPrepared, or to Abandon if
// the stream will not be followed.
func (f *Follower) Prepare(ctx context.Context, streamID string) *Joining {
	// Join waits at most the hubs' open timeout, and they close at
	// shutdown: a join nobody takes ends by itself.
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	j := &Joining{streamID: streamID, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(j.done)
		j.sub, j.boundary, j.err = f.Hubs.Join(ctx, streamID)
	}()
	return j
}

// Abandon ends a prepared join that will not be followed.
func (j *Joining) Abandon() {
	j.cancel()
	<-j.done
	if j.sub != nil {
		j.sub.Leave()
	}
}

// take waits for the join's outcome, or abandons it when ctx ends first.
func (j *Joining) take(ctx context.Context) (*hub.Sub, uint64, error) {
	select {
	case <-j.done:
		j.cancel()
		return j.sub, j.boundary, j.err
	case <-ctx.Done():
		go j.Abandon()
		return nil, 0, ctx.Err()
	}
}

// run is the state of one Run.
type run struct {
	f        *Follower
	ctx      context.Context
	quit     context.Context
	streamID string
	pre      *Joining // a join begun before Run, taken by the first join
	cur      *Cursor
	sink     Sink

	sub      *hub.Sub
	joined   time.Time // when live following last began
	failures int       // in a row, without the client getting an entry
	since    time.Time // when the first of them happened
	at       uint64    // the cursor then
}

// join joins the hub, on a fresh stack, and replays what the client
// lacks; it reports whether the terminal entry was sent.
//
//go:noinline
func (r *run) join() (done bool, err error) {
	r.joined = time.Time{}
	pre := r.pre
	r.pre = nil
	freshstack.Run(func() { r.sub, done, err = r.f.join(r.ctx, r.quit, r.streamID, pre, r.sub, r.cur, r.sink) })
	if err == nil && !done {
		r.joined = time.Now()
	}
	return done, err
}

//go:noinline
func (r *run) leave() {
	if r.sub != nil {
		r.sub.Leave()
	}
}

// failed decides what follows the end of a join or a live run: nil to
// join again after a wait (the hub or the history failed, within
// Retry), or the error Run returns.
//
//go:noinline
func (r *run) failed(done bool, err error) error {
	var serr sourceError
	if done || !errors.As(err, &serr) || r.ctx.Err() != nil || r.quit.Err() != nil || errors.Is(err, hub.ErrClosed) {
		return err
	}
	// The hub or the history failed: wait, then join again from the
	// cursor, unless it has failed for too long without the client
	// getting anything.
	if r.sub != nil {
		r.sub.Leave()
		r.sub = nil
	}
	f := r.f
	if errors.Is(err, ErrBusy) {
		// Queued behind other replays (a reconnect storm): waiting is the
		// point, so it neither fails the client nor starts a run of
		// failures that would.
		return pause(r.ctx, r.quit, f.Retry.wait(1), r.sink, f.beat)
	}
	// A new run of failures once the client got an entry, or followed
	// live for a while without a failure (an idle stream).
	if r.failures == 0 || r.cur.StreamSeq != r.at || (!r.joined.IsZero() && time.Since(r.joined) > f.Retry.healthy()) {
		r.failures, r.since, r.at = 0, time.Now(), r.cur.StreamSeq
	}
	r.failures++
	if time.Since(r.since) >= f.Retry.For {
		return err
	}
	wait := f.Retry.wait(r.failures)
	if r.failures == 1 && f.Log != nil {
		f.Log.Warn("stream storage failed; retrying", "stream_id", r.streamID, "after", wait, "err", err)
	}
	return pause(r.ctx, r.quit, wait, r.sink, f.beat)
}

// pause waits d, pinging the client at each heartbeat.
func pause(ctx, quit context.Context, d time.Duration, sink Sink, heartbeat *beat) error {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			return nil
		case <-heartbeat.C():
			if err := sink.Ping(); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		case <-quit.Done():
			return quit.Err()
		}
	}
}

// join subscribes to the stream's hub, or takes pre's subscription, and
// replays from history what the client lacks up to the hub's boundary. It
// leaves prev, a subscription the hub cut loose, only once joined: that
// keeps the hub's feed open when this client is its only one.
func (f *Follower) join(ctx, quit context.Context, streamID string, pre *Joining, prev *hub.Sub, cur *Cursor, sink Sink) (*hub.Sub, bool, error) {
	// Cancelled by quit as well, so that a replay stops at shutdown; the
	// context lives only while joining.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(quit, cancel)()
	var sub *hub.Sub
	var boundary uint64
	var err error
	if pre != nil {
		sub, boundary, err = pre.take(ctx)
	} else {
		sub, boundary, err = f.Hubs.Join(ctx, streamID)
	}
	if prev != nil {
		prev.Leave()
	}
	if err != nil {
		return nil, false, sourceError{fmt.Errorf("join hub: %w", err)}
	}
	done, err := f.catchUp(ctx, streamID, boundary, cur, sink)
	return sub, done, err
}

// catchUp replays the entries between cur and boundary.
func (f *Follower) catchUp(ctx context.Context, streamID string, boundary uint64, cur *Cursor, sink Sink) (bool, error) {
	if cur.StreamSeq >= boundary {
		return false, nil
	}
	for e, err := range f.History.Replay(ctx, streamID, cur.StreamSeq, boundary) {
		if err != nil {
			return false, sourceError{fmt.Errorf("replay: %w", err)}
		}
		done, err := deliver(e, cur, sink)
		if err != nil {
			return false, err
		}
		if done {
			return true, sink.Flush()
		}
	}
	return false, sink.Flush()
}

// live forwards the subscription's entries until the terminal one (true),
// the hub cuts the subscription loose (false, nil) or something fails.
//
// Each flush is a system call, and on loopback the kernel delivers to the
// reader inside it: flushing per entry cost more than everything else the
// streamer does. So live sends what is queued, takes again, and flushes
// only once the queue is empty. Before flushing it yields the processor
// once: the hub, if runnable, then queues what it already holds, and the
// flush carries it too (about 17 lines a flush instead of 3.5 under the
// throughput benchmark). A yield is not a wait: with nothing else to run
// it returns at once, and nothing sent is left unflushed while live waits
// for entries.
func live(ctx, quit context.Context, sub *hub.Sub, cur *Cursor, sink Sink, heartbeat *beat) (bool, error) {
	l := &liveState{sub: sub, cur: cur, sink: sink}
	for {
		wait, done, err := l.step()
		if !wait {
			if err != nil || done {
				return done, err
			}
			if l.cutLoose {
				return false, nil
			}
			continue
		}
		// The wait, on as shallow a stack as the select allows.
		select {
		case <-sub.Ready():
		case <-heartbeat.C():
			if err := sink.Ping(); err != nil {
				return false, err
			}
		case <-ctx.Done():
			return false, ctx.Err()
		case <-quit.Done():
			return false, quit.Err()
		}
	}
}

// liveState is live's between two waits.
type liveState struct {
	sub       *hub.Sub
	cur       *Cursor
	sink      Sink
	batch     []entry.Entry
	unflushed bool // entries sent since the last flush
	yielded   bool // yielded since the last batch
	burst     bool // the last batch held more than one entry
	cutLoose  bool // the hub cut the subscription loose
}

// step does what live does between two waits: it reports wait when there
// is nothing to do but wait for the subscription; otherwise live returns
// done and err if either is set, or ends with the subscription cut loose,
// or steps again.
//
//go:noinline
func (l *liveState) step() (wait, done bool, err error) {
	var terr error
	l.batch, terr = l.sub.Take(l.batch)
	if len(l.batch) > 0 {
		for _, e := range l.batch {
			done, err := deliver(e, l.cur, l.sink)
			if err != nil {
				return false, false, err
			}
			if done {
				return false, true, l.sink.Flush()
			}
		}
		l.unflushed, l.yielded, l.burst = true, false, len(l.batch) > 1
		return false, false, nil
	}
	// Yield only inside a burst: a lone line (a command printing now and
	// then) is flushed at once, as a yield would queue this goroutine
	// behind every runnable one and delay it.
	if l.unflushed && !l.yielded && l.burst && terr == nil {
		runtime.Gosched()
		l.yielded = true
		return false, false, nil
	}
	if l.unflushed {
		if err := l.sink.Flush(); err != nil {
			return false, false, err
		}
		l.unflushed = false
	}
	if terr != nil {
		if errors.Is(terr, hub.ErrOverflow) {
			l.cutLoose = true
			return false, false, nil
		}
		return false, false, sourceError{terr}
	}
	return true, false, nil
}

// deliver sends e unless the client has it already, and reports whether it
// was the terminal entry.
func deliver(e entry.Entry, cur *Cursor, sink Sink) (bool, error) {
	if e.StreamSeq <= cur.StreamSeq {
		return false, nil
	}
	if e.Kind == entry.Invalid || (e.Kind == entry.Line && e.Line <= cur.Line) {
		// Undecodable, or a line a publisher retry stored twice.
		cur.StreamSeq = e.StreamSeq
		return false, nil
	}
	if err := announceGap(e, cur, sink); err != nil {
		return false, err
	}
	if err := sink.Send(e); err != nil {
		return false, err
	}
	cur.StreamSeq = e.StreamSeq
	cur.Line = max(cur.Line, e.Line)
	return e.Kind == entry.Complete, nil
}

// announceGap tells the client, before e, of lines missing before it: a
// line whose Seq skips some, or a terminal event counting lines the client
// never got. Lines are stored in Seq order, once each, so a skip is a loss
// (the job's terminal event says output_lost). Where the client's last
// line is unknown (a resume after an expired event) nothing is claimed.
func announceGap(e entry.Entry, cur *Cursor, sink Sink) error {
	if cur.Line == 0 && cur.StreamSeq > 0 {
		return nil
	}
	var from, to uint64
	switch e.Kind {
	case entry.Line:
		from, to = cur.Line+1, e.Line-1
	case entry.Complete:
		from, to = cur.Line+1, e.Line
	default:
		return nil
	}
	if from > to {
		return nil
	}
	data, err := json.Marshal(contracts.SSEGapData{From: from, To: to})
	if err != nil {
		return err
	}
	return sink.Send(entry.Entry{StreamSeq: cur.StreamSeq, Kind: entry.Gap, Line: to, Data: data})
}
