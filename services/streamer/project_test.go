package streamer_test

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// A project's event stream carries the lifecycle events of the project's
// jobs stored from the connection on, in order and no other project's;
// the connected event's id resumes from the start; Last-Event-ID resumes
// after an event; ?stream_id= keeps one stream's events.
func TestProjectEvents(t *testing.T) {
	t.Parallel()
	f, a, project, reader := projectSetup(t, "PREADER")
	j1, j2, stranger := f.newJobIn(t, project), f.newJobIn(t, project), f.newJob(t)
	j1.event(t, contracts.EventQueued, 0) // before the connection: not sent

	c := f.connect(t, "", dialOpts{project: project, apiKey: reader})
	connected := c.handshake(t)
	if d := mustData[contracts.SSEProjectConnectedData](t, connected.Data); d.Project != project || d.ResumeAfter != "" {
		t.Fatalf("connected %s", connected.Data)
	}
	startID := connected.ID
	j2.event(t, contracts.EventQueued, 0)
	stranger.event(t, contracts.EventQueued, 0)
	j1.event(t, contracts.EventStarted, 0)
	j1.event(t, contracts.EventSucceeded, 3)
	evs := statusEvents(t, c, 3)
	if got := strings.Join(evs.describe(), ","); got != j2.jobID+" queued,"+j1.jobID+" started,"+j1.jobID+" succeeded" {
		t.Fatalf("events %s", got)
	}
	checkIDs(t, mustUint(t, startID), evs.raw)

	// Resume from the connected event's id: everything since, nothing before.
	r := f.connect(t, "", dialOpts{project: project, apiKey: reader, lastEventID: startID})
	r.handshake(t)
	if got := strings.Join(statusEvents(t, r, 3).describe(), ","); got != strings.Join(evs.describe(), ",") {
		t.Fatalf("resumed from the start: %s", got)
	}
	// Resume after the first event.
	r = f.connect(t, "", dialOpts{project: project, apiKey: reader, lastEventID: evs.raw[0].ID})
	r.handshake(t)
	if got := strings.Join(statusEvents(t, r, 2).describe(), ","); got != strings.Join(evs.describe()[1:], ",") {
		t.Fatalf("resumed after %s: %s", evs.raw[0].ID, got)
	}
	// One stream only.
	one := f.connect(t, "", dialOpts{project: project, apiKey: reader, lastEventID: startID, query: "stream_id=" + j1.streamID})
	if d := mustData[contracts.SSEProjectConnectedData](t, one.handshake(t).Data); d.StreamID != j1.streamID || d.ResumeAfter != startID {
		t.Fatalf("connected to one stream: %+v", d)
	}
	if got := strings.Join(statusEvents(t, one, 2).describe(), ","); got != j1.jobID+" started,"+j1.jobID+" succeeded" {
		t.Fatalf("one stream: %s", got)
	}

	// The open feeds end once the key is revoked.
	a.revoke("PREADER")
	if ev, ok := c.next(t); !ok || ev.Name != contracts.SSEError || mustData[contracts.ErrorDetail](t, ev.Data).Code != access.CodeAccessRevoked {
		t.Fatalf("after the revoke: %+v (open %v)", ev, ok)
	}
}

// Refusals of the project's event stream happen before a byte of it is
// sent, and do not tell a key that may not read the project whether it
// exists.
func TestProjectEventsRefused(t *testing.T) {
	t.Parallel()
	f, a, project, reader := projectSetup(t, "RREADER")
	stranger := a.key("RSTRANGER", "project:elsewhere:read")
	admin := a.key("RADMIN", access.ScopeAdmin)
	streamTok := f.signer.Sign(access.StreamResource("s1"), time.Now().Add(time.Hour))
	for _, tc := range []struct {
		name   string
		o      dialOpts
		status int
		code   string
	}{
		{"no credentials", dialOpts{project: project, anonymous: true}, http.StatusUnauthorized, "missing_credentials"},
		{"a stream's token", dialOpts{project: project, token: streamTok}, http.StatusUnauthorized, "invalid_token"},
		{"key of another project", dialOpts{project: project, apiKey: stranger}, http.StatusNotFound, "project_not_found"},
		{"unknown project, reader of another", dialOpts{project: "nope", apiKey: reader}, http.StatusNotFound, "project_not_found"},
		{"unknown project, admin", dialOpts{project: "nope", apiKey: admin}, http.StatusNotFound, "project_not_found"},
		{"invalid project", dialOpts{project: "Not_A_Label", apiKey: admin}, http.StatusBadRequest, "invalid_project"},
		{"invalid stream id", dialOpts{project: project, apiKey: reader, query: "stream_id=a.b"}, http.StatusBadRequest, "invalid_stream_id"},
		{"invalid Last-Event-ID", dialOpts{project: project, apiKey: reader, lastEventID: "x"}, http.StatusBadRequest, "invalid_last_event_id"},
		{"Last-Event-ID beyond the end", dialOpts{project: project, apiKey: reader, lastEventID: "999999999"}, http.StatusBadRequest, "invalid_last_event_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkError(t, f.get(t, "", tc.o), tc.status, tc.code)
		})
	}
}

// projectSetup is a streamer with a project of the test's own and the
// secret of a key, readerID, that reads it.
func projectSetup(t *testing.T, readerID string) (f *fixture, a accessFixture, project, reader string) {
	t.Helper()
	f = setup(t, options{})
	a = accessFixture{f, t}
	project = uniqueID(t, "p")
	a.project(project, "")
	return f, a, project, a.key(readerID, "project:"+project+":read")
}

// statusList is a run of status events.
type statusList struct{ raw []sseEvent }

// describe turns the events into "<job id> <type>".
func (l statusList) describe() []string {
	var out []string
	for _, ev := range l.raw {
		var e contracts.Event
		_ = json.Unmarshal([]byte(ev.Data), &e)
		out = append(out, e.JobID+" "+string(e.Type))
	}
	return out
}

// statusEvents reads the next n events, which must be status events.
func statusEvents(t *testing.T, c *sseClient, n int) statusList {
	t.Helper()
	var l statusList
	for len(l.raw) < n {
		ev, ok := c.next(t)
		if !ok || ev.Name != contracts.SSEStatus {
			t.Fatalf("after %d status events: %+v (open %v)", len(l.raw), ev, ok)
		}
		l.raw = append(l.raw, ev)
	}
	return l
}

func mustData[T any](t *testing.T, data string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(data), &v); err != nil {
		t.Fatalf("decode %q: %v", data, err)
	}
	return v
}

func mustUint(t *testing.T, s string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("id %q: %v", s, err)
	}
	return n
}
