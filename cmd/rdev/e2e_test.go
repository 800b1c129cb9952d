package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rdev-dev/rdev/pkg/client"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// The README's quick start, over real HTTP: submit, watch every line live
// over SSE, complete with the exit code; GET /v1/jobs agrees.
func TestSubmitWatchComplete(t *testing.T) {
	t.Parallel()
	n := startInProcess(t)
	r := submit(t, n.http, "demo", map[string]any{
		"command":  []string{"sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.2; done; echo oops >&2; exit 3"},
		"priority": "high",
	})
	if r.Status != "queued" || !strings.HasPrefix(r.EventsURL, "/v1/streams/"+r.StreamID+"/events?token=") {
		t.Fatalf("reply %+v", r)
	}
	s := openStream(t, n.http, r.EventsURL, "")
	var got []string
	var stdoutLines, stderrLines int
	var complete contracts.Event
	prevID := uint64(0)
	for complete.Type == "" {
		ev, err := s.Next()
		must(t, err, "read SSE")
		if ev.Name != contracts.SSEConnected {
			id, err := strconv.ParseUint(ev.ID, 10, 64)
			if err != nil || id <= prevID {
				t.Fatalf("event ids must increase: %q after %d", ev.ID, prevID)
			}
			prevID = id
		}
		switch ev.Name {
		case contracts.SSEOutput:
			l := mustJSON[contracts.OutputLine](t, ev.Data)
			if l.Seq != uint64(len(got)+1) {
				t.Fatalf("line seq %d, want %d", l.Seq, len(got)+1)
			}
			got = append(got, l.Text)
			if l.FD == contracts.Stderr {
				stderrLines++
			} else {
				stdoutLines++
			}
		case contracts.SSEComplete:
			complete = mustJSON[contracts.Event](t, ev.Data)
		}
	}
	if want := []string{"line1", "line2", "line3", "oops"}; !slices.Equal(got, want) {
		t.Fatalf("lines %q, want %q", got, want)
	}
	if stdoutLines != 3 || stderrLines != 1 {
		t.Fatalf("stdout %d stderr %d lines, want 3 and 1", stdoutLines, stderrLines)
	}
	if complete.Status != contracts.StatusFailed || complete.ExitCode == nil || *complete.ExitCode != 3 || complete.Lines != 4 {
		t.Fatalf("complete %+v", complete)
	}
	if _, err := s.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("read after complete: %v, want io.EOF", err)
	}
	st := waitFinal(t, n.http, r.JobID, 5*time.Second)
	if st.Status != contracts.StatusFailed || st.ExitCode == nil || *st.ExitCode != 3 || st.Worker == "" ||
		st.Attempt != 1 || st.StartedAt == nil || st.FinishedAt == nil || st.StreamID != r.StreamID || st.Lines != 4 {
		t.Fatalf("job state %+v", st)
	}
}

// A client that drops mid-stream and reconnects with Last-Event-ID gets
// exactly the rest; one that connects after the job ended gets all of it.
func TestResumeAfterDisconnectAndLateJoin(t *testing.T) {
	t.Parallel()
	n := startInProcess(t)
	r := submit(t, n.http, "demo", map[string]any{
		"command": []string{"sh", "-c", "for i in $(seq 1 30); do echo l$i; sleep 0.02; done"},
	})
	url := r.EventsURL
	first := openStream(t, n.http, url, "")
	var seen []uint64
	for len(seen) < 7 {
		ev, err := first.Next()
		must(t, err, "first connection")
		if ev.Name == contracts.SSEOutput {
			seen = append(seen, mustJSON[contracts.OutputLine](t, ev.Data).Seq)
		}
	}
	first.Close()

	// Resume by header while the job still runs, and by query parameter.
	for _, viaQuery := range []bool{false, true} {
		var s *client.Stream
		if viaQuery {
			s = openStream(t, n.http, url+"&last_event_id="+first.LastEventID(), "")
		} else {
			s = openStream(t, n.http, url, first.LastEventID())
		}
		lines, _ := readToComplete(t, s)
		assertSeqs(t, append(append([]uint64(nil), seen...), seqsOf(lines)...), 30)
	}

	waitFinal(t, n.http, r.JobID, 10*time.Second)
	late := openStream(t, n.http, url, "")
	lines, _ := readToComplete(t, late)
	assertSeqs(t, seqsOf(lines), 30)
	// Resuming after complete: nothing left (a 204, on which EventSource
	// stops).
	if ev, err := openStream(t, n.http, url, late.LastEventID()).Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("resume after complete: %+v, %v; want nothing", ev, err)
	}
}

