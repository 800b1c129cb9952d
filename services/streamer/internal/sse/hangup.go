package sse

import (
	"net"
	"sync"
)

// Hangups tells when the peers of taken-over connections hang up. net/http
// learns it from a goroutine per connection blocked in a read; Hangups
// learns it for every connection from one goroutine waiting on the
// kernel (epoll on Linux; elsewhere a read per connection, as net/http
// does). It is safe for concurrent use; the zero value is ready and starts
// its goroutine with the first Watch.
type Hangups struct {
	once sync.Once
	p    *poller
	err  error // why the poller could not start: fall back to reads
}

// Watch calls hungUp, once, from another goroutine, when conn's peer
// closes the connection or resets it. Call stop before closing conn. A
// hang-up racing with stop may still call hungUp, so it must be harmless
// late (cancelling a context is). A client sending data is not taken for
// a hang-up.
func (h *Hangups) Watch(conn net.Conn, hungUp func()) (stop func()) {
	h.once.Do(func() { h.p, h.err = newPoller() })
	if h.err == nil {
		if stop, ok := h.p.watch(conn, hungUp); ok {
			return stop
		}
	}
	return watchByRead(conn, hungUp)
}

// Close stops the goroutine; Watch falls back to reads afterwards. It may
// be called more than once.
func (h *Hangups) Close() {
	h.once.Do(func() { h.err = net.ErrClosed })
	if h.p != nil {
		h.p.close()
	}
}

// watchByRead waits for the peer's hang-up in a read of its own: a
// goroutine per connection, what net/http spends. Bytes read are dropped:
// an event stream's client has nothing to say.
func watchByRead(conn net.Conn, hungUp func()) func() {
	var (
		mu      sync.Mutex
		stopped bool
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var b [64]byte
		for {
			if _, err := conn.Read(b[:]); err != nil {
				break
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			hungUp()
		}
	}()
	return func() {
		mu.Lock()
		stopped = true
		mu.Unlock()
		// The read returns once the caller closes conn; it must not be
		// waited for here.
	}
}
