package natstest

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
)

// proxy forwards one node's route connections to another node, and can
// cut them: a network partition between the two.
type proxy struct {
	addr     string
	from, to int
	target   string

	mu      sync.Mutex
	blocked bool
	conns   map[net.Conn]struct{}
}

func newProxy(tb testing.TB, target string, from, to int) *proxy {
	tb.Helper()
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &proxy{addr: ln.Addr().String(), from: from, to: to, target: target, conns: map[net.Conn]struct{}{}}
	var wg sync.WaitGroup
	wg.Go(func() { p.serve(ln, &wg) })
	tb.Cleanup(func() {
		_ = ln.Close()
		p.block(true)
		wg.Wait()
	})
	return p
}

func (p *proxy) serve(ln net.Listener, wg *sync.WaitGroup) {
	for {
		in, err := ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		blocked := p.blocked
		p.mu.Unlock()
		if blocked {
			_ = in.Close()
			continue
		}
		out, err := (&net.Dialer{}).DialContext(context.Background(), "tcp", p.target)
		if err != nil {
			_ = in.Close()
			continue
		}
		if !p.track(in, out) {
			continue
		}
		wg.Go(func() { pipe(out, in); p.untrack(in, out) })
		wg.Go(func() { pipe(in, out); p.untrack(in, out) })
	}
}

// track registers a connection pair, unless the proxy was blocked
// meanwhile (then it closes them).
func (p *proxy) track(in, out net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.blocked {
		_ = in.Close()
		_ = out.Close()
		return false
	}
	p.conns[in], p.conns[out] = struct{}{}, struct{}{}
	return true
}

func (p *proxy) untrack(in, out net.Conn) {
	_ = in.Close()
	_ = out.Close()
	p.mu.Lock()
	delete(p.conns, in)
	delete(p.conns, out)
	p.mu.Unlock()
}

// block cuts every connection and refuses new ones, or lets them again.
func (p *proxy) block(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blocked = on
	if on {
		for c := range p.conns {
			_ = c.Close()
		}
	}
}

func pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
}
