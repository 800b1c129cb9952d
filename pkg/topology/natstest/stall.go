package natstest

import (
	"net"
	"sync"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Stallable gives in-process connections to a server
// (nats.InProcessServer) that pass nothing either way while stalled,
// without disconnecting: a connection stuck behind other traffic, taken
// to the extreme. Keep a stall under the server's write deadline (10 s),
// or the server cuts the connection as a slow consumer.
type Stallable struct {
	srv  *server.Server
	mu   sync.Mutex
	open chan struct{} // closed while the connections pass
}

// NewStallable returns connections to srv that pass until Stall.
func NewStallable(srv *server.Server) *Stallable {
	s := &Stallable{srv: srv, open: make(chan struct{})}
	close(s.open)
	return s
}

// Connect opens a client connection through s with opts; it is closed
// at cleanup.
func (s *Stallable) Connect(tb testing.TB, opts ...nats.Option) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect("", append(opts, nats.InProcessServer(s))...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// InProcessConn implements nats.InProcessConnProvider.
func (s *Stallable) InProcessConn() (net.Conn, error) {
	c, err := s.srv.InProcessConn()
	if err != nil {
		return nil, err
	}
	return stallConn{Conn: c, s: s}, nil
}

// Stall stops every connection's reads and writes until Resume.
func (s *Stallable) Stall() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.open:
		s.open = make(chan struct{})
	default:
	}
}

// Resume lets the connections pass again.
func (s *Stallable) Resume() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.open:
	default:
		close(s.open)
	}
}

func (s *Stallable) gate() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open
}

type stallConn struct {
	net.Conn
	s *Stallable
}

func (c stallConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	<-c.s.gate() // what arrives during a stall is handed over after it
	return n, err
}

func (c stallConn) Write(p []byte) (int, error) {
	<-c.s.gate()
	return c.Conn.Write(p)
}
