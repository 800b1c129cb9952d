package streamer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/contracts/openapi/openapitest"
	"github.com/rdev-dev/rdev/services/streamer"
)

var (
	started   = []string{"status:started"}
	succeeded = "complete:succeeded"
)

func TestLiveLinesArriveInOrderThenCompleteEnds(t *testing.T) {
	t.Parallel()
	f := setup(t, options{})
	j := f.newJob(t)
	c := f.connect(t, j.streamID, dialOpts{})
	conn := c.handshake(t)
	if conn.ID != "0" {
		t.Errorf("connected id %q, want 0", conn.ID)
	}
	var data contracts.SSEConnectedData
	if err := json.Unmarshal([]byte(conn.Data), &data); err != nil || data.StreamID != j.streamID || data.JobID != j.jobID {
		t.Errorf("connected data %q (%v)", conn.Data, err)
	}

	j.event(t, contracts.EventStarted, 0)
	first := j.line(t, 1)
	j.lines(t, 2, 50)
	last := j.event(t, contracts.EventSucceeded, 50)

	evs := c.rest(t)
	equal(t, describe(t, evs), want(started, 1, 50, succeeded))
	checkIDs(t, 0, evs)
	if evs[1].ID != strconv.FormatUint(first, 10) || evs[len(evs)-1].ID != strconv.FormatUint(last, 10) {
		t.Errorf("ids are not stream sequences: first line %s (want %d), complete %s (want %d)",
			evs[1].ID, first, evs[len(evs)-1].ID, last)
	}
}

func TestLateJoinerGetsFullReplayThenComplete(t *testing.T) {
	t.Parallel()
	f := setup(t, options{})
	other := f.newJob(t)
	j := f.newJob(t)
	j.event(t, contracts.EventStarted, 0)
	for s := uint64(1); s <= 30; s++ {
		j.line(t, s)
		other.line(t, s) // interleaved lines of another stream stay out
	}
	j.event(t, contracts.EventSucceeded, 30)

	c := f.connect(t, j.streamID, dialOpts{})
	c.handshake(t)
	evs := c.rest(t)
	equal(t, describe(t, evs), want(started, 1, 30, succeeded))
	checkIDs(t, 0, evs)
}

// TestStreamBegunBeforeProjectSubjectsReadsBoth: a stream whose first
// lines were stored on rdev.output.<stream_id> by a worker of
// OutputLineVersion 1, and whose later lines are on the project's subject
// (a job retried across the upgrade), is replayed whole, in order, and
// followed live.
func TestStreamBegunBeforeProjectSubjectsReadsBoth(t *testing.T) {
	t.Parallel()
	f := setup(t, options{})
	j := f.newJob(t)
	j.event(t, contracts.EventStarted, 0)
	for s := uint64(1); s <= 5; s++ {
		j.legacyLine(t, s)
	}
	j.lines(t, 6, 8)

	c := f.connect(t, j.streamID, dialOpts{})
	c.handshake(t)
	c.until(t, func(ev sseEvent) bool { return ev.Name == contracts.SSEOutput && lineSeq(t, ev) == 8 })
	j.legacyLine(t, 9) // an old worker still running during a rolling upgrade
	j.line(t, 10)
	j.event(t, contracts.EventSucceeded, 10)
	rest := c.rest(t)
	equal(t, describe(t, rest), want(nil, 9, 10, succeeded))

	again := f.connect(t, j.streamID, dialOpts{})
	again.handshake(t)
	evs := again.rest(t)
	equal(t, describe(t, evs), want(started, 1, 10, succeeded))
	checkIDs(t, 0, evs)
}

func TestWaitsForJobThatHasNotStarted(t *testing.T) {
	t.Parallel()
	f := setup(t, options{})
	j := f.newJob(t)
	c := f.connect(t, j.streamID, dialOpts{})
	c.handshake(t)
	// Heartbeats flow while nothing is stored.
	for range 3 {
		select {
		case ev := <-c.events:
			if ev.Comment != "ping" {
				t.Fatalf("want a ping while waiting, got %+v", ev)
			}
		case <-time.After(waitFor):
			t.Fatal("no heartbeat")
		}
	}
	j.event(t, contracts.EventStarted, 0)
	j.line(t, 1)
	j.event(t, contracts.EventFailed, 1)
	equal(t, describe(t, c.rest(t)), want(started, 1, 1, "complete:failed"))
}