func assertSeqs(t testing.TB, got []uint64, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("got %d lines, want %d: %v", len(got), n, got)
	}
	for i, s := range got {
		if s != uint64(i+1) {
			t.Fatalf("line %d has seq %d (gap or duplicate): %v", i, s, got)
		}
	}
}

// startedOrder subscribes to started events (as any NATS subscriber may)
// and returns the job ids in the order they started.
func startedOrder(t testing.TB, n *node) (next func() string) {
	t.Helper()
	nc, err := n.connectNATS()
	must(t, err, "connect")
	t.Cleanup(nc.Close)
	ch := make(chan *nats.Msg, 4096)
	_, err = nc.ChanSubscribe(contracts.SubjectEventsPrefix+".*.*."+string(contracts.EventStarted), ch)
	must(t, err, "subscribe")
	must(t, nc.Flush(), "flush")
	return func() string {
		select {
		case m := <-ch:
			return mustJSON[contracts.Event](t, string(m.Data)).JobID
		case <-time.After(20 * time.Second):
			t.Fatal("no job started within 20s")
		}
		return ""
	}
}

// High jobs submitted after a backlog of low ones run first; under a
// flood of high jobs, low jobs still get one dispatch in every ten. The
// order is that of one slot: the slot kept for high jobs (--high-slots)
// would run high jobs beside the gate and beside each other, and has
// tests of its own (services/worker TestHighSlotRunsHighJobsOnly,
// TestLowShareAcrossWorkers).
func TestPriorityOrderAndNoStarvation(t *testing.T) {
	t.Parallel()
	n := startInProcess(t, "--concurrency", "1", "--high-slots", "0")
	next := startedOrder(t, n)
	job := []string{"sh", "-c", "sleep 0.02"}

	gate := submit(t, n.http, "prio", map[string]any{"command": gateCommand})
	if got := next(); got != gate.JobID {
		t.Fatalf("first started %s, want the gate", got)
	}
	prio := map[string]string{}
	for range 10 {
		prio[submit(t, n.http, "prio", map[string]any{"command": job, "priority": "low"}).JobID] = "low"
	}
	for range 5 {
		prio[submit(t, n.http, "prio", map[string]any{"command": job, "priority": "high"}).JobID] = "high"
	}
	touch(t, n.dataDir, "prio", "gate")
	var order []string
	for range 15 {
		order = append(order, prio[next()])
	}
	if want := []string{"high", "high", "high", "high", "high"}; !slices.Equal(order[:5], want) {
		t.Fatalf("dispatch order %v: the high jobs must run first", order)
	}

	// Saturate high: 45 high jobs and 5 low ones, low submitted first.
	if err := removeGate(n, "prio"); err != nil {
		t.Fatal(err)
	}
	gate = submit(t, n.http, "prio", map[string]any{"command": gateCommand})
	if got := next(); got != gate.JobID {
		t.Fatalf("started %s, want the second gate", got)
	}
	for range 5 {
		prio[submit(t, n.http, "prio", map[string]any{"command": job, "priority": "low"}).JobID] = "low"
	}
	for range 45 {
		prio[submit(t, n.http, "prio", map[string]any{"command": job, "priority": "high"}).JobID] = "high"
	}
	touch(t, n.dataDir, "prio", "gate")
	order = order[:0]
	for range 50 {
		order = append(order, prio[next()])
	}
	lows, run, longest := 0, 0, 0
	for _, p := range order {
		if p == "low" {
			lows++
			run = 0
			continue
		}
		run++
		longest = max(longest, run)
	}
	// Exactly 5 when every level's next message is prefetched in time; a
	// late prefetch can only give low more, never less.
	if lows < 5 || lows > 10 || longest > 9 {
		t.Fatalf("dispatch order %v: low got %d of 50 (want 5 to 10), longest high run %d (want ≤ 9)", order, lows, longest)
	}
}

