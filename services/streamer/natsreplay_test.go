package streamer_test

import (
	"encoding/json"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// replayer asks the streamer for replays over NATS as a direct
// subscriber would, on rdev's admin connection (the server's permissions
// are tested in cmd/rdev and services/api; this is the service's side).
type replayer struct {
	f       *fixture
	project string
	inbox   *nats.Subscription
	reply   string
}

func (f *fixture) replayer(t *testing.T, project string) *replayer {
	t.Helper()
	if err := f.access.CreateProject(t.Context(), access.Project{ID: project}); err != nil {
		t.Fatal(err)
	}
	reply := contracts.SubjectReaderInbox(project, "n1") + ".r"
	sub, err := f.js.Conn().SubscribeSync(reply)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return &replayer{f: f, project: project, inbox: sub, reply: reply}
}

// ask sends body on subject and returns the reply.
func (r *replayer) ask(t *testing.T, subject, body string) contracts.ReplayReply {
	t.Helper()
	if err := r.f.js.Conn().PublishRequest(subject, r.reply, []byte(body)); err != nil {
		t.Fatal(err)
	}
	m, err := r.inbox.NextMsg(waitFor)
	if err != nil {
		t.Fatalf("no reply to %s %s: %v", subject, body, err)
	}
	var rep contracts.ReplayReply
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		t.Fatalf("reply %s: %v", m.Data, err)
	}
	if int64(len(m.Data)) > r.f.js.Conn().MaxPayload() {
		t.Fatalf("a reply of %d bytes, over the max payload", len(m.Data))
	}
	return rep
}

// all pages through a stream's replay, max messages a request, and
// returns every message, the number of requests and the last reply.
func (r *replayer) all(t *testing.T, streamID string, max int) ([]contracts.ReplayMessage, int, contracts.ReplayReply) {
	t.Helper()
	var (
		out   []contracts.ReplayMessage
		after uint64
	)
	for n := 1; ; n++ {
		body, _ := json.Marshal(contracts.ReplayRequest{After: after, Max: max})
		rep := r.ask(t, contracts.SubjectReplay(r.project, streamID), string(body))
		if rep.Error != nil {
			t.Fatalf("replay: %+v", rep.Error)
		}
		if rep.Next < after || (len(rep.Messages) > 0 && rep.Next < rep.Messages[len(rep.Messages)-1].Seq) {
			t.Fatalf("cursor %d after %d, messages %d", rep.Next, after, len(rep.Messages))
		}
		out = append(out, rep.Messages...)
		after = rep.Next
		if rep.Exhausted {
			return out, n, rep
		}
		if n > 1000 {
			t.Fatal("the replay does not end")
		}
	}
}

// A finished stream replays over NATS in pages: lines (a legacy one
// without the project in its subject included) and events in stream
// order, bodies as stored, the terminal event last; the cursor of one
// reply is the next request's, and a page is bounded by count and bytes.
func TestNATSReplayPages(t *testing.T) {
	t.Parallel()
	f := setup(t, options{})
	project := uniqueID(t, "p")
	r := f.replayer(t, project)
	j := f.newJobIn(t, project)
	j.event(t, contracts.EventStarted, 0)
	j.legacyLine(t, 1)
	j.manyLines(t, 2, 700)
	end := j.event(t, contracts.EventSucceeded, 700)

	stored, err := f.js.Stream(t.Context(), contracts.StreamOutput)
	if err != nil {
		t.Fatal(err)
	}
	check := func(msgs []contracts.ReplayMessage) {
		t.Helper()
		if len(msgs) != 702 {
			t.Fatalf("%d messages, want 702", len(msgs))
		}
		for i, m := range msgs {
			if i > 0 && m.Seq <= msgs[i-1].Seq {
				t.Fatalf("message %d: seq %d after %d", i, m.Seq, msgs[i-1].Seq)
			}
			if i%100 == 1 || i == len(msgs)-1 { // a sample, compared with what is stored
				raw, err := stored.GetMsg(t.Context(), m.Seq)
				if err != nil || raw.Subject != m.Subject || string(raw.Data) != string(m.Data) {
					t.Fatalf("message %d differs from the stored one: %+v %v", m.Seq, raw, err)
				}
			}
			if i == 0 || i == len(msgs)-1 {
				continue
			}
			var l contracts.OutputLine
			if err := json.Unmarshal(m.Data, &l); err != nil || l.Seq != uint64(i) {
				t.Fatalf("message %d: %s, want line %d", i, m.Data, i)
			}
		}
		if msgs[0].Subject != contracts.SubjectEvent(project, j.streamID, contracts.EventStarted) ||
			msgs[1].Subject != contracts.SubjectOutputLegacy(j.streamID) || msgs[701].Seq != end {
			t.Fatalf("first %s, second %s, last %d (want %d)", msgs[0].Subject, msgs[1].Subject, msgs[701].Seq, end)
		}
	}

	msgs, n, last := r.all(t, j.streamID, 0)
	check(msgs)
	if n != 2 || !last.Ended || last.Next < end {
		t.Fatalf("default pages: %d requests, last %+v", n, last.Next)
	}
	msgs, n, _ = r.all(t, j.streamID, 100)
	check(msgs)
	if n != 8 {
		t.Fatalf("max 100: %d requests, want 8", n)
	}
	// From the end: nothing more, and the cursor stays.
	again := r.ask(t, contracts.SubjectReplay(project, j.streamID), `{"after":`+jsonNum(last.Next)+`}`)
	if again.Error != nil || len(again.Messages) != 0 || !again.Exhausted || again.Next != last.Next {
		t.Fatalf("from the end: %+v", again)
	}

	// Lines of 100 KiB: a reply stays under the server's max payload
	// (1 MiB), so it carries fewer than asked.
	big := f.newJobIn(t, project)
	big.pad = 100 << 10
	big.lines(t, 1, 30)
	msgs, n, _ = r.all(t, big.streamID, 0)
	if len(msgs) != 30 || n < 3 { // at most 10 lines of 100 KiB a reply
		t.Fatalf("big lines: %d messages in %d requests", len(msgs), n)
	}
}