func TestOutlivesServerTimeouts(t *testing.T) {
	t.Parallel()
	f := setup(t, options{serverTimeout: 300 * time.Millisecond, cfg: streamer.Config{Heartbeat: 50 * time.Millisecond}})
	j := f.newJob(t)
	c := f.connect(t, j.streamID, dialOpts{})
	c.handshake(t)
	opened := time.Now()
	for time.Since(opened) < 600*time.Millisecond { // pings past the server's deadlines
		select {
		case ev := <-c.events:
			if ev.Comment != "ping" {
				t.Fatalf("want a ping, got %+v", ev)
			}
		case <-time.After(waitFor):
			t.Fatal("no heartbeat")
		}
	}
	j.line(t, 1)
	j.event(t, contracts.EventSucceeded, 1)
	equal(t, describe(t, c.rest(t)), want(nil, 1, 1, succeeded))
}

func TestResumeDeliversExactlyTheRest(t *testing.T) {
	t.Parallel()
	f := setup(t, options{})
	j := f.newJob(t)
	j.event(t, contracts.EventStarted, 0)
	j.lines(t, 1, 20)

	first := f.connect(t, j.streamID, dialOpts{})
	first.handshake(t)
	got := first.until(t, func(ev sseEvent) bool { return ev.Name == contracts.SSEOutput && lineSeq(t, ev) == 10 })
	first.resp.Body.Close()
	resumeAt := got[len(got)-1].ID

	j.lines(t, 21, 40)
	complete := j.event(t, contracts.EventSucceeded, 40)
	wantRest := want(nil, 11, 40, succeeded)

	for _, o := range []dialOpts{
		{lastEventID: resumeAt},
		{query: "last_event_id=" + resumeAt},
		{lastEventID: resumeAt, query: "last_event_id=1"}, // the header wins
	} {
		c := f.connect(t, j.streamID, o)
		conn := c.handshake(t)
		if conn.ID != resumeAt {
			t.Errorf("%+v: connected id %s, want the resume position %s", o, conn.ID, resumeAt)
		}
		if !strings.Contains(conn.Data, `"resume_after":"`+resumeAt+`"`) {
			t.Errorf("%+v: connected data %s lacks resume_after", o, conn.Data)
		}
		evs := c.rest(t)
		equal(t, describe(t, evs), wantRest)
		n, _ := strconv.ParseUint(resumeAt, 10, 64)
		checkIDs(t, n, evs)
	}

	resp := f.get(t, j.streamID, dialOpts{lastEventID: strconv.FormatUint(complete, 10)})
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("resume after complete: status %d, want 204", resp.StatusCode)
	}
}

func TestDuplicateLineDeliveredOnce(t *testing.T) {
	t.Parallel()
	f := setup(t, options{})
	j := f.newJob(t)
	c := f.connect(t, j.streamID, dialOpts{})
	c.handshake(t)
	j.line(t, 1)
	j.line(t, 2)
	dupOf2 := j.line(t, 2) // a publisher retry
	j.line(t, 3)
	j.line(t, 3)
	j.event(t, contracts.EventSucceeded, 3)
	evs := c.rest(t)
	equal(t, describe(t, evs), want(nil, 1, 3, succeeded))
	checkIDs(t, 0, evs)

	// Resuming right before a duplicate still drops it: the line number is
	// restored from the message at Last-Event-ID.
	r := f.connect(t, j.streamID, dialOpts{lastEventID: strconv.FormatUint(dupOf2-1, 10)})
	r.handshake(t)
	equal(t, describe(t, r.rest(t)), want(nil, 3, 3, succeeded))
}

