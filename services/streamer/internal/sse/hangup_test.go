package sse_test

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/services/streamer/internal/sse"
)

func errorsAs(err error, target any) bool { return errors.As(err, target) }

// pair returns both ends of a loopback TCP connection.
func pair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// hangupWithin bounds how long a hang-up takes to be noticed; generous
// because the machine running the tests may be loaded.
const hangupWithin = 10 * time.Second

func TestHangupsNoticeClosedPeers(t *testing.T) {
	t.Parallel()
	var h sse.Hangups
	defer h.Close()
	const n = 50
	hung := make(chan int, n)
	var clients []net.Conn
	var stops []func()
	for i := range n {
		server, client := pair(t)
		clients = append(clients, client)
		stops = append(stops, h.Watch(server, func() { hung <- i }))
	}
	// Data from a client is no hang-up.
	if _, err := clients[0].Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	// Every other client hangs up, half of them with a reset.
	for i := 1; i < n; i += 2 {
		if i%4 == 1 {
			_ = clients[i].(*net.TCPConn).SetLinger(0)
		}
		clients[i].Close()
	}
	seen := map[int]bool{}
	deadline := time.After(hangupWithin)
	for len(seen) < n/2 {
		select {
		case i := <-hung:
			if i%2 == 0 || seen[i] {
				t.Fatalf("hang-up reported for %d (seen %v)", i, seen)
			}
			seen[i] = true
		case <-deadline:
			t.Fatalf("%d of %d hang-ups noticed", len(seen), n/2)
		}
	}
	for _, stop := range stops {
		stop()
	}
	// Stopped: a later hang-up is not reported.
	clients[0].Close()
	select {
	case i := <-hung:
		t.Fatalf("hang-up of %d reported after stop", i)
	case <-time.After(100 * time.Millisecond): // a report, if any, would come within this
	}
}

// A connection that is not a socket falls back to a read of its own.
func TestHangupsOfPipe(t *testing.T) {
	t.Parallel()
	var h sse.Hangups
	defer h.Close()
	server, client := net.Pipe()
	defer server.Close()
	hung := make(chan struct{})
	stop := h.Watch(server, func() { close(hung) })
	defer stop()
	client.Close()
	select {
	case <-hung:
	case <-time.After(hangupWithin):
		t.Fatal("the pipe's hang-up was not noticed")
	}
}