func jsonNum(n uint64) string { b, _ := json.Marshal(n); return string(b) }

// Bad requests get a machine-readable error; a stream of another project
// is not found, word for word as one that does not exist.
func TestNATSReplayRefusesBadRequests(t *testing.T) {
	t.Parallel()
	f := setup(t, options{})
	project := uniqueID(t, "p")
	r := f.replayer(t, project)
	j := f.newJobIn(t, project)
	j.lines(t, 1, 2)
	other := f.newJobIn(t, uniqueID(t, "q"))
	other.lines(t, 1, 2)
	subj := contracts.SubjectReplay(project, j.streamID)
	for _, c := range []struct{ subject, body, code string }{
		{subj, `{`, contracts.ReplayErrInvalidRequest},
		{subj, `{"after":"x"}`, contracts.ReplayErrInvalidRequest},
		{subj, `{"from":1}`, contracts.ReplayErrInvalidRequest},
		{subj, `{"max":501}`, contracts.ReplayErrInvalidRequest},
		{subj, `{"max":-1}`, contracts.ReplayErrInvalidRequest},
		{subj, `{} {}`, contracts.ReplayErrInvalidRequest},
		{contracts.SubjectReplayPrefix + "." + project + ".bad!id", `{}`, contracts.ReplayErrInvalidRequest},
		{contracts.SubjectReplay(project, "no-such-stream"), `{}`, contracts.ReplayErrStreamNotFound},
		{contracts.SubjectReplay(project, other.streamID), `{}`, contracts.ReplayErrStreamNotFound},
	} {
		rep := r.ask(t, c.subject, c.body)
		if rep.Error == nil || rep.Error.Code != c.code || rep.Error.Message == "" || len(rep.Messages) != 0 {
			t.Errorf("%s %s: %+v, want %s", c.subject, c.body, rep, c.code)
		}
	}
	if rep := r.ask(t, subj, ``); rep.Error != nil || len(rep.Messages) != 2 {
		t.Fatalf("an empty body is {}: %+v", rep)
	}
}

// A request whose reply subject is not an inbox of the project's readers
// gets no answer at all: the streamer may publish into any project's
// reader inboxes, so it would otherwise write the stream into another
// project's inbox (and try a KV key or a job subject, which the server
// refuses).
func TestNATSReplayIgnoresForeignReplySubjects(t *testing.T) {
	t.Parallel()
	f := setup(t, options{})
	project := uniqueID(t, "p")
	r := f.replayer(t, project)
	j := f.newJobIn(t, project)
	j.lines(t, 1, 3)
	nc := f.js.Conn()
	foreign := []string{
		"$KV." + contracts.BucketState + "." + contracts.JobKey("victim"),
		contracts.SubjectJob(contracts.PriorityNormal, project),
		contracts.SubjectReaderInbox("another", "n1") + ".r",
		contracts.SubjectReaderInbox(project+"x", "n1") + ".r",
		contracts.ReaderInboxPrefix + "." + project,
		"_INBOX.x",
	}
	var subs []*nats.Subscription
	for _, s := range foreign {
		sub, err := nc.SubscribeSync(s)
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, sub)
		if err := nc.PublishRequest(contracts.SubjectReplay(project, j.streamID), s, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Publish(contracts.SubjectReplay(project, j.streamID), []byte(`{}`)); err != nil { // no reply subject
		t.Fatal(err)
	}
	// The requests are served in order: once this one is answered, the
	// others were judged.
	if rep := r.ask(t, contracts.SubjectReplay(project, j.streamID), `{}`); rep.Error != nil || len(rep.Messages) != 3 {
		t.Fatalf("replay: %+v", rep)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, sub := range subs {
		if n, _, err := sub.Pending(); err != nil || n != 0 {
			t.Errorf("the streamer answered into %s: %d messages (%v)", sub.Subject, n, err)
		}
	}
	if n := f.svc.Stats().ReplayIgnored; n != uint64(len(foreign)+1) {
		t.Fatalf("ReplayIgnored %d, want %d", n, len(foreign)+1)
	}
	if n := f.svc.Stats().ReplayRequests; n != 1 {
		t.Fatalf("ReplayRequests %d, want 1", n)
	}
}
