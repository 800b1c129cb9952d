package natsserver

import (
	"net"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// InProcess connects NATS clients to srv in process
// (nats.InProcessServer(natsserver.InProcess(srv))) on connections whose
// writes do not wait for the server to read them. The server's own
// in-process connection is a net.Pipe, which hands each write over
// synchronously, and the NATS client flushes while it holds its
// connection's lock: every publisher on a connection waited for the
// server's read loop to be scheduled, half of all lock waiting in a mutex
// profile of rdev up (performance.md). Here a write is copied to a
// buffer that a goroutine per connection feeds to the pipe.
type InProcess struct{ srv *server.Server }

// NewInProcess returns the connection provider of srv.
func NewInProcess(srv *server.Server) InProcess { return InProcess{srv: srv} }

// InProcessConn opens one connection (nats.InProcessConnProvider).
func (p InProcess) InProcessConn() (net.Conn, error) {
	c, err := p.srv.InProcessConn()
	if err != nil {
		return nil, err
	}
	return newBufferedConn(c, inProcessBuffer), nil
}

// inProcessBuffer bounds the bytes a connection holds that the server has
// not read yet; a write beyond it waits, as a socket's would.
const inProcessBuffer = 8 << 20

// closeWait bounds how long Close waits for the server to read what was
// written before it.
const closeWait = time.Second

// keepBuffer is the largest buffer a connection keeps for reuse: a burst
// may grow one to inProcessBuffer, and an idle connection should not hold
// that.
const keepBuffer = 64 << 10

// bufferedConn is a net.Conn whose writes go to a buffer that pump feeds
// to the underlying connection; reads, addresses and read deadlines are
// the underlying connection's.
type bufferedConn struct {
	net.Conn
	limit int

	mu        sync.Mutex
	buf       []byte // written, not yet taken by pump
	spare     []byte // the buffer pump wrote last, for reuse
	err       error  // pump's write error, every later write's
	closed    bool
	wdeadline time.Time

	kick   chan struct{} // something to write; closed by Close
	room   chan struct{} // pump wrote a buffer out
	pumped chan struct{} // pump ended
}

func newBufferedConn(c net.Conn, limit int) *bufferedConn {
	b := &bufferedConn{Conn: c, limit: limit, kick: make(chan struct{}, 1), room: make(chan struct{}, 1), pumped: make(chan struct{})}
	go b.pump()
	return b
}

// Write copies p for pump and returns at once, unless limit bytes wait
// already: then it waits for room until the write deadline.
func (b *bufferedConn) Write(p []byte) (int, error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		b.mu.Lock()
		switch {
		case b.closed:
			b.mu.Unlock()
			return 0, net.ErrClosed
		case b.err != nil:
			err := b.err
			b.mu.Unlock()
			return 0, err
		case len(b.buf) < b.limit:
			b.buf = append(b.buf, p...)
			select {
			case b.kick <- struct{}{}:
			default:
			}
			b.mu.Unlock()
			return len(p), nil
		}
		dl := b.wdeadline
		b.mu.Unlock()
		var expired <-chan time.Time
		if !dl.IsZero() {
			if timer == nil {
				timer = time.NewTimer(time.Until(dl))
			} else {
				timer.Reset(time.Until(dl))
			}
			expired = timer.C
		}
		select {
		case <-b.room:
		case <-expired:
			return 0, os.ErrDeadlineExceeded
		}
	}
}

// pump writes out what Write buffered, in order, until Close; then what
// is left.
func (b *bufferedConn) pump() {
	defer close(b.pumped)
	for range b.kick {
		if !b.writeOut() {
			return
		}
	}
	b.writeOut()
}

// writeOut writes the buffer to the underlying connection and reports
// whether that went well.
func (b *bufferedConn) writeOut() bool {
	b.mu.Lock()
	out := b.buf
	b.buf, b.spare = b.spare[:0], nil
	b.mu.Unlock()
	if len(out) == 0 {
		b.mu.Lock()
		b.spare = out
		b.mu.Unlock()
		return true
	}
	_, err := b.Conn.Write(out)
	b.mu.Lock()
	if err != nil && b.err == nil {
		b.err = err
	}
	if cap(out) <= keepBuffer {
		b.spare = out[:0]
	}
	b.mu.Unlock()
	select {
	case b.room <- struct{}{}:
	default:
	}
	return err == nil
}

// Close hands the server what was written, for closeWait at most, and
// closes the connection.
func (b *bufferedConn) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return net.ErrClosed
	}
	b.closed = true
	close(b.kick)
	b.mu.Unlock()
	t := time.NewTimer(closeWait)
	defer t.Stop()
	select {
	case <-b.pumped:
	case <-t.C:
	}
	return b.Conn.Close()
}

// SetWriteDeadline bounds a write that waits for room.
func (b *bufferedConn) SetWriteDeadline(t time.Time) error {
	b.mu.Lock()
	b.wdeadline = t
	b.mu.Unlock()
	return nil
}

// SetDeadline sets the read deadline of the connection and the write
// deadline of the buffer.
func (b *bufferedConn) SetDeadline(t time.Time) error {
	_ = b.SetWriteDeadline(t)
	return b.SetReadDeadline(t) // the pipe's own

}
