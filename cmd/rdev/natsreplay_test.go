package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
)

// directReader is a direct subscriber on rdev up's embedded server: a
// NATS credential of one project, connected with its inbox prefix, and
// the permission violations the server sent it.
type directReader struct {
	cred    contracts.NATSCredentials
	project string
	nc      *nats.Conn
	errs    chan error
}

func newDirectReader(t *testing.T, n *node, project string) *directReader {
	t.Helper()
	code, b := call(t, http.MethodPost, n.http+"/v1/projects/"+project+"/nats-credentials", nil)
	if code != http.StatusCreated {
		t.Fatalf("nats-credentials: %d %s", code, b)
	}
	r := &directReader{cred: mustJSON[contracts.NATSCredentials](t, b), project: project, errs: make(chan error, 64)}
	if r.cred.InboxPrefix != contracts.ReaderInboxPrefix+"."+project+"."+strings.TrimPrefix(r.cred.InboxPrefix, contracts.ReaderInboxPrefix+"."+project+".") ||
		len(r.cred.Publish) != 1 || r.cred.Publish[0] != contracts.SubjectProjectReplay(project) {
		t.Fatalf("credential %+v", r.cred)
	}
	nc, err := nats.Connect(n.nats, nats.Token(r.cred.Token), nats.CustomInboxPrefix(r.cred.InboxPrefix), nats.MaxReconnects(0),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case r.errs <- err:
			default:
			}
		}))
	must(t, err, "connect with the credential")
	t.Cleanup(nc.Close)
	r.nc = nc
	return r
}

// refused waits for the server's permission violation naming subject
// (generous: one protocol line's answer, on a loaded machine).
func (r *directReader) refused(t *testing.T, what, subject string) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case err := <-r.errs:
			if errorsIsPermission(err) && strings.Contains(err.Error(), subject) {
				return
			}
		case <-timeout:
			t.Fatalf("%s: no permission violation for %q from the server", what, subject)
		}
	}
}

// replay asks for one page of a stream.
func (r *directReader) replay(t *testing.T, streamID string, req contracts.ReplayRequest) contracts.ReplayReply {
	t.Helper()
	body, _ := json.Marshal(req)
	// Generous: the streamer's storage reads on a loaded machine.
	m, err := r.nc.Request(contracts.SubjectReplay(r.project, streamID), body, 30*time.Second)
	must(t, err, "replay request")
	rep := mustJSON[contracts.ReplayReply](t, m.Data)
	if rep.Error != nil {
		t.Fatalf("replay of %s: %+v", streamID, rep.Error)
	}
	return rep
}

// replayAll pages through a stream's history from after, max messages a
// request; it returns the messages and how many requests it took.
func (r *directReader) replayAll(t *testing.T, streamID string, after uint64, max int) ([]contracts.ReplayMessage, int, contracts.ReplayReply) {
	t.Helper()
	var out []contracts.ReplayMessage
	for n := 1; ; n++ {
		rep := r.replay(t, streamID, contracts.ReplayRequest{After: after, Max: max})
		out = append(out, rep.Messages...)
		after = rep.Next
		if rep.Exhausted {
			return out, n, rep
		}
		if n > 10000 {
			t.Fatal("the replay does not end")
		}
	}
}

// streamLines checks that msgs are stream streamID's lines 1..lines, each
// once and in order, with the text `line <n>`, and its events, the
// terminal one last; it returns the events' types.
func streamLines(t *testing.T, project, streamID string, msgs []contracts.ReplayMessage, lines int) []string {
	t.Helper()
	var (
		next   = 1
		events []string
	)
	for i, m := range msgs {
		if i > 0 && m.Seq != 0 && m.Seq <= msgs[i-1].Seq {
			t.Fatalf("message %d: stream sequence %d after %d", i, m.Seq, msgs[i-1].Seq)
		}
		switch {
		case m.Subject == contracts.SubjectOutput(project, streamID):
			l := mustJSON[contracts.OutputLine](t, m.Data)
			if int(l.Seq) != next || l.Text != fmt.Sprintf("line %d", next) {
				t.Fatalf("message %d: line %d %q, want line %d", i, l.Seq, l.Text, next)
			}
			next++
		case strings.HasPrefix(m.Subject, contracts.SubjectEventsPrefix+"."+project+"."+streamID+"."):
			ev := mustJSON[contracts.Event](t, m.Data)
			if len(events) > 0 && ev.Type.Terminal() {
				if last := events[len(events)-1]; contracts.EventType(last).Terminal() {
					t.Fatalf("a second terminal event %s after %s", ev.Type, last)
				}
			}
			events = append(events, string(ev.Type))
		default:
			t.Fatalf("message %d of another stream: %s", i, m.Subject)
		}
	}
	if next != lines+1 {
		t.Fatalf("%d lines, want %d", next-1, lines)
	}
	if len(events) == 0 || !contracts.EventType(events[len(events)-1]).Terminal() || msgs[len(msgs)-1].Subject == contracts.SubjectOutput(project, streamID) {
		t.Fatalf("events %v: the terminal event is not last", events)
	}
	return events
}

