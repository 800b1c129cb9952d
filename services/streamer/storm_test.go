package streamer_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/streamer"
)

// A reconnect storm: thousands of clients open streams with history at
// once. Each used to replay through a consumer of its own, and past the
// server's consumer limit (1,000 per stream by default in nats-server
// 2.15; lowered here to the streams' live feeds plus a little, so that a
// storm of this size reaches it) its replays failed with "maximum
// consumers limit reached" (10026): retried while the storm lasted, and
// the stream ended with an error event once that went on for longer than
// UnavailableAfter. Replays now read without a consumer and queue for
// their turn: not one replay fails, no stream fails, and every client gets
// every line once, in order, then the terminal event.
//
// Storage failures are retried as in production (a machine this loaded
// times requests out now and then, and that is what the retries are for),
// so the test counts the failures the streamer logs: none may be the
// consumer limit.
func TestReconnectStormFailsNoStream(t *testing.T) {
	t.Parallel()
	streams, perStream := 100, 20 // 2,000 clients
	if testing.Short() {
		streams, perStream = 20, 10
	}
	storm(t, streams, perStream, 40, streams+20)
}

// storm stores stored lines in each of streams streams, connects
// perStream clients to each at once, and checks that every client gets
// every line once, in order, then the terminal event, and that no storage
// failure was the consumer limit. maxConsumers, when set, lowers the
// output stream's consumer limit.
func storm(t *testing.T, streams, perStream int, stored uint64, maxConsumers int) {
	const live = 10 // lines stored during the storm
	logs := &limitLog{t: t}
	// Storage may fail for longer than the production default of 30s
	// before a stream gives up: at load 20 on 2 cores under -race, reads
	// of some streams went unanswered that long and their clients got an
	// error event. What is checked is that failures are ridden out, not
	// how fast this machine answers.
	f := setup(t, options{cfg: streamer.Config{Heartbeat: time.Second, UnavailableAfter: stormWait}, log: slog.New(logs)})
	ctx := context.Background()
	if maxConsumers > 0 {
		st, err := f.js.Stream(ctx, contracts.StreamOutput)
		if err != nil {
			t.Fatal(err)
		}
		cfg := st.CachedInfo().Config
		cfg.MaxConsumers = maxConsumers
		if _, err := f.js.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}

	jobs := make([]*job, streams)
	for i := range jobs {
		jobs[i] = f.newJob(t)
		jobs[i].event(t, contracts.EventStarted, 0)
		jobs[i].manyLines(t, 1, stored)
	}

	addr := strings.TrimPrefix(f.base, "http://")
	start := make(chan struct{})
	results := make(chan stormResult, streams*perStream)
	var wg sync.WaitGroup
	for _, j := range jobs {
		token := f.signer.Sign(access.StreamResource(j.streamID), time.Now().Add(time.Hour))
		for range perStream {
			wg.Go(func() {
				<-start
				results <- stormClient(addr, j.streamID, token)
			})
		}
	}
	// The rest of each stream is written while the clients connect: some
	// of it reaches them by replay, some live.
	close(start)
	finishStreams(t, f, jobs, stored, live)
	wg.Wait()
	close(results)
	checkResults(t, results)
	if n := logs.limit.Load(); n > 0 {
		t.Fatalf("%d storage failures were the consumer limit", n)
	}
	if n := f.consumers(t); n > streams {
		t.Fatalf("%d consumers after the storm, want at most one live feed per stream (%d)", n, streams)
	}
}

