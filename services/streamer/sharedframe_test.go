package streamer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/contracts/claudestream"
	"github.com/rdev-dev/rdev/services/streamer"
)

// These tests hold the bytes of an event stream, as the client reads them,
// to an encoder of their own (golden below): a hub encodes each live entry
// once for every client of the stream and each client copies the frame,
// while history is encoded per client; whichever path an entry takes, and
// whatever the client asked for (where to resume, which format), the
// bytes must be the ones the contract describes.

// rawClient reads an event stream's body exactly as sent.
type rawClient struct {
	mu   sync.Mutex
	body []byte
	err  error
	done chan struct{}
}

// rawConnect opens an event stream and reads its body; with a gate, it
// reads nothing until the gate closes (a client that stalls).
func (f *fixture) rawConnect(t *testing.T, streamID string, o dialOpts, gate <-chan struct{}) *rawClient {
	t.Helper()
	resp := f.get(t, streamID, o)
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	c := &rawClient{done: make(chan struct{})}
	stop := make(chan struct{})
	go func() {
		defer close(c.done)
		if gate != nil {
			select {
			case <-gate:
			case <-stop:
				return
			}
		}
		buf := make([]byte, 32<<10)
		for {
			n, err := resp.Body.Read(buf)
			c.mu.Lock()
			c.body = append(c.body, buf[:n]...)
			if err != nil && err != io.EOF {
				c.err = err
			}
			c.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		resp.Body.Close()
		<-c.done
	})
	return c
}

// has reports whether the client has read s.
func (c *rawClient) has(s string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Contains(string(c.body), s)
}

// all waits for the stream to end and returns its body without its
// heartbeats, which come whenever the stream is idle for a while.
func (c *rawClient) all(t *testing.T) string {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(streamEnd):
		t.Fatal("stream did not end in time")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		t.Fatalf("read: %v", c.err)
	}
	return strings.ReplaceAll(string(c.body), ": ping\n\n", "")
}

// streamEnd bounds a whole stream: generous, since these tests run
// hundreds of clients under the race detector on a loaded machine.
const streamEnd = 2 * time.Minute

// stored is one message of the stream as the test published it.
type stored struct {
	seq  uint64
	name string // the SSE event carrying it: output, status or complete
	line uint64 // OutputLine.Seq, or Event.Lines
	data []byte
}

// publisher publishes a job's output and events and remembers them.
type publisher struct {
	j    *job
	msgs []stored
}

func (p *publisher) publish(t *testing.T, subject, name string, line uint64, data []byte) uint64 {
	t.Helper()
	ack, err := p.j.f.js.Publish(context.Background(), subject, data)
	if err != nil {
		t.Fatal(err)
	}
	p.msgs = append(p.msgs, stored{seq: ack.Sequence, name: name, line: line, data: data})
	return ack.Sequence
}

// output publishes l, filling in its stream, job and version.
func (p *publisher) output(t *testing.T, l contracts.OutputLine) uint64 {
	t.Helper()
	l.V, l.StreamID, l.JobID, l.Attempt = contracts.OutputLineVersion, p.j.streamID, p.j.jobID, 1
	if l.FD == "" {
		l.FD = contracts.Stdout
	}
	l.Time = time.Date(2026, 12, 5, 15, 0, 0, int(l.Seq), time.UTC)
	b, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	return p.publish(t, contracts.SubjectOutput(p.j.project, p.j.streamID), contracts.SSEOutput, l.Seq, b)
}

func (p *publisher) text(t *testing.T, seq uint64, text string) uint64 {
	t.Helper()
	return p.output(t, contracts.OutputLine{Seq: seq, Text: text})
}

func (p *publisher) event(t *testing.T, typ contracts.EventType, lines uint64) uint64 {
	t.Helper()
	b, _ := json.Marshal(contracts.Event{
		V: contracts.Version, Type: typ, Status: contracts.StatusOf(typ), JobID: p.j.jobID, StreamID: p.j.streamID,
		Project: p.j.project, Attempt: 1, Lines: lines, Time: time.Date(2026, 12, 5, 15, 0, 0, 0, time.UTC),
	})
	name := contracts.SSEStatus
	if typ.Terminal() {
		name = contracts.SSEComplete
	}
	return p.publish(t, contracts.SubjectEvent(p.j.project, p.j.streamID, typ), name, lines, b)
}