func TestManyClientsShareOneConsumer(t *testing.T) {
	t.Parallel()
	f := setup(t, options{})
	j := f.newJob(t)
	const clients, lines = 20, 100
	cs := make([]*sseClient, clients)
	for i := range cs {
		cs[i] = f.connect(t, j.streamID, dialOpts{})
		cs[i].handshake(t)
	}
	j.event(t, contracts.EventStarted, 0)
	j.lines(t, 1, lines)

	got := make([][]sseEvent, clients)
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Go(func() {
			got[i] = c.until(t, func(ev sseEvent) bool { return ev.Name == contracts.SSEOutput && lineSeq(t, ev) == lines })
		})
	}
	wg.Wait()
	if st := f.svc.Stats(); st.HubsStarted != 1 || st.Hubs != 1 || st.Clients != clients {
		t.Errorf("stats %+v: want one hub for %d clients", st, clients)
	}
	await.Within(t, waitFor, "one consumer on the output stream", func() bool { return f.consumers(t) == 1 })

	j.event(t, contracts.EventSucceeded, lines)
	for i, c := range cs {
		wg.Go(func() { got[i] = append(got[i], c.rest(t)...) })
	}
	wg.Wait()
	for i := range cs {
		equal(t, describe(t, got[i]), want(started, 1, lines, succeeded))
		checkIDs(t, 0, got[i])
	}
	await.Within(t, waitFor, "hub and consumer gone", func() bool { return f.svc.Stats().Hubs == 0 && f.consumers(t) == 0 })
}

// slowLines lines of slowPad extra bytes (about 2 MB) fill every buffer
// between the streamer and a client that stops reading (about 200 KB with
// the tests' small socket buffers) many times over.
const slowLines, slowPad = 5000, 200

func TestSlowClientCatchesUpFromStorageWithoutSlowingOthers(t *testing.T) {
	t.Parallel()
	f := setup(t, options{smallSendBuffer: true, cfg: streamer.Config{ClientBuffer: 16, WriteTimeout: time.Minute}})
	j := f.newJob(t)
	j.pad = slowPad
	slow := f.connect(t, j.streamID, dialOpts{smallReceiveBuffer: true})
	slow.handshake(t)
	fast := f.connect(t, j.streamID, dialOpts{})
	fast.handshake(t)

	j.manyLines(t, 1, slowLines)
	j.event(t, contracts.EventSucceeded, slowLines)

	// The fast client gets everything while the slow one reads nothing.
	equal(t, describe(t, fast.rest(t)), want(nil, 1, slowLines, succeeded))
	if st := f.svc.Stats(); st.Overflows == 0 {
		t.Errorf("stats %+v: the stalled client was never cut loose, so the hub buffered for it", st)
	}

	evs := slow.rest(t)
	equal(t, describe(t, evs), want(nil, 1, slowLines, succeeded))
	checkIDs(t, 0, evs)
	if st := f.svc.Stats(); st.Dropped != 0 {
		t.Errorf("stats %+v: nobody should have been dropped", st)
	}
}

func TestStalledClientIsDroppedAndResumes(t *testing.T) {
	t.Parallel()
	f := setup(t, options{smallSendBuffer: true, cfg: streamer.Config{ClientBuffer: 16, WriteTimeout: 300 * time.Millisecond}})
	j := f.newJob(t)
	j.pad = slowPad
	c := f.connect(t, j.streamID, dialOpts{smallReceiveBuffer: true})
	c.handshake(t)
	j.manyLines(t, 1, slowLines)
	j.event(t, contracts.EventSucceeded, slowLines)
	await.Within(t, waitFor, "the stalled client dropped", func() bool { return f.svc.Stats().Dropped >= 1 })

	// What the socket still held arrives, then the stream ends early.
	evs := c.rest(t)
	for len(evs) == 0 || evs[len(evs)-1].Name != contracts.SSEComplete {
		if len(evs) > slowLines+1 {
			t.Fatal("too many events")
		}
		resumeAt := "0"
		if len(evs) > 0 {
			resumeAt = evs[len(evs)-1].ID
		}
		r := f.connect(t, j.streamID, dialOpts{lastEventID: resumeAt})
		r.handshake(t)
		evs = append(evs, r.rest(t)...)
	}
	equal(t, describe(t, evs), want(nil, 1, slowLines, succeeded))
	checkIDs(t, 0, evs)
}

