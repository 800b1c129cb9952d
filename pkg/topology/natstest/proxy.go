package natstest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// proxy forwards one node's route connections to another node, and can
// cut them: a network partition between the two, or a cut of some of
// their routes only (see Routes).
type proxy struct {
	addr     string
	from, to int

	mu      sync.Mutex
	target  string          // node to's route address
	blocked map[Routes]bool // AllRoutes, SystemRoutes, AccountRoutes
	links   map[*link]struct{}
}

// link is one route connection through the proxy: in from the node that
// dialled it, out to the target.
type link struct {
	in, out net.Conn
	// pinned is set once the dialling node's INFO was read: the route
	// carries one account only (nats-server pins the system account's).
	pinned, known bool
}

func newProxy(tb testing.TB, target string, from, to int) *proxy {
	tb.Helper()
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &proxy{addr: ln.Addr().String(), from: from, to: to, target: target,
		blocked: map[Routes]bool{}, links: map[*link]struct{}{}}
	var wg sync.WaitGroup
	wg.Go(func() { p.serve(ln, &wg) })
	tb.Cleanup(func() {
		_ = ln.Close()
		p.block(AllRoutes, true)
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
		blocked, target := p.blocked[AllRoutes], p.target
		p.mu.Unlock()
		if blocked {
			_ = in.Close()
			continue
		}
		out, err := (&net.Dialer{}).DialContext(context.Background(), "tcp", target)
		if err != nil {
			_ = in.Close()
			continue
		}
		l := &link{in: in, out: out}
		if !p.track(l) {
			continue
		}
		wg.Go(func() { p.back(l) })
		wg.Go(func() { p.forward(l) })
	}
}

// forward copies what the dialling node sends to the target, once it has
// read the node's INFO, which says whether the route is an account's own
// (pinned) or one of the pool every other account shares: a link whose
// routes are cut is closed before the target hears of it. The target's
// bytes flow meanwhile (back): a dialling node sends its INFO only after
// it read the target's.
func (p *proxy) forward(l *link) {
	first, info, ok := readInfo(l.in)
	var account string
	if raw, has := info["route_account"]; has && json.Unmarshal(raw, &account) != nil {
		ok = false
	}
	if p.classify(l, account != "", ok) {
		if _, err := l.out.Write(first); err == nil {
			pipe(l.out, l.in)
		}
	}
	p.untrack(l)
}

// back copies what the target sends to the dialling node.
func (p *proxy) back(l *link) {
	if first, _, _ := readInfo(l.out); len(first) > 0 {
		if _, err := l.in.Write(first); err != nil {
			p.untrack(l)
			return
		}
	}
	pipe(l.in, l.out)
	p.untrack(l)
}

// infoWait bounds the wait for a node's INFO on a new route; a route
// without one is forwarded as it came, unclassified (only AllRoutes cuts
// it).
const infoWait = 10 * time.Second

// readInfo reads from a node on a new route up to and including its first
// INFO line and returns what it read, the INFO's fields and whether it
// found them. What it returns carries that INFO with gossip disabled: a
// node tells the others of every route it makes (gossip), and one told of
// a node it has no route to, as when a test cut theirs, connects to its
// real address, around the proxies. The cluster is a full mesh of
// explicit routes: nothing needs gossip.
func readInfo(c net.Conn) (read []byte, info map[string]json.RawMessage, ok bool) {
	_ = c.SetReadDeadline(time.Now().Add(infoWait))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	buf := make([]byte, 0, 4096)
	chunk := make([]byte, 4096)
	for len(buf) < 1<<20 {
		n, err := c.Read(chunk)
		buf = append(buf, chunk[:n]...)
		if i := bytes.Index(buf, []byte("INFO ")); i >= 0 && (i == 0 || buf[i-1] == '\n') {
			if j := bytes.Index(buf[i:], []byte("\r\n")); j >= 0 {
				if json.Unmarshal(buf[i+len("INFO "):i+j], &info) != nil {
					return buf, nil, false
				}
				info["gossip_mode"] = json.RawMessage(gossipDisabled)
				b, err := json.Marshal(info)
				if err != nil {
					return buf, nil, false
				}
				out := append(append(append([]byte{}, buf[:i]...), "INFO "...), b...)
				return append(out, buf[i+j:]...), info, true
			}
		}
		if err != nil {
			return buf, nil, false
		}
	}
	return buf, nil, false
}

// gossipDisabled is nats-server's gossip_mode value that tells a node not
// to pass the route on (route.go: gossipDefault, gossipDisabled, ...).
const gossipDisabled = "1"

// track registers a link, unless every route is blocked (then it closes
// it).
func (p *proxy) track(l *link) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.blocked[AllRoutes] {
		l.close()
		return false
	}
	p.links[l] = struct{}{}
	return true
}

// classify records what a link carries and closes it if those routes are
// blocked now.
func (p *proxy) classify(l *link, pinned, known bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, open := p.links[l]; !open {
		return false
	}
	l.pinned, l.known = pinned, known
	if p.cuts(l) {
		l.close()
		delete(p.links, l)
		return false
	}
	return true
}

// cuts tells whether the blocks in force cut l. Lock held.
func (p *proxy) cuts(l *link) bool {
	switch {
	case p.blocked[AllRoutes]:
		return true
	case !l.known:
		return false
	case l.pinned:
		return p.blocked[SystemRoutes]
	default:
		return p.blocked[AccountRoutes]
	}
}

func (p *proxy) untrack(l *link) {
	l.close()
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}

func (l *link) close() {
	_ = l.in.Close()
	_ = l.out.Close()
}

// block cuts the routes r and refuses new ones, or lets them again.
func (p *proxy) block(r Routes, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blocked[r] = on
	if !on {
		return
	}
	for l := range p.links {
		if p.cuts(l) {
			l.close()
		}
	}
}

// unblock lets every route connect again.
func (p *proxy) unblock() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.blocked)
}

func pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
}
