package natsjs_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/state"
	"github.com/rdev-dev/rdev/pkg/topology"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
	"github.com/rdev-dev/rdev/services/api/internal/natsjs"
)

// progressBundle is a state bucket and output stream on a real NATS
// server, with the writes the API and the worker make as a job moves:
// its state, then its event.
type progressBundle struct {
	srv *server.Server
	js  jetstream.JetStream
	kv  jetstream.KeyValue
	st  *state.Store
	b   contracts.Batch
	ctx context.Context
}

func progressSetup(t testing.TB, jobs int) *progressBundle {
	t.Helper()
	srv := natstest.Server(t)
	js, err := jetstream.New(natstest.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	kv, err := topology.Ensure(ctx, js, topology.Config{Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	p := &progressBundle{srv: srv, js: js, kv: kv, st: state.New(kv), ctx: ctx,
		b: contracts.Batch{V: contracts.Version, ID: "B" + t.Name()[4:], Project: "p", State: contracts.BatchCommitted, SubmittedAt: time.Now()}}
	for i := range jobs {
		id := fmt.Sprintf("J%d", i)
		p.b.JobIDs = append(p.b.JobIDs, id)
		p.set(t, id, contracts.StatusQueued, contracts.EventQueued, 1)
	}
	if _, err := p.st.Batches.Create(ctx, p.b.ID, p.b); err != nil {
		t.Fatal(err)
	}
	return p
}

// set writes a job's state, then (unless t is "") its event, as the API
// and the worker do.
func (p *progressBundle) set(t testing.TB, id string, s contracts.Status, et contracts.EventType, attempt int) {
	t.Helper()
	st := contracts.JobState{V: contracts.Version, JobID: id, Project: "p", StreamID: "S" + id, BatchID: p.b.ID, Status: s, SubmittedAt: time.Now()}
	if _, err := p.st.Jobs.Put(p.ctx, id, st); err != nil {
		t.Fatal(err)
	}
	if et != "" {
		p.event(t, id, s, et, attempt)
	}
}

// event publishes a job's lifecycle event (one a redelivered job
// announces again, too).
func (p *progressBundle) event(t testing.TB, id string, s contracts.Status, et contracts.EventType, attempt int) {
	t.Helper()
	ev := contracts.Event{V: contracts.Version, Type: et, Status: s, JobID: id, StreamID: "S" + id, Project: "p", Attempt: attempt, BatchID: p.b.ID, Time: time.Now()}
	body, _ := json.Marshal(ev)
	if _, err := p.js.Publish(p.ctx, contracts.SubjectEvent("p", ev.StreamID, et), body); err != nil {
		t.Fatal(err)
	}
}

// newProgress returns a BatchProgress closed at the test's end.
func newProgress(t testing.TB, p *progressBundle, recheck time.Duration) *natsjs.BatchProgress {
	t.Helper()
	bp := natsjs.NewBatchProgress(p.js, p.kv, recheck)
	t.Cleanup(bp.Close)
	return bp
}

func (p *progressBundle) want(t *testing.T, bp *natsjs.BatchProgress, want map[contracts.Status]int) {
	t.Helper()
	got, err := bp.Counts(p.ctx, p.b)
	if err != nil || !maps.Equal(got, want) {
		t.Fatalf("counts %v, %v; want %v", got, err, want)
	}
}

// Counts follow the events through retries, a cancel, a dead letter and
// an ending announced twice (a redelivered job), counting each job once;
// other batches' events in the project do not count; the record is
// stored, so the next reader starts from it.
func TestBatchProgressFollowsEvents(t *testing.T) {
	t.Parallel()
	p := progressSetup(t, 6)
	bp := newProgress(t, p, 0)
	p.want(t, bp, map[contracts.Status]int{contracts.StatusQueued: 6})

	p.set(t, "J0", contracts.StatusRunning, contracts.EventStarted, 1)
	p.set(t, "J1", contracts.StatusRunning, contracts.EventStarted, 1)
	p.set(t, "J1", contracts.StatusSucceeded, contracts.EventSucceeded, 1)
	p.event(t, "J1", contracts.StatusSucceeded, contracts.EventSucceeded, 1) // redelivered, announced again
	// Retried, then dead-lettered: failed.
	p.set(t, "J2", contracts.StatusRunning, contracts.EventStarted, 1)
	p.set(t, "J2", contracts.StatusQueued, contracts.EventRetrying, 1)
	p.set(t, "J2", contracts.StatusRunning, contracts.EventStarted, 2)
	p.set(t, "J2", contracts.StatusFailed, contracts.EventFailed, 2)
	p.set(t, "J3", contracts.StatusCancelled, contracts.EventCancelled, 1)
	// Another batch's job of the same project.
	other := contracts.Event{V: contracts.Version, Type: contracts.EventSucceeded, Status: contracts.StatusSucceeded, JobID: "J4", StreamID: "SX", Project: "p", BatchID: "other", Time: time.Now()}
	body, _ := json.Marshal(other)
	if _, err := p.js.Publish(p.ctx, contracts.SubjectEvent("p", "SX", other.Type), body); err != nil {
		t.Fatal(err)
	}
	want := map[contracts.Status]int{contracts.StatusQueued: 2, contracts.StatusRunning: 1, contracts.StatusSucceeded: 1,
		contracts.StatusFailed: 1, contracts.StatusCancelled: 1}
	p.want(t, bp, want)

	rec, _, err := p.st.BatchProgress.Get(p.ctx, p.b.ID)
	// Stored at most once a second: the first read's at least.
	if err != nil || len(rec.Statuses) != 6 || rec.Seq == 0 {
		t.Fatalf("stored progress %+v, %v", rec, err)
	}
	// A late event of an ended job (a started published before a crash
	// and read after the ending) does not bring it back.
	p.event(t, "J1", contracts.StatusRunning, contracts.EventStarted, 1)
	// Another API replica reads from the stored record.
	p.want(t, newProgress(t, p, 0), want)
	// Nothing new: the same.
	p.want(t, bp, want)
}

// A worker that dies between a job's final state and its event leaves
// the event to the next worker; until then the recheck of unended jobs'
// states finds the ending. A record lost (or from before this cache) is
// rebuilt, and a job whose state expired is left out.
func TestBatchProgressRechecksStates(t *testing.T) {
	t.Parallel()
	p := progressSetup(t, 3)
	bp := newProgress(t, p, 0)
	p.want(t, bp, map[contracts.Status]int{contracts.StatusQueued: 3})
	p.set(t, "J0", contracts.StatusSucceeded, "", 1) // no event yet
	p.want(t, bp, map[contracts.Status]int{contracts.StatusQueued: 3})
	rechecking := newProgress(t, p, time.Nanosecond)
	p.want(t, rechecking, map[contracts.Status]int{contracts.StatusQueued: 2, contracts.StatusSucceeded: 1})
	// The event, when it comes, changes nothing.
	p.event(t, "J0", contracts.StatusSucceeded, contracts.EventSucceeded, 1)
	p.want(t, bp, map[contracts.Status]int{contracts.StatusQueued: 2, contracts.StatusSucceeded: 1})

	if err := p.st.BatchProgress.Purge(p.ctx, p.b.ID); err != nil {
		t.Fatal(err)
	}
	if err := p.st.Jobs.Purge(p.ctx, "J2"); err != nil {
		t.Fatal(err)
	}
	// Events tell J0 and J1; a recheck finds J2's state gone.
	p.want(t, rechecking, map[contracts.Status]int{contracts.StatusQueued: 1, contracts.StatusSucceeded: 1})
}

// Counts follow the events across more than one request's worth
// (1,024). From the third read of a project's batch on, the events come
// from the project's feed (one consumer, however many batches) and not
// from direct gets of the stream, which the server answers by counting
// every event subject of the project first.
func TestBatchProgressReadsEventsFromTheProjectFeed(t *testing.T) {
	t.Parallel()
	const n = 1100 // more events than one request asks for (1,024)
	p := progressSetup(t, n)
	bp := newProgress(t, p, 0)
	watch := natstest.Connect(t, p.srv)
	// The read loop puts each message on the channel before it reads
	// what follows, so once a flush returns every direct get made before
	// it is there: counting them does not lag behind, as a callback's
	// count would under load.
	msgs := make(chan *nats.Msg, 1<<14)
	if _, err := watch.ChanSubscribe("$JS.API.DIRECT.GET."+contracts.StreamOutput, msgs); err != nil {
		t.Fatal(err)
	}
	var seen int64
	gets := func() int64 {
		t.Helper()
		if err := watch.Flush(); err != nil {
			t.Fatal(err)
		}
		for len(msgs) > 0 {
			<-msgs
			seen++
		}
		return seen
	}
	gets()
	p.want(t, bp, map[contracts.Status]int{contracts.StatusQueued: n}) // a new record: the stream since the submission
	p.set(t, "J0", contracts.StatusRunning, contracts.EventStarted, 1)
	p.want(t, bp, map[contracts.Status]int{contracts.StatusQueued: n - 1, contracts.StatusRunning: 1}) // the stream; the feed starts
	before := gets()
	if before == 0 {
		t.Fatal("no direct get seen: the count of them proves nothing")
	}
	for i := range n {
		p.set(t, fmt.Sprintf("J%d", i), contracts.StatusSucceeded, contracts.EventSucceeded, 1)
	}
	p.want(t, bp, map[contracts.Status]int{contracts.StatusSucceeded: n})
	if got := gets() - before; got != 0 {
		t.Fatalf("%d direct gets of the output stream once the feed ran", got)
	}
	out, err := p.js.Stream(p.ctx, contracts.StreamOutput)
	if err != nil {
		t.Fatal(err)
	}
	var consumers int
	for range out.ConsumerNames(p.ctx).Name() {
		consumers++
	}
	if consumers != 1 {
		t.Fatalf("%d consumers on the output stream, want the project's feed alone", consumers)
	}
}

// Once every job has ended the counts cannot change: a read fetches no
// events (it answers with the output stream gone), and the counts stay.
func TestBatchProgressSettledBatchReadsNoEvents(t *testing.T) {
	t.Parallel()
	p := progressSetup(t, 2)
	bp := newProgress(t, p, 0)
	p.want(t, bp, map[contracts.Status]int{contracts.StatusQueued: 2})
	p.set(t, "J0", contracts.StatusSucceeded, contracts.EventSucceeded, 1)
	p.set(t, "J1", contracts.StatusFailed, contracts.EventFailed, 1)
	settled := map[contracts.Status]int{contracts.StatusSucceeded: 1, contracts.StatusFailed: 1}
	p.want(t, bp, settled) // reads the endings
	if err := p.js.DeleteStream(p.ctx, contracts.StreamOutput); err != nil {
		t.Fatal(err)
	}
	p.want(t, bp, settled)
}

// A new record of a batch larger than one direct get (256 keys) reads
// every unended job's state: endings whose events are not published yet
// count, and jobs whose state is gone are left out.
func TestBatchProgressRechecksManyStates(t *testing.T) {
	t.Parallel()
	const n = 600
	p := progressSetup(t, n)
	want := map[contracts.Status]int{}
	for i := range n {
		id := fmt.Sprintf("J%d", i)
		switch i % 3 {
		case 0: // ended, its event not published yet
			p.set(t, id, contracts.StatusSucceeded, "", 1)
			want[contracts.StatusSucceeded]++
		case 1:
			if i%2 == 0 {
				if err := p.st.Jobs.Purge(p.ctx, id); err != nil {
					t.Fatal(err)
				}
				continue
			}
			want[contracts.StatusQueued]++
		default:
			p.set(t, id, contracts.StatusRunning, "", 1)
			want[contracts.StatusRunning]++
		}
	}
	// Every job's queued event came before: only a recheck sees the rest.
	p.want(t, newProgress(t, p, time.Nanosecond), want)
}

// Readers of one batch at once share reads, yet each sees every ending
// published before its call.
func TestBatchProgressConcurrentReadersSeeEveryEarlierEvent(t *testing.T) {
	t.Parallel()
	const n = 40
	p := progressSetup(t, n)
	bp := newProgress(t, p, 0)
	var published atomic.Int64
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			for {
				before := published.Load()
				got, err := bp.Counts(p.ctx, p.b)
				if err != nil {
					t.Error(err)
					return
				}
				if int64(got[contracts.StatusSucceeded]) < before || got[contracts.StatusSucceeded]+got[contracts.StatusQueued] != n {
					t.Errorf("counts %v read after %d endings were published", got, before)
					return
				}
				if before == n {
					return
				}
			}
		})
	}
	for i := range n {
		p.set(t, fmt.Sprintf("J%d", i), contracts.StatusSucceeded, contracts.EventSucceeded, 1)
		published.Store(int64(i + 1))
	}
	wg.Wait()
}