func TestBadRequestsGetErrorCodes(t *testing.T) {
	t.Parallel()
	f := setup(t, options{})
	j := f.newJob(t)
	j.line(t, 1)
	other := f.newJob(t)
	foreign := other.line(t, 1)

	for _, tc := range []struct {
		name     string
		streamID string
		o        dialOpts
		status   int
		code     string
	}{
		{"dot in id", "a.b", dialOpts{}, http.StatusBadRequest, "invalid_stream_id"},
		{"wildcard in id", "a*", dialOpts{}, http.StatusBadRequest, "invalid_stream_id"},
		{"id too long", strings.Repeat("x", 65), dialOpts{}, http.StatusBadRequest, "invalid_stream_id"},
		{"unknown stream", uniqueID(t, "nope"), dialOpts{}, http.StatusNotFound, "stream_not_found"},
		{"id not a number", j.streamID, dialOpts{lastEventID: "abc"}, http.StatusBadRequest, "invalid_last_event_id"},
		{"negative id", j.streamID, dialOpts{lastEventID: "-1"}, http.StatusBadRequest, "invalid_last_event_id"},
		{"id overflows", j.streamID, dialOpts{lastEventID: "18446744073709551616"}, http.StatusBadRequest, "invalid_last_event_id"},
		{"bad query id", j.streamID, dialOpts{query: "last_event_id=1.5"}, http.StatusBadRequest, "invalid_last_event_id"},
		{"id beyond the end", j.streamID, dialOpts{lastEventID: "999999"}, http.StatusBadRequest, "invalid_last_event_id"},
		{"id of another stream", j.streamID, dialOpts{lastEventID: strconv.FormatUint(foreign, 10)}, http.StatusBadRequest, "invalid_last_event_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := f.get(t, tc.streamID, tc.o)
			checkError(t, resp, tc.status, tc.code)
		})
	}
}

func checkError(t *testing.T, resp *http.Response, status int, code string) {
	t.Helper()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, body)
	}
	var eb contracts.ErrorBody
	if err := json.Unmarshal(body, &eb); err != nil || eb.Error.Code != code || eb.Error.Message == "" {
		t.Fatalf("body %s (%v), want code %s", body, err, code)
	}
}

// Storage that keeps failing is ridden out for UnavailableAfter, then
// answered 503.
func TestStorageFailureIsUnavailable(t *testing.T) {
	t.Parallel()
	const after = 300 * time.Millisecond
	f := setup(t, options{cfg: streamer.Config{UnavailableAfter: after}})
	j := f.newJob(t)
	if err := f.js.DeleteKeyValue(context.Background(), contracts.BucketState); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	checkError(t, f.get(t, j.streamID, dialOpts{}), http.StatusServiceUnavailable, "unavailable")
	if d := time.Since(start); d < after/2 {
		t.Fatalf("503 after %s: storage was not retried", d)
	}
}

// The access check rides out failing storage like the stream's own
// reads: in a reconnect storm of 2,000 clients on a loaded machine, reads
// of the project timed out, and each such client was answered 503 at the
// first failure instead of after UnavailableAfter. Here the project's
// first reads fail; the stream opens once one succeeds.
func TestAccessCheckRidesOutFailingStorage(t *testing.T) {
	t.Parallel()
	failing := &failingGate{fails: 3}
	f := setup(t, options{gate: func(g streamer.Gate) streamer.Gate { failing.Gate = g; return failing }})
	j := f.newJob(t)
	j.event(t, contracts.EventStarted, 0)
	f.connect(t, j.streamID, dialOpts{}).handshake(t)
	if n := failing.calls.Load(); n != 4 {
		t.Fatalf("access checked %d times, want 4 (3 failures, then the answer)", n)
	}
}

// failingGate is a fault injector around the real gate: its first fails
// calls of Allow fail as a storage timeout does.
type failingGate struct {
	streamer.Gate
	fails int64
	calls atomic.Int64
}

func (g *failingGate) Allow(ctx context.Context, r access.Reader, project, incarnation string, client netip.Addr) error {
	if g.calls.Add(1) <= g.fails {
		return fmt.Errorf("read project.%s: %w", project, context.DeadlineExceeded)
	}
	return g.Gate.Allow(ctx, r, project, incarnation, client)
}

// NATS restarting (the streamer reconnects, its consumers are gone) does
// not end the streams open meanwhile, nor refuse one opened while NATS is
// down: each client keeps its connection and gets every line once, in
// order, with no error event.
func TestStreamsRideOutNATSRestart(t *testing.T) {
	t.Parallel()
	t.Run("own consumer", func(t *testing.T) {
		t.Parallel()
		rideOutNATSRestart(t, streamer.Config{})
	})
	t.Run("shared feed", func(t *testing.T) {
		t.Parallel()
		rideOutNATSRestart(t, streamer.Config{SharedFeedAfter: -1})
	})
}

