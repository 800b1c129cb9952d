package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
)

// clusterWait bounds each wait on the cluster below (a follower storing
// what it was sent, routes settling after a cut). Generous: under -race
// on a loaded CI machine a 4-node cluster is slow; the waits end on their
// signal, seconds at most on a quiet machine.
const clusterWait = 60 * time.Second

// lagging is a 4-node cluster whose output stream (R3) has a follower that
// stopped replicating from its leader, yet answers every direct get of
// the client's node.
type lagging struct {
	c *natstest.Cluster
	// leader leads the output stream, follower replicates it, lagging is
	// the replica cut off, client the node that holds no replica, to which
	// the store under test connects.
	leader, follower, lagging, client int
	pub                               jetstream.JetStream // on the leader's node
	nc                                *nats.Conn          // the store's connection, on the client's node
	store                             *Store
}

// newLagging builds the cluster and takes the roles from where JetStream
// placed the stream. The cuts, once made (cut), leave:
//   - the system account's routes (replication, the JetStream API) among
//     leader, follower and client only: the lagging replica hears no
//     append, and takes part in no election, the meta group's included
//     (it is never the meta leader), so it disturbs nothing, answers no
//     API request, and the leader stays the one to answer the store's;
//   - the accounts' routes (clients' messages) of the client's node to
//     the lagging replica only: every direct get the store sends goes to
//     it, while the leader and the follower still serve each other and
//     the publisher.
//
// With metaOnClient the client's node leads the meta group, so that a
// test may leave the lagging replica's system route to it open (the
// replica hears its meta leader and disturbs no election): the stream is
// moved off the meta leader's node if JetStream placed it there.
func newLagging(t *testing.T, metaOnClient bool) *lagging {
	t.Helper()
	c := natstest.NewCluster(t, 4)
	js := c.Provision(3)
	meta := c.MetaLeader()
	info := placement(t, c, js, -1)
	if metaOnClient && slices.Contains(info.peers, meta) {
		removePeer(t, js, meta)
		info = placement(t, c, js, meta)
		if now := c.MetaLeader(); now != meta {
			t.Fatalf("the meta leader moved from n%d to n%d", meta, now)
		}
	}
	l := &lagging{c: c, leader: info.peers[0], client: -1}
	for i := range 4 {
		if !slices.Contains(info.peers, i) {
			l.client = i
		}
	}
	// The lagging replica must not lead the meta group: cut off, it would
	// leave the others without one until they elect another.
	l.lagging, l.follower = info.peers[1], info.peers[2]
	if l.lagging == meta {
		l.lagging, l.follower = l.follower, l.lagging
	}
	t.Logf("leader n%d, follower n%d, lagging n%d, client n%d, meta leader n%d", l.leader, l.follower, l.lagging, l.client, meta)

	l.pub = c.ConnectNode(l.leader)
	cjs := c.ConnectNode(l.client)
	l.nc = cjs.Conn()
	l.store = New(cjs, nil, Config{Batch: 4}, slog.New(slog.DiscardHandler))
	return l
}

// placed is where the output stream is: the leader first.
type placed struct{ peers []int }

