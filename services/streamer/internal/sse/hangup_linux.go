package sse

import (
	"errors"
	"net"
	"sync"
	"syscall"
)

// poller waits with one epoll instance for the peers of every watched
// connection to hang up. Each registration carries a token of its own
// rather than the descriptor, whose number a closed connection hands on
// to the next one.
type poller struct {
	epfd   int
	wake   [2]int // a pipe: a byte on it ends the wait
	closed chan struct{}

	mu      sync.Mutex
	next    uint64
	watched map[uint64]func()
	done    bool
}

// epollET is syscall.EPOLLET, which the package declares negative.
const epollET = 1 << 31

// wakeToken marks the pipe's registration.
const wakeToken = 0

func newPoller() (*poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	p := &poller{epfd: epfd, closed: make(chan struct{}), watched: map[uint64]func(){}, next: wakeToken + 1}
	if err := syscall.Pipe2(p.wake[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		_ = syscall.Close(epfd)
		return nil, err
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN}
	setToken(&ev, wakeToken)
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, p.wake[0], &ev); err != nil {
		p.release()
		return nil, err
	}
	go p.run()
	return p, nil
}

func setToken(ev *syscall.EpollEvent, t uint64) {
	ev.Fd, ev.Pad = int32(uint32(t)), int32(uint32(t>>32)) //nolint:gosec // the two halves of the 64-bit data field
}

func token(ev *syscall.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32 //nolint:gosec // see setToken
}

// watch registers conn; it reports false for a connection without a
// descriptor (not a socket) or once the poller is closed.
func (p *poller) watch(conn net.Conn, hungUp func()) (func(), bool) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, false
	}
	p.mu.Lock()
	if p.done {
		p.mu.Unlock()
		return nil, false
	}
	t := p.next
	p.next++
	p.watched[t] = hungUp
	p.mu.Unlock()
	// Edge-triggered, and not for input: data the client sends wakes
	// nobody; only its hang-up (RDHUP: it closed its side; HUP, ERR: reset).
	ev := syscall.EpollEvent{Events: syscall.EPOLLRDHUP | epollET}
	setToken(&ev, t)
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cerr = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev) //nolint:gosec // a descriptor fits an int
	}); err != nil || cerr != nil {
		p.forget(t)
		return nil, false
	}
	return func() {
		if p.forget(t) {
			// Before the connection closes, so the registration goes with
			// it; a connection already closed has none left.
			_ = raw.Control(func(fd uintptr) {
				_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil) //nolint:gosec // see above
			})
		}
	}, true
}

// forget drops token t; it reports whether t was still watched.
func (p *poller) forget(t uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.watched[t]
	delete(p.watched, t)
	return ok
}

func (p *poller) run() {
	defer close(p.closed)
	events := make([]syscall.EpollEvent, 128)
	for {
		n, err := syscall.EpollWait(p.epfd, events, -1)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return
		}
		for i := range events[:n] {
			t := token(&events[i])
			if t == wakeToken {
				return
			}
			p.mu.Lock()
			hungUp, ok := p.watched[t]
			delete(p.watched, t)
			p.mu.Unlock()
			if ok {
				// The callback runs while the registration stays: stop,
				// called after it, deletes nothing twice (forget says it
				// is gone) and the connection's close removes it.
				hungUp()
			}
		}
	}
}

// close ends the wait and releases the poller; hang-ups of connections
// still watched are no longer reported.
func (p *poller) close() {
	p.mu.Lock()
	if p.done {
		p.mu.Unlock()
		return
	}
	p.done = true
	p.mu.Unlock()
	_, _ = syscall.Write(p.wake[1], []byte{1})
	<-p.closed
	p.release()
}

func (p *poller) release() {
	_ = syscall.Close(p.wake[0])
	_ = syscall.Close(p.wake[1])
	_ = syscall.Close(p.epfd)
}
