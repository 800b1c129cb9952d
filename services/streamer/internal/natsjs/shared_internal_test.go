package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/streamer/internal/entry"
	"github.com/rdev-dev/rdev/services/streamer/internal/hub"
)

// sharedWait bounds every wait for an entry or a consumer count: generous,
// since the CI machine is loaded.
const sharedWait = 30 * time.Second

func sharedSetup(t *testing.T, cfg Config) (*Store, jetstream.JetStream) {
	t.Helper()
	s, js := replaySetup(t, cfg)
	t.Cleanup(s.Close)
	return s, js
}

// outputState is the output stream's state: its consumers and last sequence.
func outputState(t *testing.T, js jetstream.JetStream) jetstream.StreamState {
	t.Helper()
	st, err := js.Stream(context.Background(), contracts.StreamOutput)
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().State
}

func outputConsumers(t *testing.T, js jetstream.JetStream) int {
	return outputState(t, js).Consumers
}

// message is one message a test published: its stream and sequence.
type message struct {
	subject string
	data    []byte
}

// lineMsg, legacyMsg and eventMsg are a stream's three kinds of subjects.
func lineMsg(streamID string, seq uint64) message {
	b, _ := json.Marshal(contracts.OutputLine{V: contracts.Version, StreamID: streamID, Seq: seq, Text: "x"})
	return message{contracts.SubjectOutput("p", streamID), b}
}

func legacyMsg(streamID string, seq uint64) message {
	b, _ := json.Marshal(contracts.OutputLine{V: 1, StreamID: streamID, Seq: seq, Text: "old"})
	return message{contracts.SubjectOutputLegacy(streamID), b}
}

func eventMsg(streamID string, lines uint64) message {
	b, _ := json.Marshal(contracts.Event{V: contracts.Version, Type: contracts.EventStarted, StreamID: streamID, Project: "p", Lines: lines})
	return message{contracts.SubjectEvent("p", streamID, contracts.EventStarted), b}
}