func removeGate(n *node, project string) error {
	return os.Remove(filepath.Join(n.dataDir, "workspaces", project, "gate"))
}

// watch reads a stream from its start to its complete event.
func watch(t testing.TB, base, eventsURL string) ([]contracts.OutputLine, contracts.Event) {
	t.Helper()
	return readToComplete(t, openStream(t, base, eventsURL, ""))
}

// readToComplete reads s up to its complete event and returns the lines
// before it.
func readToComplete(t testing.TB, s *client.Stream) ([]contracts.OutputLine, contracts.Event) {
	t.Helper()
	var lines []contracts.OutputLine
	for {
		ev, err := s.Next()
		must(t, err, "read to complete")
		switch ev.Name {
		case contracts.SSEOutput:
			lines = append(lines, mustJSON[contracts.OutputLine](t, ev.Data))
		case contracts.SSEComplete:
			return lines, mustJSON[contracts.Event](t, ev.Data)
		}
	}
}

func seqsOf(lines []contracts.OutputLine) []uint64 {
	seqs := make([]uint64, len(lines))
	for i, l := range lines {
		seqs[i] = l.Seq
	}
	return seqs
}

// A job past its timeout is killed with its children and ends timed_out;
// a command that cannot start fails with start_failed; env and work_dir
// reach the process.
func TestTimeoutStartFailureEnvAndWorkDir(t *testing.T) {
	t.Parallel()
	n := startInProcess(t)
	slow := submit(t, n.http, "limits", map[string]any{
		"command": []string{"sh", "-c", "echo before; sleep 30 & wait"}, "timeout_seconds": 1,
	})
	missing := submit(t, n.http, "limits", map[string]any{"command": []string{"no-such-command-rdev"}})
	envdir := submit(t, n.http, "limits", map[string]any{
		"command": []string{"sh", "-c", "mkdir -p sub && cd sub && echo \"$GREETING from $(basename $(pwd))\""},
		"env":     map[string]string{"GREETING": "hello"},
	})

	lines, c := watch(t, n.http, slow.EventsURL)
	if c.Status != contracts.StatusTimedOut || c.Reason != contracts.ReasonTimeout || len(lines) != 1 || lines[0].Text != "before" {
		t.Fatalf("timed out job: complete %+v lines %+v", c, lines)
	}
	// Killed at its timeout, not before (it would otherwise run 30 s and
	// the watch above would give up first).
	if c.DurationMS < 1000 {
		t.Fatalf("timed out job ran %d ms, less than its 1 s timeout", c.DurationMS)
	}
	_, c = watch(t, n.http, missing.EventsURL)
	if c.Status != contracts.StatusFailed || c.Reason != contracts.ReasonStartFailed || c.ExitCode != nil {
		t.Fatalf("missing command: complete %+v", c)
	}
	lines, c = watch(t, n.http, envdir.EventsURL)
	if c.Status != contracts.StatusSucceeded || len(lines) != 1 || lines[0].Text != "hello from sub" {
		t.Fatalf("env job: complete %+v lines %+v", c, lines)
	}
	workDir := submit(t, n.http, "limits", map[string]any{"command": []string{"pwd"}, "work_dir": "sub"})
	lines, c = watch(t, n.http, workDir.EventsURL)
	if c.Status != contracts.StatusSucceeded || len(lines) != 1 || !strings.HasSuffix(lines[0].Text, "/workspaces/limits/sub") {
		t.Fatalf("work_dir job: complete %+v lines %+v", c, lines)
	}
}

