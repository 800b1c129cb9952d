// Package follow delivers one stream to one client without gap or duplicate.
// It joins the stream's hub first, so nothing stored from then on can be
// missed, replays from history what the client lacks up to the hub's
// boundary, then forwards live entries. When the hub cuts the client loose
// for being slow, it goes back to replaying from the client's cursor, so a
// slow client costs storage reads, never memory or other clients' time.
package follow

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"time"

	"github.com/rdev-dev/rdev/services/streamer/internal/entry"
	"github.com/rdev-dev/rdev/services/streamer/internal/hub"
)

// History reads the stored entries of a stream.
type History interface {
	// Replay yields, in storage order, the entries of streamID stored after
	// sequence after. It stops once it yielded an entry at or beyond until,
	// or when nothing more is stored. An error is yielded with a zero Entry
	// and ends the iteration. Breaking out of the loop releases everything
	// the replay holds.
	Replay(ctx context.Context, streamID string, after, until uint64) iter.Seq2[entry.Entry, error]
}

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
	// Seq is the stream sequence of the last entry handled: sent, or
	// skipped as a duplicate or undecodable. Everything after it is owed.
	Seq uint64
	// Line is the highest output line number the client has.
	Line uint64
}

// Follower runs clients' deliveries. It is safe for concurrent use.
type Follower struct {
	// Hubs supplies live entries.
	Hubs *hub.Hubs
	// History supplies stored entries.
	History History
	// Heartbeat is how often Sink.Ping is called while waiting.
	Heartbeat time.Duration
}

// Run sends sink every entry of streamID after cur, moving cur along,
// until it sent the terminal entry (it returns nil), ctx ends (ctx.Err()),
// the sink fails (its error) or a hub or history fails.
func (f *Follower) Run(ctx context.Context, streamID string, cur *Cursor, sink Sink) error {
	tick := time.NewTicker(f.Heartbeat)
	defer tick.Stop()
	sub, boundary, err := f.Hubs.Join(ctx, streamID)
	if err != nil {
		return fmt.Errorf("join hub: %w", err)
	}
	for {
		done, err := f.catchUp(ctx, streamID, boundary, cur, sink)
		if err == nil && !done {
			done, err = live(ctx, sub, cur, sink, tick.C)
		}
		if err != nil || done {
			sub.Leave()
			return err
		}
		// Cut loose by the hub: join again, then replay what was missed.
		// Joining before leaving keeps the hub's feed open when this
		// client is its only one.
		next, b, err := f.Hubs.Join(ctx, streamID)
		sub.Leave()
		if err != nil {
			return fmt.Errorf("join hub: %w", err)
		}
		sub, boundary = next, b
	}
}

// catchUp replays the entries between cur and boundary.
func (f *Follower) catchUp(ctx context.Context, streamID string, boundary uint64, cur *Cursor, sink Sink) (bool, error) {
	if cur.Seq >= boundary {
		return false, nil
	}
	for e, err := range f.History.Replay(ctx, streamID, cur.Seq, boundary) {
		if err != nil {
			return false, fmt.Errorf("replay: %w", err)
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
func live(ctx context.Context, sub *hub.Sub, cur *Cursor, sink Sink, tick <-chan time.Time) (bool, error) {
	for {
		select {
		case e, ok := <-sub.C():
			if !ok {
				if errors.Is(sub.Err(), hub.ErrOverflow) {
					return false, nil
				}
				return false, sub.Err()
			}
			done, err := deliver(e, cur, sink)
			if err != nil {
				return false, err
			}
			// Flush at the end of a burst: never leave an entry unflushed
			// while waiting for the next.
			if done || len(sub.C()) == 0 {
				if err := sink.Flush(); err != nil {
					return false, err
				}
			}
			if done {
				return true, nil
			}
		case <-tick:
			if err := sink.Ping(); err != nil {
				return false, err
			}
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

// deliver sends e unless the client has it already, and reports whether it
// was the terminal entry.
func deliver(e entry.Entry, cur *Cursor, sink Sink) (bool, error) {
	if e.Seq <= cur.Seq {
		return false, nil
	}
	if e.Kind == entry.Invalid || (e.Kind == entry.Line && e.Line <= cur.Line) {
		// Undecodable, or a line a publisher retry stored twice.
		cur.Seq = e.Seq
		return false, nil
	}
	if err := sink.Send(e); err != nil {
		return false, err
	}
	cur.Seq = e.Seq
	cur.Line = max(cur.Line, e.Line)
	return e.Kind == entry.Complete, nil
}
