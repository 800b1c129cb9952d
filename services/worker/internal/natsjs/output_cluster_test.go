package natsjs_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
	"github.com/rdev-dev/rdev/services/worker/internal/natsjs"
)

// rawSeqs returns the Seq of every line stored for a stream, in storage
// order, duplicates included: what a NATS subscriber reads.
func rawSeqs(t *testing.T, js jetstream.JetStream, streamID string) []uint64 {
	t.Helper()
	// Generous: 4,000 lines read on a loaded 2-core machine under -race,
	// after a node restart or a leader change.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var (
		seqs []uint64
		err  error
	)
	// A read fails while a new leader is being elected, or goes
	// unanswered while a node that came back recovers: each try has a
	// timeout of its own, so one unanswered request does not use up the
	// wait.
	if await.Poll(ctx, func() bool {
		try, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		seqs, err = readSeqs(try, js, streamID)
		return err == nil
	}) != nil {
		t.Fatal("read stored lines:", err)
	}
	return seqs
}

// readSeqs reads the stream's lines through an ordered consumer, in
// batches (a request per line, GetMsg, took more than 30s for 4,000 lines
// on a loaded machine), as many as the stream's leader counts on the
// stream's subjects.
func readSeqs(ctx context.Context, js jetstream.JetStream, streamID string) ([]uint64, error) {
	subject := contracts.SubjectStreamOutput(streamID)
	s, err := js.Stream(ctx, contracts.StreamOutput)
	if err != nil {
		return nil, fmt.Errorf("stream: %w", err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return nil, fmt.Errorf("stream info: %w", err)
	}
	left := 0
	for _, n := range info.State.Subjects {
		left += int(n)
	}
	c, err := js.OrderedConsumer(ctx, contracts.StreamOutput, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		return nil, fmt.Errorf("consumer: %w", err)
	}
	var seqs []uint64
	for left > 0 {
		batch, err := c.Fetch(min(left, 1000), jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			return nil, fmt.Errorf("line after %d: %w", len(seqs), err)
		}
		read := len(seqs)
		for m := range batch.Messages() {
			var l contracts.OutputLine
			if err := json.Unmarshal(m.Data(), &l); err != nil {
				return nil, err
			}
			seqs = append(seqs, l.Seq)
			left--
		}
		if err := batch.Error(); err != nil {
			return nil, fmt.Errorf("line after %d: %w", len(seqs), err)
		}
		if len(seqs) == read {
			return nil, fmt.Errorf("line after %d: none within 10s, %d pending", len(seqs), left)
		}
	}
	return seqs, nil
}

// exactly fails unless seqs is 1..n.
func exactly(t *testing.T, seqs []uint64, n int) {
	t.Helper()
	if len(seqs) != n {
		t.Errorf("%d lines stored, want %d", len(seqs), n)
	}
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("stored line %d has seq %d: lost, duplicated or reordered (first 5 after: %v)", i+1, s, seqs[i:min(i+5, len(seqs))])
		}
	}
}

// clusterWriter provisions the topology with replicas on a 3-node cluster
// and returns a connection to url for the writer and one to every node
// for checks.
func clusterSetup(t *testing.T, replicas int) (*natstest.Cluster, jetstream.JetStream) {
	t.Helper()
	c := natstest.NewCluster(t, 3)
	return c, c.Provision(replicas)
}

func writerConn(t *testing.T, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.ReconnectBufSize(-1), nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond), nats.ReconnectJitter(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(2*time.Second), jetstream.WithDefaultTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// writeThrough writes n lines, paced, and calls fault once half of them
// are written; it returns what Close reports.
func writeThrough(t *testing.T, w *natsjs.LineWriter, n int, fault func()) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	for i := 1; i <= n; i++ {
		if i == n/2 {
			go fault()
		}
		if err := w.Line(ctx, contracts.Stdout, fmt.Appendf(nil, "line %d", i), false); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if i%10 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	last, err := w.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return last
}

// The node holding an R1 output stream dies and comes back while a job
// prints; the writer is connected to another node, so its connection never
// drops: publishes fail for a while, then succeed again. Every line must
// be stored once, in order.
func TestLineWriterR1StreamNodeRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	t.Parallel()
	c, js := clusterSetup(t, 1)
	host := c.WaitStreamLeader(contracts.StreamOutput, 10*time.Second)
	other := (host + 1) % 3
	nc, wjs := writerConn(t, c.NodeURL(other))
	job := contracts.Job{ID: "r1job", StreamID: "r1stream", Project: "demo"}
	w := natsjs.NewOutput(nc, wjs, 256).Open(job, 1, 1)
	const n = 4000
	restarted := make(chan struct{})
	last := writeThrough(t, w, n, func() {
		defer close(restarted)
		c.Stop(host)
		time.Sleep(2 * time.Second)
		c.Start(host)
	})
	<-restarted
	if last != n {
		t.Errorf("Close reported %d lines stored, want %d", last, n)
	}
	exactly(t, rawSeqs(t, js, job.StreamID), n)
}