// Bytes that are not UTF-8 and lines over the limit reach the client
// intact: text stays valid UTF-8, raw carries the exact bytes, long lines
// arrive as partial chunks that join back to the original.
func TestBinaryAndLongLines(t *testing.T) {
	t.Parallel()
	n := startInProcess(t)
	long := contracts.MaxLineBytes*2 + 100
	r := submit(t, n.http, "bytes", map[string]any{
		"command": []string{"sh", "-c", fmt.Sprintf(`printf 'ok\n\377\376bad\n'; head -c %d /dev/zero | tr '\0' x; echo; printf tail`, long)},
	})
	lines, c := watch(t, n.http, r.EventsURL)
	if c.Status != contracts.StatusSucceeded {
		t.Fatalf("complete %+v", c)
	}
	if len(lines) != 6 {
		t.Fatalf("got %d lines, want 6 (ok, bad, 3 chunks, tail)", len(lines))
	}
	if lines[0].Text != "ok" || lines[0].Raw != nil {
		t.Fatalf("line 1 %+v", lines[0])
	}
	if lines[1].Text != "\uFFFDbad" || string(lines[1].Raw) != "\xff\xfebad" {
		t.Fatalf("line 2 %+v", lines[1])
	}
	var joined strings.Builder
	for _, l := range lines[2:5] {
		joined.WriteString(l.Text)
	}
	if joined.String() != strings.Repeat("x", long) || !lines[2].Partial || !lines[3].Partial || lines[4].Partial {
		t.Fatalf("long line came back as %d+%d+%d bytes, partial %v %v %v", len(lines[2].Text), len(lines[3].Text),
			len(lines[4].Text), lines[2].Partial, lines[3].Partial, lines[4].Partial)
	}
	if lines[5].Text != "tail" || !lines[5].Partial {
		t.Fatalf("unterminated last line %+v", lines[5])
	}
}

// Errors raised outside the handlers keep rdev's error body; health and
// readiness answer.
func TestRouterErrorsAndHealth(t *testing.T) {
	t.Parallel()
	n := startInProcess(t)
	for _, tc := range []struct {
		method, path string
		status       int
		code         string
	}{
		{http.MethodGet, "/v1/nope", http.StatusNotFound, "not_found"},
		{http.MethodDelete, "/v1/jobs/abc", http.StatusMethodNotAllowed, "method_not_allowed"},
		{http.MethodPut, "/v1/projects/demo/commands", http.StatusMethodNotAllowed, "method_not_allowed"},
		{http.MethodGet, "/v1/streams/a.b/events", http.StatusBadRequest, "invalid_stream_id"},
		{http.MethodGet, "/v1/streams/unknown/events", http.StatusNotFound, "stream_not_found"},
	} {
		req, _ := http.NewRequest(tc.method, n.http+tc.path, nil)
		req.Header.Set("Authorization", "Bearer "+adminKey)
		resp, err := http.DefaultClient.Do(req)
		must(t, err, "%s %s", tc.method, tc.path)
		var eb contracts.ErrorBody
		err = json.NewDecoder(resp.Body).Decode(&eb)
		resp.Body.Close()
		if err != nil || resp.StatusCode != tc.status || eb.Error.Code != tc.code || eb.Error.Message == "" {
			t.Errorf("%s %s: %d %+v (%v), want %d %s", tc.method, tc.path, resp.StatusCode, eb, err, tc.status, tc.code)
		}
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(n.http + path)
		must(t, err, "GET %s", path)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d, want 200", path, resp.StatusCode)
		}
	}
}