// rdev up answers replay requests over NATS from a direct subscriber's
// credential: a finished stream in pages with cursors, bodies as stored;
// "subscribe live, replay, drop duplicates" on a stream printing while
// the reader joins loses and repeats nothing; the nats CLI gets a reply
// with --inbox-prefix. The server refuses another project's replays and
// another credential's inbox; the streamer answers nothing into a reply
// subject outside the project's reader inboxes.
func TestUpReplaysOverNATS(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	t.Parallel()
	n := startInProcess(t)
	for _, p := range []string{"replay", "elsewhere"} {
		if code, b := call(t, http.MethodPost, n.http+"/v1/projects", map[string]string{"id": p}); code != http.StatusCreated {
			t.Fatalf("create project %s: %d %s", p, code, b)
		}
	}
	r := newDirectReader(t, n, "replay")
	other := newDirectReader(t, n, "elsewhere")
	admin, err := n.connectNATS()
	must(t, err, "connect as admin")
	defer admin.Close()

	// A finished stream longer than one reply.
	const finishedLines = 1200
	done := submit(t, n.http, "replay", map[string]any{"command": []string{"sh", "-c",
		fmt.Sprintf("i=1; while [ $i -le %d ]; do echo line $i; i=$((i+1)); done", finishedLines)}})
	waitFinal(t, n.http, done.JobID, 2*time.Minute) // generous: a loaded machine
	msgs, requests, last := r.replayAll(t, done.StreamID, 0, 0)
	events := streamLines(t, "replay", done.StreamID, msgs, finishedLines)
	if requests < 3 || !last.Ended || events[len(events)-1] != string(contracts.EventSucceeded) {
		t.Fatalf("%d requests, ended %v, events %v", requests, last.Ended, events)
	}
	// The bodies are the stored ones, byte for byte, with their subjects.
	output, err := mustJS(t, admin).Stream(t.Context(), contracts.StreamOutput)
	must(t, err, "output stream")
	for _, i := range []int{0, 1, len(msgs) / 2, len(msgs) - 1} {
		stored, err := output.GetMsg(t.Context(), msgs[i].Seq)
		must(t, err, "get stored message %d", msgs[i].Seq)
		if stored.Subject != msgs[i].Subject || string(stored.Data) != string(msgs[i].Data) {
			t.Fatalf("message %d: replayed %s %s, stored %s %s", msgs[i].Seq, msgs[i].Subject, msgs[i].Data, stored.Subject, stored.Data)
		}
	}
	// Smaller pages, from a cursor in the middle.
	tail, _, _ := r.replayAll(t, done.StreamID, msgs[599].Seq, 7)
	if len(tail) != len(msgs)-600 || tail[0].Seq != msgs[600].Seq {
		t.Fatalf("from the middle: %d messages from %d, want %d from %d", len(tail), tail[0].Seq, len(msgs)-600, msgs[600].Seq)
	}

	// Join a stream while it prints: subscribe live, replay, then take
	// the live messages, dropping those the replay had.
	const joinLines = 200
	running := submit(t, n.http, "replay", map[string]any{"command": []string{"sh", "-c",
		"i=1; while [ $i -le 50 ]; do echo line $i; i=$((i+1)); done; while [ ! -e gate-replay ]; do sleep 0.01; done; " +
			fmt.Sprintf("while [ $i -le %d ]; do echo line $i; i=$((i+1)); sleep 0.005; done", joinLines)}})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute) // generous: a job's start on a loaded machine
	defer cancel()
	if err := await.Poll(ctx, func() bool {
		return len(r.replay(t, running.StreamID, contracts.ReplayRequest{}).Messages) >= 50
	}); err != nil {
		t.Fatal("the running job's first lines were never stored")
	}
	live := make(chan *nats.Msg, 4096)
	for _, s := range []string{contracts.SubjectProjectOutput("replay"), contracts.SubjectProjectEvents("replay")} {
		sub, err := r.nc.ChanSubscribe(s, live)
		must(t, err, "subscribe %s", s)
		defer sub.Unsubscribe() //nolint:errcheck // the connection closes too
	}
	must(t, r.nc.Flush(), "flush")
	touch(t, n.dataDir, "replay", "gate-replay")
	joined, _, _ := r.replayAll(t, running.StreamID, 0, 25)
	seen := map[string]bool{}
	for _, m := range joined {
		seen[m.Subject+"\x00"+string(m.Data)] = true
	}
	dups := 0
	merged := joined
	for ended := len(joined) > 0 && strings.HasSuffix(joined[len(joined)-1].Subject, "."+string(contracts.EventSucceeded)); !ended; {
		select {
		case m := <-live:
			if !strings.Contains(m.Subject, "."+running.StreamID) {
				continue // another stream of the project
			}
			if len(m.Data) == 0 {
				continue // a fast batch's end marker (docs/nats.md): never stored
			}
			if key := m.Subject + "\x00" + string(m.Data); seen[key] {
				dups++
				continue
			} else {
				seen[key] = true
			}
			merged = append(merged, contracts.ReplayMessage{Subject: m.Subject, Data: m.Data})
			ended = strings.HasPrefix(m.Subject, contracts.SubjectEventsPrefix+".") && mustJSON[contracts.Event](t, m.Data).Type.Terminal()
		case <-ctx.Done():
			t.Fatalf("the joined stream never ended: %d messages", len(merged))
		}
	}
	streamLines(t, "replay", running.StreamID, merged, joinLines)
	t.Logf("joined: %d messages replayed, %d live, %d live duplicates dropped", len(joined), len(merged)-len(joined), dups)

	// Refused by the server: another project's replays, another
	// credential's inbox.
	must(t, r.nc.Publish(contracts.SubjectReplay("elsewhere", done.StreamID), []byte(`{}`)), "publish")
	r.refused(t, "a replay request of another project", contracts.SubjectReplay("elsewhere", done.StreamID))
	_, err = r.nc.SubscribeSync(other.cred.InboxPrefix + ".>")
	must(t, err, "subscribe")
	r.refused(t, "subscribing to another credential's inbox", other.cred.InboxPrefix+".>")

	// Ignored by the streamer: reply subjects outside the project's reader
	// inboxes, which the server does not check.
	victim := contracts.JobKey("victim-" + done.StreamID)
	foreign := []string{
		"$KV." + contracts.BucketState + "." + victim,
		contracts.SubjectJob(contracts.PriorityNormal, "replay"),
		other.cred.InboxPrefix + ".stolen",
	}
	jobsBefore := natstest.Msgs(t, mustJS(t, admin), contracts.StreamJobs)
	var watch []*nats.Subscription
	for _, s := range foreign {
		sub, err := admin.SubscribeSync(s)
		must(t, err, "subscribe %s as admin", s)
		watch = append(watch, sub)
	}
	must(t, admin.Flush(), "flush")
	for _, s := range foreign {
		must(t, r.nc.PublishRequest(contracts.SubjectReplay("replay", done.StreamID), s, []byte(`{"max":1}`)), "publish request")
	}
	// Requests are judged in order: once this one is answered, the
	// others were.
	if rep := r.replay(t, done.StreamID, contracts.ReplayRequest{Max: 1}); len(rep.Messages) != 1 {
		t.Fatalf("replay after the foreign ones: %+v", rep)
	}
	must(t, admin.Flush(), "flush")
	for _, sub := range watch {
		if n, _, err := sub.Pending(); err != nil || n != 0 {
			t.Errorf("the streamer answered into %s: %d messages (%v)", sub.Subject, n, err)
		}
	}
	if n := natstest.Msgs(t, mustJS(t, admin), contracts.StreamJobs); n != jobsBefore {
		t.Errorf("RDEV_JOBS holds %d messages, %d before", n, jobsBefore)
	}
	kv, err := mustJS(t, admin).KeyValue(t.Context(), contracts.BucketState)
	must(t, err, "state bucket")
	if e, err := kv.Get(t.Context(), victim); err == nil {
		t.Errorf("the state bucket holds %s: %s", victim, e.Value())
	}
	// Counted where operators see it.
	if v := value(scrape(t, n.http), "rdev_nats_replay_ignored_total"); v != float64(len(foreign)) {
		t.Errorf("rdev_nats_replay_ignored_total %v, want %d", v, len(foreign))
	}

	// The nats CLI with the credential's inbox prefix.
	t.Run("nats CLI", func(t *testing.T) {
		bin := natstest.CLI(t)
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute) // the CLI's start on a loaded machine
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, "--server", n.nats, "--token", r.cred.Token, "--inbox-prefix", r.cred.InboxPrefix,
			"req", contracts.SubjectReplay("replay", done.StreamID), `{"max":3}`).CombinedOutput()
		if err != nil {
			t.Fatalf("nats req: %v\n%s", err, out)
		}
		i := strings.Index(string(out), `{"v":`)
		if i < 0 {
			t.Fatalf("nats req printed no reply:\n%s", out)
		}
		body, _, _ := strings.Cut(string(out[i:]), "\n")
		rep := mustJSON[contracts.ReplayReply](t, body)
		if rep.Error != nil || len(rep.Messages) != 3 || rep.Messages[0].Seq != msgs[0].Seq || rep.Exhausted {
			t.Fatalf("nats req: %+v\n%s", rep, out)
		}
	})
}

func mustJS(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	must(t, err, "jetstream")
	return js
}