// The leader of an R3 output stream dies while a job prints, connected to
// every node: a new leader takes over and every line is stored once, in
// order; the old leader comes back and catches up.
func TestLineWriterR3LeaderLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	t.Parallel()
	c, js := clusterSetup(t, 3)
	leader := c.WaitStreamLeader(contracts.StreamOutput, 10*time.Second)
	nc, wjs := writerConn(t, c.URL())
	job := contracts.Job{ID: "r3job", StreamID: "r3stream", Project: "demo"}
	w := natsjs.NewOutput(nc, wjs, 256).Open(job, 1, 1)
	const n = 4000
	stopped := make(chan time.Time, 1)
	last := writeThrough(t, w, n, func() {
		stopped <- time.Now()
		c.Stop(leader)
	})
	t.Logf("leader n%d stopped; %d lines stored %s later", leader, last, time.Since(<-stopped).Round(time.Millisecond))
	if last != n {
		t.Errorf("Close reported %d lines stored, want %d", last, n)
	}
	exactly(t, rawSeqs(t, js, job.StreamID), n)
	c.Start(leader)
}

// A server that loses lines it had acknowledged (here: deleted behind the
// writer's back, as a single server that crashed before writing them out
// would): the writer sends them again from its window of recent lines; what
// is no longer in the window is reported lost, and the stored lines show
// the gap instead of storing anything out of order.
func TestLineWriterResendsLinesTheServerLost(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		window, drop int
		lost         bool
	}{
		{name: "within the window", window: 64, drop: 5},
		{name: "beyond the window", window: 8, drop: 20, lost: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addr, dir := natstest.FreeAddr(t), t.TempDir()
			srv := startServer(t, addr, dir)
			defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
			nc, js := writerConn(t, "nats://"+addr)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := topology.Ensure(ctx, js, topology.Config{}); err != nil {
				t.Fatal(err)
			}
			job := contracts.Job{ID: "lostjob", StreamID: "loststream", Project: "demo"}
			w := natsjs.NewOutput(nc, js, tc.window).Open(job, 1, 1)
			write := func(from, to int) {
				for i := from; i <= to; i++ {
					if err := w.Line(ctx, contracts.Stdout, fmt.Appendf(nil, "line %d", i), false); err != nil {
						t.Fatal(err)
					}
				}
			}
			write(1, 50)
			s, err := js.Stream(ctx, contracts.StreamOutput)
			if err != nil {
				t.Fatal(err)
			}
			if await.Poll(ctx, func() bool {
				seqs, err := readSeqs(ctx, js, job.StreamID)
				return err == nil && len(seqs) == 50
			}) != nil {
				t.Fatal("the first 50 lines were not stored")
			}
			for range tc.drop {
				m, err := s.GetLastMsgForSubject(ctx, contracts.SubjectOutput(job.Project, job.StreamID))
				if err != nil {
					t.Fatal(err)
				}
				if err := s.DeleteMsg(ctx, m.Sequence); err != nil {
					t.Fatal(err)
				}
			}
			write(51, 100)
			last, err := w.Close(ctx)
			seqs := rawSeqs(t, js, job.StreamID)
			if !tc.lost {
				if err != nil || last != 100 {
					t.Fatalf("Close: %d, %v; want 100, nil", last, err)
				}
				exactly(t, seqs, 100)
				return
			}
			if !errors.Is(err, natsjs.ErrOutputLost) || last != 100 {
				t.Fatalf("Close: %d, %v; want 100, ErrOutputLost", last, err)
			}
			kept := 50 - tc.drop
			want := 100 - (tc.drop - tc.window)
			if len(seqs) != want || seqs[kept-1] != uint64(kept) || seqs[kept] != uint64(kept+tc.drop-tc.window+1) {
				t.Fatalf("stored %v, want 1..%d then a gap to %d..100", seqs, kept, kept+tc.drop-tc.window+1)
			}
			for i := 1; i < len(seqs); i++ {
				if seqs[i] <= seqs[i-1] {
					t.Fatalf("stored out of order at %d: %v", i, seqs)
				}
			}
		})
	}
}