// finishStreams writes lines stored+1..stored+live of every job and its
// terminal event through a connection of its own, as a worker would, and
// waits for them generously: the streamer's connection may be busy.
func finishStreams(t *testing.T, f *fixture, jobs []*job, stored, live uint64) {
	t.Helper()
	// The connect competes with the storm's thousands of connections for
	// two loaded cores: the client's default timeout of 2s was seen to
	// run out.
	nc, err := nats.Connect(f.js.Conn().ConnectedUrl(), nats.Timeout(waitFor))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	worker, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	written := func() {
		select {
		case <-worker.PublishAsyncComplete():
		case <-time.After(stormWait):
			t.Fatal("the rest of the streams not stored")
		}
	}
	for i, j := range jobs {
		if i%100 == 99 { // stay below the client's limit of outstanding publishes
			written()
		}
		for seq := stored + 1; seq <= stored+live; seq++ {
			if _, err := worker.PublishAsync(contracts.SubjectOutput(j.project, j.streamID), j.lineData(seq)); err != nil {
				t.Fatal(err)
			}
		}
		b, _ := json.Marshal(contracts.Event{V: contracts.Version, Type: contracts.EventSucceeded, Status: contracts.StatusSucceeded,
			JobID: j.jobID, StreamID: j.streamID, Project: j.project, Attempt: 1, Lines: stored + live, Time: time.Now().UTC()})
		if _, err := worker.PublishAsync(contracts.SubjectEvent(j.project, j.streamID, contracts.EventSucceeded), b); err != nil {
			t.Fatal(err)
		}
	}
	written()
}

// checkResults fails the test if any client's stream failed.
func checkResults(t *testing.T, results <-chan stormResult) {
	t.Helper()
	failed, n := 0, 0
	for r := range results {
		n++
		if r.err != nil {
			failed++
			if failed <= 5 {
				t.Errorf("client of %s: %v", r.streamID, r.err)
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d streams failed", failed, n)
	}
}

// limitLog sends the service's warnings to t.Log and counts those caused
// by JetStream's consumer limit.
type limitLog struct {
	t     *testing.T
	limit atomic.Int64
}

func (l *limitLog) Enabled(_ context.Context, level slog.Level) bool { return level >= slog.LevelWarn }

func (l *limitLog) Handle(_ context.Context, r slog.Record) error {
	line := r.Message
	r.Attrs(func(a slog.Attr) bool {
		line += " " + a.String()
		return true
	})
	if strings.Contains(line, "maximum consumers limit") || strings.Contains(line, "10026") {
		l.limit.Add(1)
	}
	l.t.Log(line)
	return nil
}

func (l *limitLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *limitLog) WithGroup(string) slog.Handler      { return l }

// stormWait bounds the storm, generously: 2,000 clients share two loaded
// cores with the streamer and NATS, under the race detector in CI.
const stormWait = 2 * time.Minute

type stormResult struct {
	streamID string
	err      error
}

// stormClient reads one stream over a plain connection (thousands of
// http.Clients would cost the test more than the streamer) until its
// terminal event, and checks it got lines 1.. exactly once, in order.
func stormClient(addr, streamID, token string) stormResult {
	res := stormResult{streamID: streamID}
	conn, err := net.DialTimeout("tcp", addr, waitFor)
	if err != nil {
		res.err = err
		return res
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(stormWait))
	fmt.Fprintf(conn, "GET /v1/streams/%s/events?token=%s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n",
		streamID, url.QueryEscape(token), addr)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		res.err = err
		return res
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		res.err = fmt.Errorf("status %d", resp.StatusCode)
		return res
	}
	br := bufio.NewReader(resp.Body)
	var (
		name, data string
		next       uint64 = 1
	)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			res.err = fmt.Errorf("after line %d: %w", next-1, err)
			return res
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case strings.HasPrefix(line, "event:"):
			name = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			data = strings.TrimSpace(strings.TrimPrefix(line, "data:"))
		case line == "" && name != "":
			switch name {
			case "output":
				var l contracts.OutputLine
				if err := json.Unmarshal([]byte(data), &l); err != nil || l.Seq != next {
					res.err = fmt.Errorf("line %d, want %d: %w", l.Seq, next, err)
					return res
				}
				next++
			case "complete":
				var ev contracts.Event
				if err := json.Unmarshal([]byte(data), &ev); err != nil || ev.Lines != next-1 {
					res.err = fmt.Errorf("complete after %d lines: %s", next-1, data)
				}
				return res
			case "error", "gap":
				res.err = fmt.Errorf("event %s after line %d: %s", name, next-1, data)
				return res
			}
			name, data = "", ""
		}
	}
}
