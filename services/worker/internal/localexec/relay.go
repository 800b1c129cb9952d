package localexec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// relay copies one of a command's output pipes to its writer.
//
// While the command's leader runs, reads wait as long as it takes. Once it
// has exited and its group is killed, the pipe closes unless a process that
// left the group still holds it; so from then on a read that waits longer
// than idle ends the relay. Data already in the pipe is read at once, so a
// slow writer is never cut off by this. stop sets a hard limit as well.
type relay struct {
	r    *os.File
	w    io.Writer
	name string
	fail context.CancelCauseFunc
	idle time.Duration
	bufs *sync.Pool // of *[relayBuf]byte

	leaderGone atomic.Bool
	hardStop   atomic.Int64 // UnixNano of the hard limit, 0 for none

	err error // set by run: a failure to write, or to read
}

// relayBuf is the size of a relay's read buffer: a Linux pipe's default
// capacity.
const relayBuf = 64 << 10

func newRelay(r *os.File, w io.Writer, name string, fail context.CancelCauseFunc, idle time.Duration, bufs *sync.Pool) *relay {
	return &relay{r: r, w: w, name: name, fail: fail, idle: idle, bufs: bufs}
}

// run copies until end of file or a deadline, then closes the pipe so that
// a process still writing to it gets EPIPE rather than blocking. A write or
// read error is kept in r.err and cancels the command's context.
func (r *relay) run() {
	defer r.r.Close()
	b := r.bufs.Get().(*[relayBuf]byte)
	defer r.bufs.Put(b) // writers do not keep what they are given (io.Writer)
	buf := b[:]
	for {
		if r.leaderGone.Load() {
			_ = r.r.SetReadDeadline(r.deadline())
		}
		n, err := r.r.Read(buf)
		if n > 0 {
			m, werr := r.w.Write(buf[:n])
			if werr == nil && m < n {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				r.err = fmt.Errorf("write %s: %w", r.name, werr)
				r.fail(r.err)
				return
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF), errors.Is(err, os.ErrDeadlineExceeded):
			return
		default:
			r.err = fmt.Errorf("read %s: %w", r.name, err)
			r.fail(r.err)
			return
		}
	}
}

func (r *relay) deadline() time.Time {
	d := time.Now().Add(r.idle)
	if hs := r.hardStop.Load(); hs != 0 && hs < d.UnixNano() {
		return time.Unix(0, hs)
	}
	return d
}

// leaderExited starts the idle limit, including for a read in progress.
func (r *relay) leaderExited() {
	r.leaderGone.Store(true)
	_ = r.r.SetReadDeadline(r.deadline())
}

// stop makes the relay end by at, whatever it is waiting for.
func (r *relay) stop(at time.Time) {
	r.hardStop.Store(at.UnixNano())
	r.leaderGone.Store(true)
	_ = r.r.SetReadDeadline(at)
}
