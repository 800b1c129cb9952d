package streamer_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/access/natskv"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/contracts/openapi/openapitest"
	"github.com/rdev-dev/rdev/pkg/topology"
	"github.com/rdev-dev/rdev/pkg/topology/natsserver"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
	"github.com/rdev-dev/rdev/services/streamer"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitFor bounds every wait on a signal.
const waitFor = 15 * time.Second

// fixture is a streamer served over HTTP on a real embedded NATS.
type fixture struct {
	svc  *streamer.Service
	js   jetstream.JetStream
	kv   jetstream.KeyValue
	srv  *httptest.Server
	base string
	// signer signs the stream tokens get sends; access is the store of
	// projects and keys the gate reads.
	signer *access.Signer
	access *natskv.Store
	// stopNATS and startNATS stop NATS and start it again on the same
	// address and store (options.restartable).
	stopNATS, startNATS func()
}

type options struct {
	cfg streamer.Config
	// serverTimeout is the HTTP server's own read and write timeout.
	serverTimeout time.Duration
	// smallSendBuffer shrinks the server's socket send buffers, so a client
	// that stops reading blocks the server's writes soon.
	smallSendBuffer bool
	// restartable runs NATS on a fixed address and store, so that
	// fixture.restartNATS can stop it and start it again there.
	restartable bool
	// unstarted leaves Start to the test (the lifecycle suite).
	unstarted bool
	// log, when set, receives the service's logs instead of t.Log.
	log *slog.Logger
	// gate, when set, wraps the real gate (a fault injector).
	gate func(streamer.Gate) streamer.Gate
}