// golden is the body a client of the stream should read: the retry
// block, the connected event, then every stored message after
// resume (whose line number is resumeLine) as the contract says: each
// once, a line stored twice once, missing lines announced by a gap event,
// data of several lines as several data fields; with claude, Claude Code's
// stream-json lines as their typed events. It is written independently of
// the streamer's encoder.
func golden(j *job, msgs []stored, resume, resumeLine uint64, claude bool) string {
	var b strings.Builder
	frame := func(id uint64, name string, data []byte) {
		fmt.Fprintf(&b, "id: %d\nevent: %s\n", id, name)
		text := strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(string(data))
		for _, l := range strings.Split(text, "\n") {
			fmt.Fprintf(&b, "data: %s\n", l)
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "retry: %d\n\n", streamer.DefaultRetry.Milliseconds())
	raw := ""
	if resume > 0 {
		raw = strconv.FormatUint(resume, 10)
	}
	connected, _ := json.Marshal(contracts.SSEConnectedData{StreamID: j.streamID, JobID: j.jobID, ResumeAfter: raw})
	frame(resume, contracts.SSEConnected, connected)
	cur, line := resume, resumeLine
	for _, m := range msgs {
		if m.seq <= cur {
			continue
		}
		if m.name == contracts.SSEOutput && m.line <= line {
			cur = m.seq // stored twice
			continue
		}
		var from, to uint64
		switch m.name {
		case contracts.SSEOutput:
			from, to = line+1, m.line-1
		case contracts.SSEComplete:
			from, to = line+1, m.line
		}
		if from > 0 && from <= to && (line > 0 || cur == 0) {
			frame(cur, contracts.SSEGap, fmt.Appendf(nil, `{"from":%d,"to":%d}`, from, to))
		}
		if claude && m.name == contracts.SSEOutput {
			if evs := claudeEvents(m.data); len(evs) > 0 {
				for _, ev := range evs {
					data, _ := json.Marshal(ev.Data)
					frame(m.seq, ev.Name, data)
				}
				cur, line = m.seq, max(line, m.line)
				continue
			}
		}
		frame(m.seq, m.name, m.data)
		cur, line = m.seq, max(line, m.line)
	}
	return b.String()
}

// claudeEvents is what ?format=claude makes of a stored line: typed events
// for a whole stdout line of Claude Code's stream-json, none otherwise.
func claudeEvents(data []byte) []claudestream.Event {
	var l contracts.OutputLine
	if json.Unmarshal(data, &l) != nil || l.FD != contracts.Stdout || l.Partial {
		return nil
	}
	return claudestream.Events(l.Seq, []byte(l.Text))
}

// checkBody fails unless got is want, saying where they part.
func checkBody(t *testing.T, who, got, want string) {
	t.Helper()
	if got == want {
		return
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	lo := max(0, i-200)
	t.Fatalf("%s: body differs at byte %d of %d (want %d)\ngot:  %q\nwant: %q", who, i, len(got), len(want),
		got[lo:min(len(got), i+200)], want[lo:min(len(want), i+200)])
}

// Every client of a stream reads the bytes the contract describes, byte for
// byte: clients following live (their frames encoded once for all of them),
// in the raw and the claude format, clients resuming mid-stream from
// different events (history encoded for them, then live), a client that
// stalls until the hub cuts it loose and it catches up from storage, and
// one that joins after the end (all history). The stream holds text lines,
// a line that was not UTF-8, a partial line, a line stored twice, a
// missing line, a line stored as JSON over several lines (CRLF and LF),
// Claude Code's stream-json lines, lifecycle events and a terminal event
// counting a line nobody got.
func TestEveryClientReadsTheSameBytes(t *testing.T) {
	t.Parallel()
	f := setup(t, options{smallSendBuffer: true, cfg: streamer.Config{ClientBuffer: 16, WriteTimeout: streamEnd}})
	j := f.newJob(t)
	p := &publisher{j: j}

	type client struct {
		name               string
		c                  *rawClient
		resume, resumeLine uint64
		claude             bool
	}
	var clients []client
	connect := func(name string, resume, resumeLine uint64, claude bool, gate <-chan struct{}, o dialOpts) {
		if resume > 0 {
			o.lastEventID = strconv.FormatUint(resume, 10)
		}
		if claude {
			o.query = "format=claude"
		}
		c := f.rawConnect(t, j.streamID, o, gate)
		clients = append(clients, client{name: name, c: c, resume: resume, resumeLine: resumeLine, claude: claude})
	}
	gate := make(chan struct{})
	for i := range 3 {
		connect(fmt.Sprintf("live raw %d", i), 0, 0, false, nil, dialOpts{})
	}
	connect("live claude", 0, 0, true, nil, dialOpts{})
	connect("stalled", 0, 0, false, gate, dialOpts{smallReceiveBuffer: true})
	for _, c := range clients[:4] {
		await.Within(t, waitFor, c.name+" connected", func() bool { return c.c.has("event: connected\n") })
	}
	started := p.event(t, contracts.EventStarted, 0)
	// Once a client has the first event it has joined the hub: what
	// follows reaches it live.
	for _, c := range clients[:4] {
		await.Within(t, waitFor, c.name+" has the started event", func() bool { return c.c.has(fmt.Sprintf("id: %d\n", started)) })
	}

	p.text(t, 1, `hello, "world" <b>&amp;</b> `+"\u2028 \t tab é 😀")
	second := p.output(t, contracts.OutputLine{Seq: 2, Text: "bad \ufffd byte", Raw: []byte("bad \xff byte")})
	p.output(t, contracts.OutputLine{Seq: 3, Text: "no newline yet", Partial: true, FD: contracts.Stderr})
	p.output(t, contracts.OutputLine{Seq: 3, Text: "no newline yet", Partial: true, FD: contracts.Stderr}) // a publisher retry
	connect("resumed at line 2", second, 2, false, nil, dialOpts{})
	p.text(t, 5, "line 4 is missing")
	multi := fmt.Sprintf("{\r\n  \"v\": %d,\n  \"stream_id\": %q,\r  \"job_id\": %q,\n  \"attempt\": 1,\r\n  \"seq\": 6,\n  \"fd\": \"stdout\",\n  \"text\": \"stored over several lines\",\n  \"time\": \"2026-12-05T15:00:00Z\"\n}",
		contracts.OutputLineVersion, j.streamID, j.jobID)
	p.publish(t, contracts.SubjectOutput(j.project, j.streamID), contracts.SSEOutput, 6, []byte(multi))
	claudeAt := p.text(t, 7, `{"type":"system","subtype":"init","session_id":"s1","model":"m"}`)
	p.text(t, 8, `{"type":"assistant","message":{"role":"assistant","content":[{"type":"text","text":"hi"},{"type":"tool_use","id":"toolu_1","name":"Bash","input":{"command":"ls"}}]},"session_id":"s1"}`)
	connect("claude resumed at line 7", claudeAt, 7, true, nil, dialOpts{})
	p.output(t, contracts.OutputLine{Seq: 9, FD: contracts.Stderr, Text: `{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"on stderr","session_id":"s1"}`})
	p.text(t, 10, `{"type":"user","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"Makefile","is_error":false}]},"session_id":"s1"}`)
	p.text(t, 11, `{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"hi","session_id":"s1","total_cost_usd":0.01}`)
	p.event(t, contracts.EventRetrying, 11)
	// Enough bytes to fill every buffer between the streamer and the
	// stalled client many times over, so the hub cuts it loose.
	pad := strings.Repeat("x", slowPad)
	const last = 1500
	for s := uint64(12); s <= last; s++ {
		p.text(t, s, fmt.Sprintf("bulk %d %s", s, pad))
	}
	p.event(t, contracts.EventSucceeded, last+1) // one line nobody got
	connect("after the end", 0, 0, false, nil, dialOpts{})
	close(gate)

	for _, c := range clients {
		checkBody(t, c.name, c.c.all(t), golden(j, p.msgs, c.resume, c.resumeLine, c.claude))
	}
	if st := f.svc.Stats(); st.Overflows == 0 {
		t.Errorf("stats %+v: the stalled client was never cut loose", st)
	}
}

// Many clients on one stream, each frame encoded once and copied by all of
// them at once (under the race detector, which would see a client writing
// to a shared frame): every client reads every event once, in order, with
// its id, the same bytes as the contract.
func TestManyClientsReadEachSharedFrameOnce(t *testing.T) {
	t.Parallel()
	clients, lines := 100, uint64(300)
	if testing.Short() {
		clients = 30
	}
	f := setup(t, options{cfg: streamer.Config{Heartbeat: 50 * time.Millisecond}})
	j := f.newJob(t)
	p := &publisher{j: j}
	cs := make([]*rawClient, clients)
	for i := range cs {
		cs[i] = f.rawConnect(t, j.streamID, dialOpts{}, nil)
	}
	started := p.event(t, contracts.EventStarted, 0)
	for i, c := range cs {
		await.Within(t, waitFor, fmt.Sprintf("client %d has the started event", i), func() bool { return c.has(fmt.Sprintf("id: %d\n", started)) })
	}
	for s := uint64(1); s <= lines; s++ {
		p.text(t, s, fmt.Sprintf("line %d of %d", s, lines))
	}
	p.event(t, contracts.EventSucceeded, lines)
	want := golden(j, p.msgs, 0, 0, false)
	for i, c := range cs {
		checkBody(t, fmt.Sprintf("client %d", i), c.all(t), want)
	}
	if st := f.svc.Stats(); st.HubsStarted != 1 {
		t.Errorf("stats %+v: want one hub for the stream", st)
	}
}
