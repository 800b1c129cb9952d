package natsserver

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A write returns before the server reads it (a net.Pipe write waits for
// the reader), and Close hands over everything written, in order.
func TestInProcessWritesDoNotWaitForTheReader(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	c := newBufferedConn(a, 8<<20)
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		wrote <- err
	}()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the write waited for the reader")
	}
	got := make(chan []byte, 1)
	go func() {
		all, _ := io.ReadAll(b)
		got <- all
	}()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if all := <-got; !bytes.Equal(all, data) {
		t.Fatalf("read %d bytes, want the %d written, in order", len(all), len(data))
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v, want net.ErrClosed", err)
	}
}

// With its buffer full a write waits for room until its deadline, and
// goes through once the server reads.
func TestInProcessFullBufferWaitsUntilTheDeadline(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	c := newBufferedConn(a, 16)
	defer c.Close()
	if err := c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	accepted, err := 0, error(nil)
	for i := 0; i < 4 && err == nil; i++ {
		var n int
		n, err = c.Write(bytes.Repeat([]byte{byte('a' + i)}, 16))
		accepted += n
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) || accepted < 16 {
		t.Fatalf("with nobody reading: %d bytes accepted, then %v; want at least 16, then os.ErrDeadlineExceeded", accepted, err)
	}
	if err := c.SetWriteDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, accepted+16)
		_, _ = io.ReadFull(b, buf)
		got <- buf
	}()
	if _, err := c.Write([]byte("zzzzzzzzzzzzzzzz")); err != nil {
		t.Fatalf("write once the server reads: %v", err)
	}
	all := <-got
	if !bytes.HasSuffix(all, []byte("zzzzzzzzzzzzzzzz")) || all[0] != 'a' {
		t.Fatalf("read %q, want the accepted writes in order, then z", all)
	}
}

// A JetStream client on these connections publishes, reads back in order
// and makes requests as on the server's own.
func TestInProcessCarriesJetStream(t *testing.T) {
	srv, err := Start(Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	nc, err := nats.Connect("", nats.InProcessServer(NewInProcess(srv)))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t"}})
	if err != nil {
		t.Fatal(err)
	}
	const n = 2000
	for i := range n {
		if _, err := js.PublishAsync("t", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal("publishes not acknowledged")
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if string(m.Data()) != strconv.Itoa(i) {
			t.Fatalf("message %d is %q", i, m.Data())
		}
	}
	info, err := s.Info(ctx)
	if err != nil || info.State.Msgs != n {
		t.Fatalf("stream info %+v, %v; want %d messages", info, err, n)
	}
}

// A burst does not leave its large buffer with an idle connection.
func TestInProcessKeepsNoLargeBuffer(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	c := newBufferedConn(a, 8<<20)
	defer c.Close()
	data := make([]byte, 1<<20)
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(b, make([]byte, len(data))); err != nil {
		t.Fatal(err)
	}
	held := func() int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return cap(c.buf) + cap(c.spare)
	}
	for wait := time.Now().Add(5 * time.Second); held() > 2*keepBuffer; time.Sleep(time.Millisecond) {
		if time.Now().After(wait) {
			t.Fatalf("the idle connection holds %d bytes of buffers, want at most %d", held(), 2*keepBuffer)
		}
	}
}