func send(t *testing.T, js jetstream.JetStream, m message) uint64 {
	t.Helper()
	ack, err := js.Publish(context.Background(), m.subject, m.data)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// read takes n entries from f, failing the test if they do not come.
func read(t *testing.T, f hub.Feed, n int) []uint64 {
	t.Helper()
	got := make(chan []uint64, 1)
	errc := make(chan error, 1)
	go func() {
		var seqs []uint64
		for len(seqs) < n {
			e, err := f.Next()
			if err != nil {
				errc <- err
				return
			}
			if e.Kind == entry.Invalid {
				errc <- fmt.Errorf("entry %d invalid", e.StreamSeq)
				return
			}
			seqs = append(seqs, e.StreamSeq)
		}
		got <- seqs
	}()
	select {
	case seqs := <-got:
		return seqs
	case err := <-errc:
		t.Fatalf("feed ended: %v", err)
	case <-time.After(sharedWait):
		f.Close() // ends the reader
		t.Fatalf("fewer than %d entries within %s", n, sharedWait)
	}
	return nil
}

func TestStreamOf(t *testing.T) { //nolint:paralleltest // AllocsPerRun refuses parallel tests
	for subject, want := range map[string]string{
		"rdev.output.s1":                      "s1",
		"rdev.output.p.s1":                    "s1",
		"rdev.events.p.s1.started":            "s1",
		"rdev.output.p.s1.x":                  "",
		"rdev.events.p.s1":                    "",
		"rdev.events.p.s1.started.x":          "",
		"rdev.events.s1":                      "",
		"rdev.jobs.p.s1":                      "",
		"rdev.outputs.p.s1":                   "",
		contracts.SubjectOutput("p", "a-b_c"): "a-b_c",
	} {
		if got := streamOf(subject); got != want {
			t.Errorf("streamOf(%q) = %q, want %q", subject, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { streamOf("rdev.events.proj.stream-1.started") }); n != 0 {
		t.Errorf("streamOf allocates %v times", n)
	}
}

// Feeds joining the shared feed while lines (current and legacy subjects)
// and events are written get exactly what their stream stores after their
// boundary, each once and in order: the boundary is exact.
func TestSharedFeedDeliversEverythingAfterTheBoundaryOnce(t *testing.T) {
	t.Parallel()
	s, js := sharedSetup(t, Config{SharedAfter: -1, Batch: 16})
	const streams = 12
	ids := make([]string, streams)
	for i := range ids {
		ids[i] = fmt.Sprintf("join-%d", i)
	}

	var (
		mu     sync.Mutex
		stored = map[string][]uint64{} // by stream, in order
		stop   = make(chan struct{})
		done   = make(chan struct{})
		pubErr error
	)
	go func() { // writes until stopped, across the streams and a stream nobody watches
		defer close(done)
		for n := uint64(1); ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			id := ids[n%streams]
			m := lineMsg(id, n)
			switch n % 5 {
			case 1:
				m = legacyMsg(id, n)
			case 2:
				m = eventMsg(id, n)
			case 3:
				m = lineMsg("unwatched", n)
				id = ""
			}
			ack, err := js.Publish(context.Background(), m.subject, m.data)
			if err != nil {
				pubErr = err
				return
			}
			if id != "" {
				mu.Lock()
				stored[id] = append(stored[id], ack.Sequence)
				mu.Unlock()
			}
		}
	}()

	feeds := make([]hub.Feed, streams)
	bounds := make([]uint64, streams)
	for i, id := range ids {
		// Each join waits for a few more messages, so joins fall between writes.
		mark := outputState(t, js).LastSeq
		await.Within(t, sharedWait, "writes between joins", func() bool { return outputState(t, js).LastSeq > mark+3 })
		f, last, err := s.Open(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(f.Close)
		feeds[i], bounds[i] = f, last
	}
	close(stop)
	<-done
	if pubErr != nil {
		t.Fatal(pubErr)
	}
	// One more line each, so every feed ends on a known entry.
	for _, id := range ids {
		seq := send(t, js, lineMsg(id, 1<<40))
		stored[id] = append(stored[id], seq)
	}
	for i, id := range ids {
		want := slices.DeleteFunc(slices.Clone(stored[id]), func(seq uint64) bool { return seq <= bounds[i] })
		got := read(t, feeds[i], len(want))
		if !slices.Equal(got, want) {
			t.Errorf("stream %s after %d: got %v, want %v", id, bounds[i], got, want)
		}
	}
	if n := outputConsumers(t, js); n != 1 {
		t.Errorf("%d consumers on the output stream, want the shared one", n)
	}
	if st := s.FeedStats(); st.Shared != streams || st.Own != 0 {
		t.Errorf("feed stats %+v, want %d shared", st, streams)
	}
}

// Two thousand watched streams are one consumer on the server, and each
// feed gets its stream's lines once.
func TestManyFeedsShareOneConsumer(t *testing.T) {
	t.Parallel()
	s, js := sharedSetup(t, Config{SharedAfter: 100})
	const streams = 2000
	feeds := make([]hub.Feed, streams)
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for w := range 16 { // open as the hubs would: many at once
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < streams; i += 16 {
				f, _, err := s.Open(context.Background(), fmt.Sprintf("many-%d", i))
				if err != nil {
					errs <- err
					return
				}
				feeds[i] = f
			}
		}()
	}
	wg.Wait()
	close(errs)
	for _, f := range feeds {
		if f != nil {
			t.Cleanup(f.Close)
		}
	}
	for err := range errs {
		t.Fatal(err)
	}
	if n := outputConsumers(t, js); n > 101 {
		t.Fatalf("%d consumers for %d feeds, want at most 100 own and the shared one", n, streams)
	}
	if st := s.FeedStats(); st.Own != 100 || st.Shared != streams-100 {
		t.Fatalf("feed stats %+v, want 100 own, the rest shared", st)
	}
	want := make([][]uint64, streams)
	for line := uint64(1); line <= 2; line++ {
		futures := make([]jetstream.PubAckFuture, streams)
		for i := range streams {
			m := lineMsg(fmt.Sprintf("many-%d", i), line)
			f, err := js.PublishAsync(m.subject, m.data)
			if err != nil {
				t.Fatal(err)
			}
			futures[i] = f
		}
		for i, f := range futures {
			select {
			case ack := <-f.Ok():
				want[i] = append(want[i], ack.Sequence)
			case err := <-f.Err():
				t.Fatal(err)
			case <-time.After(sharedWait):
				t.Fatal("publish not acknowledged")
			}
		}
	}
	for i, f := range feeds {
		if got := read(t, f, 2); !slices.Equal(got, want[i]) {
			t.Fatalf("stream many-%d: got %v, want %v", i, got, want[i])
		}
	}
}

// A feed whose hub does not take its entries fails with ErrFeedOverflow
// once its buffer is full, after the entries it holds; the shared feed
// goes on serving the others.
func TestSlowSharedFeedOverflows(t *testing.T) {
	t.Parallel()
	s, js := sharedSetup(t, Config{SharedAfter: -1, SharedBuffer: 3})
	slow, _, err := s.Open(context.Background(), "slow")
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	other, _, err := s.Open(context.Background(), "other")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	var want []uint64
	for i := uint64(1); i <= 5; i++ {
		want = append(want, send(t, js, lineMsg("slow", i)))
	}
	last := send(t, js, lineMsg("other", 1))
	if got := read(t, other, 1); got[0] != last {
		t.Fatalf("other feed got %v, want %d", got, last)
	}
	if got := read(t, slow, 3); !slices.Equal(got, want[:3]) {
		t.Fatalf("slow feed got %v, want %v", got, want[:3])
	}
	if _, err := slow.Next(); !errors.Is(err, ErrFeedOverflow) {
		t.Fatalf("slow feed after its buffer: %v, want ErrFeedOverflow", err)
	}
	if st := s.FeedStats(); st.Overflows != 1 || st.Shared != 1 {
		t.Fatalf("feed stats %+v, want one overflow and one feed left", st)
	}
}

// Below SharedAfter open feeds a feed has a consumer of its own, from
// then on it joins the shared feed; both deliver, and the shared consumer
// goes away once no feed is on it.
func TestFeedsSwitchToTheSharedFeedPastTheThreshold(t *testing.T) {
	t.Parallel()
	s, js := sharedSetup(t, Config{SharedAfter: 2, SharedLinger: 50 * time.Millisecond})
	open := func(id string) hub.Feed {
		t.Helper()
		f, _, err := s.Open(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(f.Close)
		return f
	}
	a, b := open("own-a"), open("own-b")
	if n := outputConsumers(t, js); n != 2 {
		t.Fatalf("%d consumers for two feeds below the threshold, want 2", n)
	}
	c, d := open("shared-c"), open("shared-d")
	if n := outputConsumers(t, js); n != 3 {
		t.Fatalf("%d consumers, want two own and the shared one", n)
	}
	if st := s.FeedStats(); st.Own != 2 || st.Shared != 2 {
		t.Fatalf("feed stats %+v, want 2 own and 2 shared", st)
	}
	for _, x := range []struct {
		id string
		f  hub.Feed
	}{{"own-a", a}, {"own-b", b}, {"shared-c", c}, {"shared-d", d}} {
		seqs := []uint64{send(t, js, lineMsg(x.id, 1)), send(t, js, legacyMsg(x.id, 2)), send(t, js, eventMsg(x.id, 2))}
		if got := read(t, x.f, 3); !slices.Equal(got, seqs) {
			t.Errorf("feed %s: got %v, want %v", x.id, got, seqs)
		}
	}
	c.Close()
	d.Close()
	await.Within(t, sharedWait, "the shared consumer to go", func() bool { return outputConsumers(t, js) == 2 })
	a.Close()
	if st := s.FeedStats(); st.Own != 1 || st.Shared != 0 {
		t.Fatalf("feed stats %+v, want 1 own", st)
	}
	e := open("own-e") // below the threshold again
	seq := send(t, js, lineMsg("own-e", 1))
	if got := read(t, e, 1); got[0] != seq {
		t.Fatalf("feed own-e got %v, want %d", got, seq)
	}
	if st := s.FeedStats(); st.Own != 2 {
		t.Fatalf("feed stats %+v, want 2 own", st)
	}
}

// The shared consumer deleted on the server: the shared feed's stall
// check makes it again from where it stopped, and its feeds lose nothing.
func TestSharedFeedSurvivesItsConsumerDeleted(t *testing.T) {
	t.Parallel()
	s, js := sharedSetup(t, Config{SharedAfter: -1, StallCheck: 200 * time.Millisecond})
	f, _, err := s.Open(context.Background(), "deleted")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	first := send(t, js, lineMsg("deleted", 1))
	if got := read(t, f, 1); got[0] != first {
		t.Fatalf("got %v, want %d", got, first)
	}
	s.shMu.Lock()
	name := s.sh.f.cons.CachedInfo().Name
	s.shMu.Unlock()
	if err := js.DeleteConsumer(context.Background(), contracts.StreamOutput, name); err != nil {
		t.Fatal(err)
	}
	var want []uint64
	for i := uint64(2); i <= 4; i++ {
		want = append(want, send(t, js, lineMsg("deleted", i)))
	}
	if got := read(t, f, 3); !slices.Equal(got, want) {
		t.Fatalf("after the deletion got %v, want %v", got, want)
	}
}

// Closing the store fails the feeds on the shared feed, and no feed
// opens on it afterwards (an open racing with shutdown must not start a
// shared feed nobody stops); a feed with a consumer of its own still
// opens.
func TestClosedStoreEndsItsSharedFeed(t *testing.T) {
	t.Parallel()
	s, js := sharedSetup(t, Config{SharedAfter: 1})
	own, _, err := s.Open(context.Background(), "own")
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	f, _, err := s.Open(context.Background(), "shared")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s.Close()
	if _, err := f.Next(); err == nil {
		t.Fatal("feed still running after its shared feed ended")
	}
	if _, _, err := s.Open(context.Background(), "shared"); !errors.Is(err, errStoreClosed) {
		t.Fatalf("open on the shared feed after Close: %v, want errStoreClosed", err)
	}
	if n := outputConsumers(t, js); n != 1 {
		t.Fatalf("%d consumers after Close, want the own feed's", n)
	}
}