func setup(t *testing.T, opts options) *fixture {
	t.Helper()
	var (
		js                  jetstream.JetStream
		stopNATS, startNATS func()
	)
	if opts.restartable {
		js, stopNATS, startNATS = restartableNATS(t)
	} else {
		_, _, js = natstest.Provisioned(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	kv, err := js.KeyValue(ctx, contracts.BucketState)
	if err != nil {
		t.Fatal(err)
	}
	if opts.cfg.Heartbeat == 0 {
		opts.cfg.Heartbeat = 100 * time.Millisecond
	}
	akv, err := js.KeyValue(ctx, contracts.BucketAccess)
	if err != nil {
		t.Fatal(err)
	}
	store, err := natskv.Open(ctx, akv)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := store.TokenSecret(ctx)
	if err != nil {
		t.Fatal(err)
	}
	signer := access.NewSigner(secret)
	var gate streamer.Gate = &access.StreamGate{Signer: signer, Keys: store, Projects: store}
	if opts.gate != nil {
		gate = opts.gate(gate)
	}
	log := opts.log
	if log == nil {
		log = testLogger(t)
	}
	svc, err := streamer.New(opts.cfg, streamer.Deps{JS: js, State: kv, Gate: gate, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if !opts.unstarted {
		if err := svc.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	e := echo.New()
	e.HideBanner = true
	svc.Register(e)
	srv := httptest.NewUnstartedServer(e)
	srv.Config.ReadTimeout = opts.serverTimeout
	srv.Config.WriteTimeout = opts.serverTimeout
	if opts.smallSendBuffer {
		srv.Listener = smallBufferListener{srv.Listener}
	}
	srv.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if err := svc.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	t.Cleanup(srv.Close)
	return &fixture{svc: svc, js: js, kv: kv, srv: srv, base: srv.URL, signer: signer, access: store,
		stopNATS: stopNATS, startNATS: startNATS}
}

// restartableNATS starts NATS on a fixed address and store directory,
// provisions the rdev topology on it and returns a JetStream context on a
// connection that reconnects, and functions that stop the server and start
// it again on the same address and store.
func restartableNATS(t *testing.T) (js jetstream.JetStream, stop, start func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := natsserver.Config{Addr: ln.Addr().String(), StoreDir: t.TempDir()}
	ln.Close()
	var (
		mu  sync.Mutex
		srv *server.Server
	)
	start = func() {
		mu.Lock()
		defer mu.Unlock()
		if srv, err = natsserver.Start(cfg); err != nil {
			t.Fatal(err)
		}
	}
	stop = func() {
		mu.Lock()
		defer mu.Unlock()
		if srv != nil {
			srv.Shutdown()
			srv.WaitForShutdown()
			srv = nil
		}
	}
	start()
	t.Cleanup(stop)
	nc, err := nats.Connect("nats://"+cfg.Addr, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := topology.Ensure(ctx, js, topology.Config{}); err != nil {
		t.Fatal(err)
	}
	return js, stop, start
}

type smallBufferListener struct{ net.Listener }

func (l smallBufferListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(32 << 10)
	}
	return c, err
}

// testLogger sends the service's logs to t.Log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

var idCounter atomic.Uint64

// uniqueID returns an id no other test uses.
func uniqueID(t *testing.T, prefix string) string {
	h := fnv.New32a()
	h.Write([]byte(t.Name()))
	return fmt.Sprintf("%s-%08x-%d", prefix, h.Sum32(), idCounter.Add(1))
}

// job publishes a job's output the way a worker does.
type job struct {
	f                        *fixture
	streamID, jobID, project string
	// pad lengthens every line's text by this many bytes.
	pad int
}

func (f *fixture) newJob(t *testing.T) *job {
	t.Helper()
	return f.newJobIn(t, "demo")
}

func (f *fixture) newJobIn(t *testing.T, project string) *job {
	t.Helper()
	j := &job{f: f, streamID: uniqueID(t, "s"), jobID: uniqueID(t, "j"), project: project}
	ref, _ := json.Marshal(contracts.StreamRef{V: contracts.Version, StreamID: j.streamID, JobID: j.jobID, Project: j.project})
	if _, err := f.kv.Put(context.Background(), contracts.StreamKey(j.streamID), ref); err != nil {
		t.Fatal(err)
	}
	return j
}

func (j *job) lineData(seq uint64) []byte {
	b, _ := json.Marshal(contracts.OutputLine{
		V: contracts.OutputLineVersion, StreamID: j.streamID, JobID: j.jobID, Attempt: 1, Seq: seq,
		FD: contracts.Stdout, Text: fmt.Sprintf("line %d%s", seq, strings.Repeat("x", j.pad)), Time: time.Now().UTC(),
	})
	return b
}

// line publishes output line seq and returns its stream sequence.
func (j *job) line(t *testing.T, seq uint64) uint64 {
	t.Helper()
	ack, err := j.f.js.Publish(context.Background(), contracts.SubjectOutput(j.project, j.streamID), j.lineData(seq))
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// legacyLine stores line seq as a worker before OutputLineVersion 2 did:
// version 1, on the subject without the project.
func (j *job) legacyLine(t *testing.T, seq uint64) {
	t.Helper()
	var l contracts.OutputLine
	if err := json.Unmarshal(j.lineData(seq), &l); err != nil {
		t.Fatal(err)
	}
	l.V = 1
	b, _ := json.Marshal(l)
	if _, err := j.f.js.Publish(context.Background(), contracts.SubjectOutputLegacy(j.streamID), b); err != nil {
		t.Fatal(err)
	}
}

func (j *job) lines(t *testing.T, from, to uint64) {
	t.Helper()
	for s := from; s <= to; s++ {
		j.line(t, s)
	}
}

// manyLines publishes lines from..to without waiting for each ack.
func (j *job) manyLines(t *testing.T, from, to uint64) {
	t.Helper()
	for s := from; s <= to; s++ {
		if _, err := j.f.js.PublishAsync(contracts.SubjectOutput(j.project, j.streamID), j.lineData(s)); err != nil {
			t.Fatal(err)
		}
		if s%1000 == 0 || s == to { // stay below the client's limit of outstanding publishes
			select {
			case <-j.f.js.PublishAsyncComplete():
			case <-time.After(waitFor):
				t.Fatal("async publishes not acknowledged")
			}
		}
	}
}

// event publishes a lifecycle event and returns its stream sequence.
func (j *job) event(t *testing.T, typ contracts.EventType, lines uint64) uint64 {
	t.Helper()
	b, _ := json.Marshal(contracts.Event{
		V: contracts.Version, Type: typ, Status: contracts.StatusOf(typ), JobID: j.jobID, StreamID: j.streamID,
		Project: j.project, Attempt: 1, Lines: lines, Time: time.Now().UTC(),
	})
	ack, err := j.f.js.Publish(context.Background(), contracts.SubjectEvent(j.project, j.streamID, typ), b)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

func (f *fixture) eventsURL(streamID string) string {
	return f.base + "/v1/streams/" + streamID + "/events"
}

// sseEvent is one block of an event stream.
type sseEvent struct {
	ID, Name, Data, Retry string
	Comment               string
}

// sseClient reads one event stream. Its reader hands over one block at a
// time, so a test that stops calling next stops reading the socket.
type sseClient struct {
	resp   *http.Response
	events chan sseEvent
	stop   chan struct{}
	done   chan struct{}
}

type dialOpts struct {
	lastEventID string
	query       string
	// apiKey, when set, is sent instead of a stream token.
	apiKey string
	// token, when set, replaces the valid token get would send.
	token string
	// anonymous sends no credentials at all.
	anonymous bool
	// batchID, when set, opens the batch's event stream instead.
	batchID string
	// project, when set, opens the project's event stream instead.
	project string
	// smallReceiveBuffer shrinks the client's socket receive buffer.
	smallReceiveBuffer bool
}

// get sends the events request and returns the response, closed by
// t.Cleanup.
func (f *fixture) get(t *testing.T, streamID string, o dialOpts) *http.Response {
	t.Helper()
	q := ""
	resource, base := access.StreamResource(streamID), f.eventsURL(streamID)
	if o.batchID != "" {
		resource, base = access.BatchResource(o.batchID), f.base+"/v1/batches/"+o.batchID+"/events"
	}
	if o.project != "" {
		resource, base = access.ProjectResource(o.project), f.base+"/v1/projects/"+o.project+"/events"
	}
	switch {
	case o.apiKey != "", o.anonymous:
	case o.token != "":
		q = "token=" + url.QueryEscape(o.token)
	default:
		q = "token=" + url.QueryEscape(f.signer.Sign(resource, time.Now().Add(time.Hour)))
	}
	if o.query != "" {
		q += "&" + o.query
	}
	req, err := http.NewRequest(http.MethodGet, base+"?"+q, nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+o.apiKey)
	}
	if o.lastEventID != "" {
		req.Header.Set("Last-Event-ID", o.lastEventID)
	}
	req.Header.Set("Accept", "text/event-stream")
	dialer := &net.Dialer{}
	tr := &http.Transport{ // one per client, so each has its own connection
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if tc, ok := c.(*net.TCPConn); ok && o.smallReceiveBuffer {
				_ = tc.SetReadBuffer(64 << 10)
			}
			return c, err
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	resp, err := (&http.Client{Transport: openapitest.Transport(t, tr)}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// connect opens an event stream and checks its headers.
func (f *fixture) connect(t *testing.T, streamID string, o dialOpts) *sseClient {
	t.Helper()
	resp := f.get(t, streamID, o)
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	for k, want := range map[string]string{
		"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no",
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	// A stream on a connection taken over from net/http is closed at its
	// end and says so (Connection: close, so the client does not pool
	// it); one net/http still serves (batch and project events) is kept
	// alive.
	if !resp.Close && resp.Header.Get("Connection") != "keep-alive" {
		t.Errorf("header Connection = %q, want close or keep-alive", resp.Header.Get("Connection"))
	}
	c := &sseClient{resp: resp, events: make(chan sseEvent), stop: make(chan struct{}), done: make(chan struct{})}
	bufSize := 64 << 10
	if o.smallReceiveBuffer {
		bufSize = 4 << 10
	}
	go c.read(bufio.NewReaderSize(resp.Body, bufSize))
	t.Cleanup(func() {
		close(c.stop)
		resp.Body.Close()
		<-c.done
	})
	return c
}

func (c *sseClient) read(br *bufio.Reader) {
	defer close(c.done)
	defer close(c.events)
	var ev sseEvent
	var data []string
	started := false
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return // a block cut short is not an event
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			if started {
				ev.Data = strings.Join(data, "\n")
				select {
				case c.events <- ev:
				case <-c.stop:
					return
				}
			}
			ev, data, started = sseEvent{}, nil, false
			continue
		}
		started = true
		if rest, ok := strings.CutPrefix(line, ":"); ok {
			ev.Comment = strings.TrimSpace(rest)
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			ev.ID = value
		case "event":
			ev.Name = value
		case "data":
			data = append(data, value)
		case "retry":
			ev.Retry = value
		}
	}
}

// next returns the next event that is not a comment; ok is false when the
// stream ended.
func (c *sseClient) next(t *testing.T) (sseEvent, bool) {
	t.Helper()
	timeout := time.After(waitFor)
	for {
		select {
		case ev, ok := <-c.events:
			if ok && ev.Comment != "" {
				continue
			}
			return ev, ok
		case <-timeout:
			t.Fatal("no event in time")
			return sseEvent{}, false
		}
	}
}

// handshake reads the retry block and the connected event.
func (c *sseClient) handshake(t *testing.T) sseEvent {
	t.Helper()
	ev, ok := c.next(t)
	if !ok || ev.Retry == "" {
		t.Fatalf("want a retry block first, got %+v (open %v)", ev, ok)
	}
	ev, ok = c.next(t)
	if !ok || ev.Name != contracts.SSEConnected {
		t.Fatalf("want connected, got %+v (open %v)", ev, ok)
	}
	return ev
}

// rest reads every event until the stream ends.
func (c *sseClient) rest(t *testing.T) []sseEvent {
	t.Helper()
	var evs []sseEvent
	for {
		ev, ok := c.next(t)
		if !ok {
			return evs
		}
		evs = append(evs, ev)
	}
}

// until reads events up to and including the first for which stop is true.
func (c *sseClient) until(t *testing.T, stop func(sseEvent) bool) []sseEvent {
	t.Helper()
	var evs []sseEvent
	for {
		ev, ok := c.next(t)
		if !ok {
			t.Fatalf("stream ended after %d events", len(evs))
		}
		evs = append(evs, ev)
		if stop(ev) {
			return evs
		}
	}
}

// lineSeq returns the OutputLine.Seq of an output event.
func lineSeq(t *testing.T, ev sseEvent) uint64 {
	t.Helper()
	var l contracts.OutputLine
	if err := json.Unmarshal([]byte(ev.Data), &l); err != nil {
		t.Fatalf("output data %q: %v", ev.Data, err)
	}
	return l.Seq
}

// describe turns events into "output:N", "status:started", "complete:succeeded".
func describe(t *testing.T, evs []sseEvent) []string {
	t.Helper()
	out := make([]string, 0, len(evs))
	for _, ev := range evs {
		switch ev.Name {
		case contracts.SSEOutput:
			out = append(out, "output:"+strconv.FormatUint(lineSeq(t, ev), 10))
		case contracts.SSEStatus, contracts.SSEComplete:
			var e contracts.Event
			if err := json.Unmarshal([]byte(ev.Data), &e); err != nil {
				t.Fatalf("event data %q: %v", ev.Data, err)
			}
			out = append(out, ev.Name+":"+string(e.Type))
		default:
			out = append(out, ev.Name)
		}
	}
	return out
}

// want builds the description of a status event, lines from..to and
// optionally more.
func want(head []string, from, to uint64, tail ...string) []string {
	out := append([]string(nil), head...)
	for s := from; s <= to; s++ {
		out = append(out, "output:"+strconv.FormatUint(s, 10))
	}
	return append(out, tail...)
}

// checkIDs fails unless the events' ids strictly increase from after.
func checkIDs(t *testing.T, after uint64, evs []sseEvent) {
	t.Helper()
	prev := after
	for i, ev := range evs {
		id, err := strconv.ParseUint(ev.ID, 10, 64)
		if err != nil {
			t.Fatalf("event %d (%s): id %q: %v", i, ev.Name, ev.ID, err)
		}
		if id <= prev {
			t.Fatalf("event %d (%s): id %d after %d", i, ev.Name, id, prev)
		}
		prev = id
	}
}

func equal(t *testing.T, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d events, want %d\ngot:  %s\nwant: %s", len(got), len(want), clip(got), clip(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("event %d: got %s, want %s\ngot:  %s\nwant: %s", i, got[i], want[i], clip(got), clip(want))
		}
	}
}

func clip(s []string) string {
	if len(s) > 40 {
		return strings.Join(s[:20], " ") + " ... " + strings.Join(s[len(s)-20:], " ")
	}
	return strings.Join(s, " ")
}

// consumers counts the consumers of the output stream.
func (f *fixture) consumers(t *testing.T) int {
	t.Helper()
	st, err := f.js.Stream(context.Background(), contracts.StreamOutput)
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().State.Consumers
}