// A record further behind than the project's feed keeps (its oldest
// events dropped while nobody read the batch) reads the stream: no
// event is missed.
func TestBatchProgressBehindTheFeedReadsTheStream(t *testing.T) {
	t.Parallel()
	p := progressSetup(t, 2)
	bp := newProgress(t, p, 0)
	p.want(t, bp, map[contracts.Status]int{contracts.StatusQueued: 2})
	p.set(t, "J0", contracts.StatusRunning, contracts.EventStarted, 1)
	p.want(t, bp, map[contracts.Status]int{contracts.StatusQueued: 1, contracts.StatusRunning: 1}) // the feed starts
	p.set(t, "J1", contracts.StatusSucceeded, contracts.EventSucceeded, 1)
	// More of another batch's events than the feed keeps.
	other, _ := json.Marshal(contracts.Event{V: contracts.Version, Type: contracts.EventStarted, Status: contracts.StatusRunning,
		JobID: "JX", StreamID: "SX", Project: "p", BatchID: "other", Time: time.Now()})
	for range 10_000 {
		if _, err := p.js.PublishAsync(contracts.SubjectEvent("p", "SX", contracts.EventStarted), other); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-p.js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("publishes not acknowledged")
	}
	p.set(t, "J0", contracts.StatusFailed, contracts.EventFailed, 1)
	p.want(t, bp, map[contracts.Status]int{contracts.StatusSucceeded: 1, contracts.StatusFailed: 1})
}
