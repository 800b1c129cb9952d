package natsjs

import (
	"context"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// A busy lifecycle-event feed gathers its flushes: an event after a quiet
// spell is to be flushed at once; one that follows a flush by less than
// the linger is marked More, and a Flush follows once the linger has
// passed since that flush, not before. Only the fields readers use are
// decoded, and the stored event is passed on whole.
func TestProjectEventsGatherABusyFeedsFlushes(t *testing.T) {
	t.Parallel()
	const linger = 300 * time.Millisecond
	s, js := replaySetup(t, Config{EventLinger: linger})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	type got struct {
		pe ProjectEvent
		at time.Time
	}
	out := make(chan got, 16)
	go func() {
		defer close(out)
		for pe, err := range s.ProjectEvents(ctx, "p", time.Now().Add(-time.Minute), time.Hour) {
			if err != nil {
				return
			}
			out <- got{pe, time.Now()}
		}
	}()
	next := func(what string) got {
		t.Helper()
		select {
		case g := <-out:
			return g
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: nothing yielded", what)
			return got{}
		}
	}
	event := func(typ contracts.EventType, st contracts.Status) {
		t.Helper()
		put(t, js, contracts.SubjectEvent("p", "s1", typ), contracts.Event{V: contracts.Version, Type: typ, Status: st, JobID: "j1", StreamID: "s1", Project: "p", Time: time.Now()})
	}

	before := time.Now()
	event(contracts.EventQueued, contracts.StatusQueued)
	first := next("the first event")
	if first.pe.Seq == 0 || first.pe.More || first.pe.JobID != "j1" || first.pe.Type != contracts.EventQueued || first.pe.Status != contracts.StatusQueued || len(first.pe.Data) == 0 {
		t.Fatalf("first event %+v: want it decoded and flushed at once", first.pe)
	}
	event(contracts.EventStarted, contracts.StatusRunning)
	event(contracts.EventSucceeded, contracts.StatusSucceeded)
	for _, typ := range []contracts.EventType{contracts.EventStarted, contracts.EventSucceeded} {
		g := next(string(typ))
		if g.pe.Seq == 0 || g.pe.Type != typ || !g.pe.More {
			// Both are published within the linger of the first flush
			// unless the machine stalled for 300ms between them.
			t.Fatalf("%s: %+v, want it held (More)", typ, g.pe)
		}
	}
	flush := next("the flush")
	if !flush.pe.Flush || flush.pe.Seq != 0 {
		t.Fatalf("after the held events: %+v, want a Flush", flush.pe)
	}
	if waited := flush.at.Sub(before); waited < linger {
		t.Fatalf("Flush %s after the first event, want no sooner than the linger %s", waited, linger)
	}

	// Quiet for longer than the linger: the next event goes at once.
	time.Sleep(linger + 50*time.Millisecond)
	event(contracts.EventQueued, contracts.StatusQueued)
	if g := next("the event after a quiet spell"); g.pe.Seq == 0 || g.pe.More {
		t.Fatalf("after a quiet spell: %+v, want it flushed at once", g.pe)
	}
}
