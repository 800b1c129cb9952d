package natsjs

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
)

// A live feed that stops receiving reopens from the message after the last
// it received: nothing is lost, whether the missing messages are still
// pending at the server or were delivered to a subscription that dropped
// them (the client library drops messages when its buffer is full; with
// no later message to reveal the gap, the ordered consumer cannot tell).
// The loss is staged by stopping the feed's iterator (its outstanding pull
// request may still take messages) and swapping in one that never
// delivers.
func TestStalledFeedReopensWithoutLoss(t *testing.T) {
	t.Parallel()
	_, _, js := natstest.Provisioned(t)
	kv, err := js.KeyValue(context.Background(), contracts.BucketState)
	if err != nil {
		t.Fatal(err)
	}
	s := New(js, kv, Config{Batch: 8, StallCheck: 200 * time.Millisecond}, slog.New(slog.DiscardHandler))
	hf, _, err := s.Open(context.Background(), "st1")
	if err != nil {
		t.Fatal(err)
	}
	f := hf.(*feed)
	defer f.Close()
	publishLine(t, js, "st1", 1)
	if e, err := f.Next(); err != nil || e.Line != 1 {
		t.Fatalf("first entry %+v, %v", e, err)
	}

	// Stall: the real iterator stops; an iterator on a silent subject
	// takes its place.
	f.it.Stop()
	silent, err := js.OrderedConsumer(context.Background(), contracts.StreamOutput, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{contracts.SubjectStreamOutput("silent")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if f.it, err = silent.Messages(); err != nil {
		t.Fatal(err)
	}
	publishLine(t, js, "st1", 2)
	publishLine(t, js, "st1", 3)

	for want := uint64(2); want <= 3; want++ {
		e, err := f.Next()
		if err != nil || e.Line != want {
			t.Fatalf("after the stall got %+v, %v; want line %d", e, err, want)
		}
	}
}

// A feed on a connection that lags (a streamer reading slower than the
// server sends) is late, not stalled: the messages its consumer delivered
// are on the way, queued ahead of the answer to the feed's own check. The
// feed must take them as they come, not reopen: reopening threw them away
// and sent them again over the same lagging connection, with a new
// consumer, which under load made the lag worse. The lag is staged with a
// proxy that holds everything the server sends for longer than StallCheck.
func TestLaggingFeedIsNotReopened(t *testing.T) {
	t.Parallel()
	srv, _, js := natstest.Provisioned(t)
	p := newDelayProxy(t, srv.Addr().String())
	nc, err := nats.Connect("nats://"+p.addr, nats.MaxReconnects(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ljs, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := ljs.KeyValue(context.Background(), contracts.BucketState)
	if err != nil {
		t.Fatal(err)
	}
	const stallCheck = 200 * time.Millisecond
	s := New(ljs, kv, Config{Batch: 8, StallCheck: stallCheck}, slog.New(slog.DiscardHandler))
	hf, _, err := s.Open(context.Background(), "st1")
	if err != nil {
		t.Fatal(err)
	}
	f := hf.(*feed)
	defer f.Close()
	publishLine(t, js, "st1", 1)
	if e, err := f.Next(); err != nil || e.Line != 1 {
		t.Fatalf("first entry %+v, %v", e, err)
	}
	name := f.cons.CachedInfo().Name

	// Hold what the server sends for three checks' time; the feed checks
	// meanwhile, and its checks are answered only after the messages.
	p.hold(true)
	const n = 20
	for i := uint64(2); i <= n; i++ {
		publishLine(t, js, "st1", i)
	}
	time.AfterFunc(3*stallCheck, func() { p.hold(false) })
	for want := uint64(2); want <= n; want++ {
		e, err := f.Next()
		if err != nil || e.Line != want {
			t.Fatalf("got %+v, %v; want line %d", e, err, want)
		}
	}
	f.mu.Lock()
	now := f.cons.CachedInfo().Name
	f.mu.Unlock()
	if now != name {
		t.Fatalf("the lagging feed was reopened (consumer %s, then %s)", name, now)
	}
}

func publishLine(t *testing.T, js jetstream.JetStream, streamID string, seq uint64) {
	t.Helper()
	b, _ := json.Marshal(contracts.OutputLine{V: contracts.Version, StreamID: streamID, Seq: seq, Text: "x"})
	if _, err := js.Publish(context.Background(), contracts.SubjectOutput("p", streamID), b); err != nil {
		t.Fatal(err)
	}
}

// delayProxy forwards one NATS client connection to a server and can hold
// what the server sends, in order, as a slow reader would leave it queued.
type delayProxy struct {
	addr string

	mu      sync.Mutex
	release chan struct{} // while holding: closed when it ends
}

func newDelayProxy(t *testing.T, target string) *delayProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &delayProxy{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	var conns []net.Conn
	var connsMu sync.Mutex
	wg.Go(func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			connsMu.Lock()
			conns = append(conns, in, out)
			connsMu.Unlock()
			wg.Go(func() { _, _ = io.Copy(out, in); out.Close() })
			wg.Go(func() { p.forward(in, out); in.Close() })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		p.hold(false)
		connsMu.Lock()
		for _, c := range conns {
			c.Close()
		}
		connsMu.Unlock()
		wg.Wait()
	})
	return p
}

// forward copies src to dst, waiting before each write while held.
func (p *delayProxy) forward(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			release := p.release
			p.mu.Unlock()
			if release != nil {
				<-release
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// hold starts or ends holding what the server sends.
func (p *delayProxy) hold(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case on && p.release == nil:
		p.release = make(chan struct{})
	case !on && p.release != nil:
		close(p.release)
		p.release = nil
	}
}

// A feed's consumer delivers only messages stored after it was made. If
// nats.go makes it again before the feed received anything (it does so
// with the first configuration), the new one skips what was stored in
// between; the feed notices the new consumer and reopens from where it
// started, whether a later message comes (then that message is not used
// first) or the stream stays quiet (then its stall check notices). The
// remaking is staged by swapping in a consumer made after the skipped
// lines were stored.
func TestFeedRemadeBeforeItsFirstMessageLosesNothing(t *testing.T) {
	t.Parallel()
	_, _, js := natstest.Provisioned(t)
	kv, err := js.KeyValue(context.Background(), contracts.BucketState)
	if err != nil {
		t.Fatal(err)
	}
	s := New(js, kv, Config{Batch: 8, StallCheck: 200 * time.Millisecond}, slog.New(slog.DiscardHandler))
	for _, later := range []bool{true, false} {
		id := map[bool]string{true: "remade-busy", false: "remade-quiet"}[later]
		hf, _, err := s.Open(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		f := hf.(*feed)
		defer f.Close()
		f.it.Stop()
		publishLine(t, js, id, 1) // stored while the feed's consumer is being made again
		remade, err := js.OrderedConsumer(context.Background(), contracts.StreamOutput, jetstream.OrderedConsumerConfig{
			FilterSubjects: filters(id), DeliverPolicy: jetstream.DeliverNewPolicy,
		})
		if err != nil {
			t.Fatal(err)
		}
		if f.it, err = remade.Messages(); err != nil {
			t.Fatal(err)
		}
		f.cons = remade
		if later {
			publishLine(t, js, id, 2)
		}
		if e, err := f.Next(); err != nil || e.Line != 1 {
			t.Fatalf("%s: first entry %+v, %v; want line 1", id, e, err)
		}
		if later {
			if e, err := f.Next(); err != nil || e.Line != 2 {
				t.Fatalf("%s: second entry %+v, %v; want line 2", id, e, err)
			}
		}
	}
}