// placement waits until the output stream has a leader and two current
// replicas, none of them node not, and returns them.
func placement(t *testing.T, c *natstest.Cluster, js jetstream.JetStream, not int) placed {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
	defer cancel()
	var last string
	for ctx.Err() == nil {
		// A request sent while the stream elects its leader may go
		// unanswered: each try has its own timeout.
		tctx, tcancel := context.WithTimeout(ctx, 5*time.Second)
		info, err := streamInfo(tctx, js)
		tcancel()
		if err == nil && info.Cluster != nil {
			p := placed{peers: []int{c.NodeIndex(info.Cluster.Leader)}}
			last = "leader " + info.Cluster.Leader
			for _, r := range info.Cluster.Replicas {
				if r.Current {
					p.peers = append(p.peers, c.NodeIndex(r.Name))
				}
				last += fmt.Sprintf(", replica %s current %v lag %d", r.Name, r.Current, r.Lag)
			}
			if len(p.peers) == 3 && !slices.Contains(p.peers, -1) && !slices.Contains(p.peers, not) {
				return p
			}
		}
		if err != nil {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("stream %s has no leader and two current replicas off n%d within %s: %s", contracts.StreamOutput, not, clusterWait, last)
	return placed{}
}

func streamInfo(ctx context.Context, js jetstream.JetStream) (*jetstream.StreamInfo, error) {
	st, err := js.Stream(ctx, contracts.StreamOutput)
	if err != nil {
		return nil, err
	}
	// The replicas' names come with the leader's answer.
	return st.Info(ctx)
}

// removePeer asks JetStream to move the output stream's replica off node
// i (to the node that holds none). It retries while JetStream refuses
// ("peer remap failed": the meta leader found no node to move it to, seen
// once in ten runs right after the cluster started).
func removePeer(t *testing.T, js jetstream.JetStream, i int) {
	t.Helper()
	req, err := json.Marshal(map[string]string{"peer": fmt.Sprintf("n%d", i)})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(clusterWait)
	for {
		m, err := js.Conn().Request("$JS.API.STREAM.PEER.REMOVE."+contracts.StreamOutput, req, 5*time.Second)
		var resp struct {
			Success bool `json:"success"`
		}
		if err == nil && json.Unmarshal(m.Data, &resp) == nil && resp.Success {
			return
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New(string(m.Data))
			}
			t.Fatalf("remove n%d from %s within %s: %v", i, contracts.StreamOutput, clusterWait, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// cut makes the lagging replica lag from now on (see newLagging).
func (l *lagging) cut() {
	c := l.c
	c.Cut(l.lagging, l.leader, natstest.AllRoutes)
	c.Cut(l.lagging, l.follower, natstest.AllRoutes)
	c.Cut(l.lagging, l.client, natstest.SystemRoutes)
	c.Cut(l.client, l.leader, natstest.AccountRoutes)
	c.Cut(l.client, l.follower, natstest.AccountRoutes)
}

// stored returns the last sequence node i has stored of the output
// stream.
func (l *lagging) stored(t *testing.T, i int) uint64 {
	t.Helper()
	jsz, err := l.c.Server(i).Jsz(&server.JSzOptions{Accounts: true, Streams: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range jsz.AccountDetails {
		for _, s := range a.Streams {
			if s.Name == contracts.StreamOutput {
				return s.State.LastSeq
			}
		}
	}
	t.Fatalf("n%d holds no %s", i, contracts.StreamOutput)
	return 0
}

// waitStored waits until node i has stored the output stream up to seq.
func (l *lagging) waitStored(t *testing.T, i int, seq uint64) {
	t.Helper()
	deadline := time.Now().Add(clusterWait)
	for l.stored(t, i) < seq {
		if time.Now().After(deadline) {
			t.Fatalf("n%d stored up to %d, not %d, within %s", i, l.stored(t, i), seq, clusterWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// directGet sends a raw direct get of the message at seq from the store's
// node and says whether it was found. An error is a request unanswered
// (sent, maybe, on a route a cut just closed) or an unexpected status.
func (l *lagging) directGet(seq uint64) (bool, error) {
	req, err := json.Marshal(map[string]uint64{"seq": seq})
	if err != nil {
		return false, err
	}
	m, err := l.nc.Request("$JS.API.DIRECT.GET."+contracts.StreamOutput, req, readWait)
	if err != nil {
		return false, fmt.Errorf("direct get of %d: %w", seq, err)
	}
	switch status := m.Header.Get("Status"); status {
	case "":
		return true, nil
	case "404":
		return false, nil
	default:
		return false, fmt.Errorf("direct get of %d: status %s %s", seq, status, m.Header.Get("Description"))
	}
}

// staleRun is how many direct gets in a row must miss a stored message
// before the test believes the lagging replica answers them all: were any
// answered by the leader or the follower (a cut that did not hold), one
// in three would find it, and eight misses by chance are one in 6,561.
const staleRun = 8

// A replay, and a resume's At, through a store whose direct gets a real
// follower answers, one that stopped replicating from its leader: every
// entry up to the boundary comes back, none missing. The follower's
// direct gets end short (checked first: without that the test proves
// nothing); the leader's answer (source.confirm, Store.leaderAt) fills
// in the rest.
func TestReplayThroughALaggingFollowerMissesNothing(t *testing.T) {
	t.Parallel()
	l := newLagging(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
	defer cancel()
	const id = "lag1"

	// Before the cut: history every replica stores.
	seqs := history(t, l.pub, id, 9)
	before := seqs[len(seqs)-1]    // the stream's last entry before the cut
	cutAt := l.stored(t, l.leader) // the output stream's last message then
	l.waitStored(t, l.lagging, cutAt)
	l.cut()

	// After it: lines and the terminal event the lagging replica never
	// receives.
	for i := 10; i <= 30; i++ {
		seqs = append(seqs, put(t, l.pub, contracts.SubjectOutput("p", id),
			contracts.OutputLine{V: 1, StreamID: id, Seq: uint64(i), Text: "x"}))
	}
	seqs = append(seqs, put(t, l.pub, contracts.SubjectEvent("p", id, contracts.EventSucceeded),
		contracts.Event{V: contracts.Version, Type: contracts.EventSucceeded, StreamID: id}))
	last := seqs[len(seqs)-1]
	l.waitStored(t, l.follower, last)

	// The setup holds: the lagging replica lacks what followed the cut,
	// and answers the store's node's direct gets (the cut settles: the
	// client's node drops the others' direct get interest once their
	// routes close).
	deadline := time.Now().Add(clusterWait)
	for misses := 0; misses < staleRun; {
		found, err := l.directGet(last)
		if found || err != nil {
			misses = 0
		} else {
			misses++
		}
		if time.Now().After(deadline) {
			t.Fatalf("precondition: direct gets from n%d still find %d, or fail (last: %v), after %s: the lagging replica does not answer them all",
				l.client, last, err, clusterWait)
		}
	}
	if got := l.stored(t, l.lagging); got != cutAt {
		t.Fatalf("precondition: the lagging replica stored up to %d, want %d (it must not have received what followed the cut)", got, cutAt)
	}
	if found, err := l.directGet(before); !found || err != nil {
		t.Fatalf("precondition: the lagging replica does not answer with %d, which it stored: %v", before, err)
	}
	if m, err := l.store.leaderNext(ctx, "", last); err != nil || m == nil || m.seq != last {
		t.Fatalf("precondition: the leader's answer for %d = %+v, %v", last, m, err)
	}

	equal(t, "replay of everything through the lagging replica", collect(t, l.store, id, 0, last), seqs)
	equal(t, "replay resumed before the cut", collect(t, l.store, id, seqs[3], last), seqs[4:])
	equal(t, "replay resumed after the cut", collect(t, l.store, id, seqs[len(seqs)-5], last), seqs[len(seqs)-4:])
	for _, seq := range []uint64{before, seqs[len(seqs)-2], last} {
		e, err := l.store.At(ctx, id, seq)
		if err != nil || e.StreamSeq != seq {
			t.Fatalf("At(%d) = %+v, %v; want the entry stored there", seq, e, err)
		}
	}
	if _, err := l.store.At(ctx, id, last+1); !errors.Is(err, ErrNoMessage) {
		t.Fatalf("At(%d), beyond the end = %v, want ErrNoMessage", last+1, err)
	}

	// Still lagging: the replays above ran against a stale replica.
	if got := l.stored(t, l.lagging); got != cutAt {
		t.Fatalf("the lagging replica caught up during the test (stored up to %d): the cut did not hold", got)
	}
}

// A replica without a leader that the store's node still reaches on the
// system account's route answers the JetStream API itself: a message get
// gets "JetStream system temporarily unavailable" (10008) from it, often
// before the leader's answer. The leader check waits for the leader's
// answer instead of taking the replica's for its own: a replay and At
// through the store still get everything, however often they ask.
func TestLeaderCheckWaitsForTheLeaderPastALeaderlessReplica(t *testing.T) {
	t.Parallel()
	l := newLagging(t, true)
	const id = "lagless1"
	seqs := history(t, l.pub, id, 3)
	l.waitStored(t, l.lagging, l.stored(t, l.leader))
	// As cut, but the lagging replica keeps its system route to the
	// client's node: it hears the meta leader there and answers API
	// requests sent from there.
	c := l.c
	c.Cut(l.lagging, l.leader, natstest.AllRoutes)
	c.Cut(l.lagging, l.follower, natstest.AllRoutes)
	c.Cut(l.client, l.leader, natstest.AccountRoutes)
	c.Cut(l.client, l.follower, natstest.AccountRoutes)
	for i := 4; i <= 9; i++ {
		seqs = append(seqs, put(t, l.pub, contracts.SubjectOutput("p", id),
			contracts.OutputLine{V: 1, StreamID: id, Seq: uint64(i), Text: "x"}))
	}
	last := seqs[len(seqs)-1]

	// The setup holds: once its election timeout has passed, the lagging
	// replica answers message gets with 10008, and some of its answers
	// come first.
	deadline := time.Now().Add(clusterWait)
	for !l.unavailableAnswer(t, last) {
		if time.Now().After(deadline) {
			t.Fatalf("precondition: no message get was answered with 10008 within %s", clusterWait)
		}
		time.Sleep(100 * time.Millisecond)
	}

	ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
	defer cancel()
	for range 20 {
		if m, err := l.store.leaderNext(ctx, "", last); err != nil || m == nil || m.seq != last {
			t.Fatalf("leaderNext(%d) = %+v, %v; want the leader's message", last, m, err)
		}
	}
	for range 3 {
		equal(t, "replay", collect(t, l.store, id, 0, last), seqs)
		if e, err := l.store.At(ctx, id, last); err != nil || e.StreamSeq != last {
			t.Fatalf("At(%d) = %+v, %v; want the entry stored there", last, e, err)
		}
	}
}

// unavailableAnswer sends one message get of seq from the store's node
// and says whether the answer that came (the first: only one passes the
// API's service import) said 10008.
func (l *lagging) unavailableAnswer(t *testing.T, seq uint64) bool {
	t.Helper()
	req, err := json.Marshal(map[string]uint64{"seq": seq})
	if err != nil {
		t.Fatal(err)
	}
	m, err := l.nc.Request("$JS.API.STREAM.MSG.GET."+contracts.StreamOutput, req, readWait)
	if err != nil {
		return false
	}
	var resp struct {
		Error *struct {
			ErrCode int `json:"err_code"`
		} `json:"error"`
	}
	return json.Unmarshal(m.Data, &resp) == nil && resp.Error != nil && resp.Error.ErrCode == errCodeClusterNotAvailable
}
