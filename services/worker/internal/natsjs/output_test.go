package natsjs_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology"
	"github.com/rdev-dev/rdev/pkg/topology/natsserver"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
	"github.com/rdev-dev/rdev/services/worker/internal/natsjs"
)

func startServer(t *testing.T, addr, dir string) *server.Server {
	t.Helper()
	srv, err := natsserver.Start(natsserver.Config{Addr: addr, StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// startWithTopology starts a server of its own with rdev's streams and
// buckets, and connects to it; all of it ends with the test.
func startWithTopology(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	srv := startServer(t, "", t.TempDir())
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := topology.Ensure(ctx, js, topology.Config{}); err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// storedSeqs replays a stream's lines and returns their Seqs as a reader
// following the contract sees them: duplicates (Seq already seen) dropped.
func storedSeqs(t *testing.T, js jetstream.JetStream, streamID string) (seqs []uint64, dups int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, contracts.StreamOutput, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{contracts.SubjectStreamOutput(streamID)},
	})
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var maxSeen uint64
	for left := info.NumPending; left > 0; left-- {
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var l contracts.OutputLine
		if err := json.Unmarshal(m.Data(), &l); err != nil {
			t.Fatal(err)
		}
		if l.Seq <= maxSeen {
			dups++
			continue
		}
		maxSeen = l.Seq
		seqs = append(seqs, l.Seq)
	}
	return seqs, dups
}

// The NATS server restarts while a job prints: the writer notices, asks
// JetStream what it stored and publishes the rest, so a reader sees every
// line exactly once and in order.
func TestLineWriterSurvivesServerRestart(t *testing.T) {
	t.Parallel()
	addr, dir := natstest.FreeAddr(t), t.TempDir()
	srv := startServer(t, addr, dir)
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()

	nc, err := nats.Connect("nats://"+addr, nats.ReconnectBufSize(-1), nats.MaxReconnects(-1),
		nats.ReconnectWait(20*time.Millisecond), nats.ReconnectJitter(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := topology.Ensure(ctx, js, topology.Config{}); err != nil {
		t.Fatal(err)
	}

	job := contracts.Job{ID: "job1", StreamID: "restart1", Project: "demo"}
	w := natsjs.NewOutput(nc, js, 256).Open(job, 1, 1)
	const n = 8000
	restarted := make(chan struct{})
	go func() {
		defer close(restarted)
		// Restart once the writer is well under way (or, if ctx ends
		// first, at once: the test then fails on its lines).
		_ = await.Poll(ctx, func() bool {
			s, err := js.Stream(ctx, contracts.StreamOutput)
			if err != nil {
				return false
			}
			info, err := s.Info(ctx)
			return err == nil && info.State.Msgs > n/4
		})
		srv.Shutdown()
		srv.WaitForShutdown()
		srv = startServer(t, addr, dir)
	}()
	for i := 1; i <= n; i++ {
		if err := w.Line(ctx, contracts.Stdout, fmt.Appendf(nil, "line %d", i), false); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
	}
	last, err := w.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	<-restarted
	if last != n {
		t.Fatalf("last seq %d, want %d", last, n)
	}
	if nc.Stats().Reconnects == 0 {
		t.Fatal("the connection never reconnected: the test did not exercise a restart")
	}
	seqs, dups := storedSeqs(t, js, job.StreamID)
	if len(seqs) != n {
		t.Fatalf("reader saw %d distinct lines, want %d", len(seqs), n)
	}
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("line %d has seq %d: lost or reordered", i+1, s)
		}
	}
	t.Logf("%d lines stored across a server restart, %d duplicates dropped by seq", n, dups)
}

// A job retried across the upgrade to project subjects: its first
// attempt's lines are on rdev.output.<stream_id> (version 1). The next
// attempt finds them (LastSeq), numbers its lines after them, and stores
// them on the project's subject, with version 2.
func TestLineWriterContinuesStreamBegunOnLegacySubject(t *testing.T) {
	t.Parallel()
	nc, js := startWithTopology(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	job := contracts.Job{ID: "job-legacy", StreamID: "legacy1", Project: "demo"}
	for seq := uint64(1); seq <= 3; seq++ {
		b, _ := json.Marshal(contracts.OutputLine{V: 1, StreamID: job.StreamID, JobID: job.ID, Attempt: 1, Seq: seq, Text: "old"})
		if _, err := js.Publish(ctx, contracts.SubjectOutputLegacy(job.StreamID), b); err != nil {
			t.Fatal(err)
		}
	}
	out := natsjs.NewOutput(nc, js, 16)
	first, err := out.LastSeq(ctx, job.Project, job.StreamID)
	if err != nil || first != 3 {
		t.Fatalf("LastSeq = %d, %v; want the legacy subject's 3", first, err)
	}
	w := out.Open(job, 2, first+1)
	for i := range 2 {
		if err := w.Line(ctx, contracts.Stdout, fmt.Appendf(nil, "new %d", i), false); err != nil {
			t.Fatal(err)
		}
	}
	if last, err := w.Close(ctx); err != nil || last != 5 {
		t.Fatalf("Close = %d, %v; want 5", last, err)
	}
	s, err := js.Stream(ctx, contracts.StreamOutput)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, contracts.SubjectOutput(job.Project, job.StreamID))
	if err != nil {
		t.Fatal(err)
	}
	var l contracts.OutputLine
	if err := json.Unmarshal(m.Data, &l); err != nil || l.Seq != 5 || l.V != contracts.OutputLineVersion {
		t.Fatalf("last line on the project subject: %+v, %v", l, err)
	}
	if n, err := out.LastSeq(ctx, job.Project, job.StreamID); err != nil || n != 5 {
		t.Fatalf("LastSeq after the new lines = %d, %v; want 5", n, err)
	}
}

// A plain subscriber of a stream's output subject (a direct subscriber)
// receives lines only: the writer commits each fast batch with its last
// line, so the batch's empty end marker never reaches the subject.
// A job printing steadily has its lines gathered: those that follow a
// publish within the linger wait for it to pass and go together, while a
// line after a quiet spell goes at once, and Close does not wait.
func TestLineWriterGathersABusyStreamsLines(t *testing.T) {
	t.Parallel()
	nc, js := startWithTopology(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	job := contracts.Job{ID: "job-gather", StreamID: "gather1", Project: "demo"}
	sub, err := nc.SubscribeSync(contracts.SubjectOutput(job.Project, job.StreamID))
	if err != nil {
		t.Fatal(err)
	}
	const linger = 4 * time.Second // far above a publish, even under load
	out := natsjs.NewOutput(nc, js, 64)
	out.SetLinger(linger)
	w := out.Open(job, 1, 1)
	line := func(i int) {
		t.Helper()
		if err := w.Line(ctx, contracts.Stdout, fmt.Appendf(nil, "line %d", i), false); err != nil {
			t.Fatal(err)
		}
	}
	arrive := func(n int) time.Time {
		t.Helper()
		for range n {
			if _, err := sub.NextMsg(30 * time.Second); err != nil {
				t.Fatal(err)
			}
		}
		return time.Now()
	}

	start := time.Now()
	line(1) // the first line: nothing was published before it
	if at := arrive(1).Sub(start); at >= linger/2 {
		t.Fatalf("the first line was published after %v: it waited for the linger", at)
	}
	line(2) // within the linger of the first publish: they wait for it
	line(3)
	line(4)
	if at := arrive(3).Sub(start); at < linger {
		t.Fatalf("the lines following a publish went after %v, within the linger of %v", at, linger)
	}
	line(5)
	closing := time.Now()
	if last, err := w.Close(ctx); err != nil || last != 5 {
		t.Fatalf("Close = %d, %v; want 5", last, err)
	}
	if d := time.Since(closing); d >= linger/2 {
		t.Fatalf("Close took %v: it waited for the linger", d)
	}
	if seqs, dups := storedSeqs(t, js, job.StreamID); len(seqs) != 5 || dups != 0 {
		t.Fatalf("stored %v (%d duplicates); want lines 1 to 5 once", seqs, dups)
	}
}

func TestLineWriterLiveSubscribersSeeOnlyLines(t *testing.T) {
	t.Parallel()
	nc, js := startWithTopology(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	job := contracts.Job{ID: "job-live", StreamID: "live1", Project: "demo"}
	subject := contracts.SubjectOutput(job.Project, job.StreamID)
	sub, err := nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	const lines = 5_000
	w := natsjs.NewOutput(nc, js, 16).Open(job, 1, 1)
	for i := range lines {
		if err := w.Line(ctx, contracts.Stdout, fmt.Appendf(nil, "line %d", i), false); err != nil {
			t.Fatal(err)
		}
	}
	if last, err := w.Close(ctx); err != nil || last != lines {
		t.Fatalf("Close = %d, %v; want %d", last, err, lines)
	}
	if seqs, dups := storedSeqs(t, js, job.StreamID); len(seqs) != lines || dups != 0 {
		t.Fatalf("stored %d lines (%d duplicates); want %d once", len(seqs), dups, lines)
	}

	// The same connection's next message reaches the subscriber after
	// everything the writer sent, end markers included.
	if err := nc.Publish(subject, []byte("sentinel")); err != nil {
		t.Fatal(err)
	}
	var got, empty, other int
	for {
		m, err := sub.NextMsg(30 * time.Second)
		if err != nil {
			t.Fatalf("after %d lines: %v", got, err)
		}
		if string(m.Data) == "sentinel" {
			break
		}
		var l contracts.OutputLine
		switch {
		case len(m.Data) == 0:
			empty++
		case json.Unmarshal(m.Data, &l) != nil:
			other++
		default:
			got++
		}
	}
	if empty != 0 || other != 0 || got < lines {
		t.Fatalf("subscriber got %d lines, %d empty and %d other messages; want %d lines only", got, empty, other, lines)
	}
}