func rideOutNATSRestart(t *testing.T, cfg streamer.Config) {
	f := setup(t, options{restartable: true, cfg: cfg})
	j := f.newJob(t)
	j.event(t, contracts.EventStarted, 0)
	j.lines(t, 1, 5)
	open := f.connect(t, j.streamID, dialOpts{})
	open.handshake(t)
	got := open.until(t, func(ev sseEvent) bool { return ev.Name == contracts.SSEOutput && lineSeq(t, ev) == 5 })
	resumeAt := got[3] // line 3

	f.stopNATS()
	restarted := make(chan struct{})
	time.AfterFunc(500*time.Millisecond, func() { // the outage
		defer close(restarted)
		f.startNATS()
	})
	resumed := f.connect(t, j.streamID, dialOpts{lastEventID: resumeAt.ID}) // waits the outage out
	select {
	case <-restarted:
	case <-time.After(waitFor):
		t.Fatal("NATS did not start again")
	}
	await.Within(t, waitFor, "a publish after the restart", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := f.js.Publish(ctx, contracts.SubjectOutput(j.project, j.streamID), j.lineData(6))
		return err == nil // a line stored twice by this retry is sent once
	})
	j.lines(t, 7, 10)
	j.event(t, contracts.EventSucceeded, 10)
	got = append(got, open.rest(t)...)
	equal(t, describe(t, got), want(started, 1, 10, succeeded))
	resumed.handshake(t)
	equal(t, describe(t, resumed.rest(t)), want(nil, 4, 10, succeeded))
}

func TestShutdownEndsStreamsWithAnError(t *testing.T) {
	t.Parallel()
	f := setup(t, options{})
	j := f.newJob(t)
	waiting := f.connect(t, j.streamID, dialOpts{})
	waiting.handshake(t)
	j.event(t, contracts.EventStarted, 0)
	j.lines(t, 1, 5)
	midway := f.connect(t, j.streamID, dialOpts{})
	midway.handshake(t)
	got := midway.until(t, func(ev sseEvent) bool { return ev.Name == contracts.SSEOutput && lineSeq(t, ev) == 5 })
	lastSeen := map[*sseClient]string{waiting: "0", midway: got[len(got)-1].ID}

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		done <- f.svc.Shutdown(ctx)
	}()

	for _, c := range []*sseClient{waiting, midway} {
		evs := c.rest(t)
		if len(evs) == 0 {
			t.Fatal("stream ended without an error event")
		}
		last := evs[len(evs)-1]
		var d contracts.ErrorDetail
		if err := json.Unmarshal([]byte(last.Data), &d); err != nil || last.Name != contracts.SSEError || d.Code != "shutting_down" {
			t.Fatalf("last event %+v, want error shutting_down", last)
		}
		// The error carries the resume position: the last event received.
		cursor := lastSeen[c]
		if len(evs) > 1 {
			cursor = evs[len(evs)-2].ID
		}
		if last.ID != cursor {
			t.Errorf("error id %s, want the cursor %s", last.ID, cursor)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(waitFor):
		t.Fatal("shutdown did not return")
	}
	checkError(t, f.get(t, j.streamID, dialOpts{}), http.StatusServiceUnavailable, "shutting_down")
	if err := f.svc.Shutdown(context.Background()); err != nil {
		t.Fatalf("second shutdown: %v", err)
	}
}

func TestCORSPreflight(t *testing.T) {
	t.Parallel()
	f := setup(t, options{cfg: streamer.Config{AllowOrigins: []string{"https://app.example"}}})
	req, _ := http.NewRequest(http.MethodOptions, f.eventsURL("s1"), nil)
	req.Header.Set("Origin", "https://app.example")
	req.Header.Set("Access-Control-Request-Method", "GET")
	req.Header.Set("Access-Control-Request-Headers", "last-event-id")
	resp, err := (&http.Client{Transport: openapitest.Transport(t, nil)}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Last-Event-ID") {
		t.Fatalf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	bad := streamer.Config{Heartbeat: -time.Second, ClientBuffer: -1, AllowOrigins: []string{""}}
	if err := bad.Validate(); err == nil {
		t.Fatal("want an error")
	}
	if _, err := streamer.New(bad, streamer.Deps{}); err == nil {
		t.Fatal("New: want an error")
	}
}
