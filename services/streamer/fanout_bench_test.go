package streamer

import (
	"context"
	"encoding/json"
	"iter"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/streamer/internal/entry"
	"github.com/rdev-dev/rdev/services/streamer/internal/follow"
	"github.com/rdev-dev/rdev/services/streamer/internal/hub"
	"github.com/rdev-dev/rdev/services/streamer/internal/sse"
)

// BenchmarkHubFanOut measures the streamer's fan-out alone: one stream's
// hub hands each entry to 1,000 clients, each followed by its own
// follow.Follower goroutine and written as SSE by the streamer's own sink
// (the default format, and ?format=claude on Claude Code's stream-json)
// into an sse.Writer. An op is one entry delivered to every client:
// ns/op and allocs/op are per entry for all 1,000 clients together,
// ns/delivery is ns/op / 1,000.
//
// The feed and the history are in memory and the writers discard what
// they are given: NATS and the sockets would measure themselves (the
// rdevbench fanout scenario measures everything, over real NATS and real
// connections); here only what the streamer does per client is left.
// The benchmark uses nothing but what main had before entries were
// encoded once per stream, so the same file measures both:
//
//	go test -run '^$' -bench BenchmarkHubFanOut -benchmem .
func BenchmarkHubFanOut(b *testing.B) {
	const clients = 1000
	plain, claudeLine := benchLines()
	b.Run("raw", func(b *testing.B) { benchFanOut(b, clients, plain, false) })
	b.Run("claude", func(b *testing.B) { benchFanOut(b, clients, claudeLine, true) })
}

// benchLines returns an output line as the fanout scenario prints them
// (100 bytes of text) and a line of Claude Code's stream-json, as stored.
func benchLines() (plain, claude []byte) {
	line := contracts.OutputLine{V: contracts.OutputLineVersion, StreamID: "bench", JobID: "job-bench",
		Attempt: 1, Seq: 1, FD: contracts.Stdout, Time: time.Date(2026, 12, 5, 15, 40, 0, 0, time.UTC),
		Text: "a line of 100 bytes, as rdevbench fanout prints them: 2026-12-05T15:40:00.000000000Z ............"}
	plain, _ = json.Marshal(line)
	line.Text = `{"type":"assistant","message":{"role":"assistant","content":[{"type":"text","text":"hi"},{"type":"tool_use","id":"toolu_1","name":"Bash","input":{"command":"ls"}}]},"session_id":"s1"}`
	claude, _ = json.Marshal(line)
	return plain, claude
}

func benchFanOut(b *testing.B, clients int, data []byte, claude bool) {
	src := &benchSource{c: make(chan entry.Entry)}
	hubs := hub.New(src, hub.Config{Buffer: 1 << 16}, slog.New(slog.DiscardHandler))
	defer hubs.Close()
	f := &follow.Follower{Hubs: hubs, History: src, Heartbeat: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	var (
		running sync.WaitGroup
		until   atomic.Uint64 // the entry every client must have sent
		left    atomic.Int64  // clients that have not sent it yet
		reached = make(chan struct{}, 1)
	)
	for range clients {
		running.Go(func() {
			var k follow.Sink = sink{sse.NewWriter(discard{}, time.Minute)}
			if claude {
				k = claudeSink{sink{sse.NewWriter(discard{}, time.Minute)}}
			}
			cur := follow.Cursor{}
			_ = f.Run(ctx, f.Prepare(ctx, "bench"), &cur, &markSink{Sink: k, until: &until, left: &left, reached: reached})
		})
	}
	var seq uint64
	// round pushes entries up to last and waits for every client to have
	// sent it.
	round := func(last uint64) {
		until.Store(last)
		left.Store(int64(clients))
		for seq < last {
			seq++
			src.push(entry.Entry{StreamSeq: seq, Kind: entry.Line, Line: seq, Data: data})
		}
		select {
		case <-reached:
		case <-time.After(time.Minute):
			b.Fatalf("entry %d not sent to every client: %d left", last, left.Load())
		}
	}
	round(1) // every client has joined once it sent the first entry (live or replayed)
	const window = 64
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; {
		step := min(window, b.N-n)
		round(seq + uint64(step))
		n += step
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(clients), "ns/delivery")
	cancel()
	running.Wait()
}

// markSink counts down the clients that sent the entry until says.
type markSink struct {
	follow.Sink
	until   *atomic.Uint64
	left    *atomic.Int64
	reached chan struct{}
}

func (k *markSink) Send(e entry.Entry) error {
	if err := k.Sink.Send(e); err != nil {
		return err
	}
	if e.StreamSeq == k.until.Load() && k.left.Add(-1) == 0 {
		k.reached <- struct{}{}
	}
	return nil
}

// benchSource is one stream held in memory: its live feed and its
// history.
type benchSource struct {
	c chan entry.Entry

	mu     sync.Mutex
	stored []entry.Entry
}

func (s *benchSource) push(e entry.Entry) {
	s.mu.Lock()
	s.stored = append(s.stored, e)
	s.mu.Unlock()
	s.c <- e
}

func (s *benchSource) Open(context.Context, string) (hub.Feed, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var end uint64
	if n := len(s.stored); n > 0 {
		end = s.stored[n-1].StreamSeq
	}
	return &benchFeed{c: s.c, closed: make(chan struct{})}, end, nil
}

func (s *benchSource) Replay(_ context.Context, _ string, after, until uint64) iter.Seq2[entry.Entry, error] {
	return func(yield func(entry.Entry, error) bool) {
		s.mu.Lock()
		stored := s.stored
		s.mu.Unlock()
		for _, e := range stored {
			if e.StreamSeq > after && !yield(e, nil) || e.StreamSeq >= until {
				return
			}
		}
	}
}

type benchFeed struct {
	c      chan entry.Entry
	once   sync.Once
	closed chan struct{}
}

func (f *benchFeed) Next() (entry.Entry, error) {
	select {
	case e := <-f.c:
		return e, nil
	case <-f.closed:
		return entry.Entry{}, hub.ErrClosed
	}
}

func (f *benchFeed) Close() { f.once.Do(func() { close(f.closed) }) }

// discard is a client connection that takes everything at once.
type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(p []byte) (int, error) { return len(p), nil }
func (discard) WriteHeader(int)             {}
func (discard) Flush()                      {}

// SetWriteDeadline spares sse.Writer the error (allocated) that
// http.ResponseController returns for a writer without deadlines: a
// connection the streamer took over has them.
func (discard) SetWriteDeadline(time.Time) error { return nil }
