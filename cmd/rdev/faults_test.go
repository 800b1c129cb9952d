package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/client"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology/natsserver"
)

// watcher follows one job's stream to its complete event, reconnecting
// with Last-Event-ID to whatever base URL is current whenever the stream
// breaks (a restarted streamer or node), and records every line.
type watcher struct {
	seqs       []uint64
	complete   contracts.Event
	reconnects int
	err        error
	// bases are the base URLs of the connections opened, in order.
	bases []string
	// perAttempt counts the lines of each attempt.
	perAttempt map[int]int
}

func follow(base func() string, eventsURL string, deadline time.Time) *watcher {
	w := &watcher{perAttempt: map[int]int{}}
	lastID := ""
	for time.Now().Before(deadline) {
		// A connection silent for 30 s is dropped and resumed.
		ctx, cancel := context.WithCancel(context.Background())
		stall := time.AfterFunc(30*time.Second, cancel)
		b := base()
		s, err := client.New(b).Follow(ctx, eventsURL, client.FollowOptions{LastEventID: lastID, MaxReconnects: -1})
		if err != nil {
			stall.Stop()
			cancel()
			time.Sleep(50 * time.Millisecond) // the server is restarting
			continue
		}
		w.bases = append(w.bases, b)
		for {
			ev, err := s.Next()
			if err != nil {
				break
			}
			stall.Reset(30 * time.Second)
			lastID = s.LastEventID()
			switch ev.Name {
			case contracts.SSEOutput:
				l, err := ev.Line()
				if err != nil {
					w.err = err
					stall.Stop()
					cancel()
					return w
				}
				w.seqs = append(w.seqs, l.Seq)
				w.perAttempt[l.Attempt]++
			case contracts.SSEComplete:
				w.complete, _ = ev.Status()
				stall.Stop()
				cancel()
				return w
			}
		}
		stall.Stop()
		cancel()
		w.reconnects++
	}
	w.err = fmt.Errorf("no complete event by the deadline (%d lines, %d reconnects)", len(w.seqs), w.reconnects)
	return w
}

// check says whether the watcher saw lines 1..complete.Lines exactly once,
// in order.
func (w *watcher) check() error {
	if w.err != nil {
		return w.err
	}
	if w.complete.Lines == 0 || uint64(len(w.seqs)) != w.complete.Lines {
		return fmt.Errorf("%d lines for a stream of %d: %v (reconnects %d)", len(w.seqs), w.complete.Lines, w.seqs, w.reconnects)
	}
	for i, s := range w.seqs {
		if s != uint64(i+1) {
			return fmt.Errorf("line %d has seq %d: gap, duplicate or reorder", i+1, s)
		}
	}
	return nil
}

// watchMany starts clients watchers per job and returns a function that
// waits for them all.
func watchMany(t *testing.T, base func() string, jobs []contracts.SubmitResponse, clients int) (wait func() []*watcher) {
	t.Helper()
	return watchManyUntil(t, base, jobs, clients, time.Now().Add(90*time.Second))
}

// watchManyUntil is watchMany with the watchers' deadline given.
func watchManyUntil(t *testing.T, base func() string, jobs []contracts.SubmitResponse, clients int, deadline time.Time) (wait func() []*watcher) {
	t.Helper()
	var mu sync.Mutex
	var ws []*watcher
	var wg sync.WaitGroup
	for _, j := range jobs {
		for range clients {
			wg.Go(func() {
				w := follow(base, j.EventsURL, deadline)
				mu.Lock()
				ws = append(ws, w)
				mu.Unlock()
			})
		}
	}
	return func() []*watcher {
		wg.Wait()
		return ws
	}
}

// Restart the streamer process while 100 clients watch 20 running jobs:
// every client, reconnecting with Last-Event-ID to the new streamer, ends
// with every line exactly once, in order.
func TestStreamerRestartWith100Watchers(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	// Not parallel: it loads the machine (or measures bounds) and must
	// not share it with the other heavy process-level tests.
	dataDir := t.TempDir()
	up := startProcess(t, upArgs(dataDir, "--without", "streamer", "--concurrency", "20")...)
	var current atomic.Value
	first := startProcess(t, "streamer", "--nats-url", up.nats, "--nats-nkey", up.seed("streamer"), "--http-addr", "127.0.0.1:0")
	current.Store(first.http)
	var jobs []contracts.SubmitResponse
	for range 20 {
		jobs = append(jobs, submit(t, up.http, "watched", map[string]any{"command": watchedCommand}))
	}
	wait := watchMany(t, func() string { return current.Load().(string) }, jobs, 5)
	waitForLines(t, first.http, jobs, 5)
	first.stop() // clients get shutting_down and reconnect
	second := startProcess(t, "streamer", "--nats-url", up.nats, "--nats-nkey", up.seed("streamer"), "--http-addr", "127.0.0.1:0")
	current.Store(second.http)
	touch(t, dataDir, "watched", "gate")
	assertWatchers(t, wait(), 100)
}

// The same with the whole `rdev up` (embedded NATS, API, worker,
// streamer) stopped and started again on its data: running jobs are handed
// back and run again as their next attempt on the same streams, and every
// client still sees every line of its stream exactly once.
func TestNodeRestartWith100Watchers(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	// Not parallel: it loads the machine (or measures bounds) and must
	// not share it with the other heavy process-level tests.
	dataDir := t.TempDir()
	// A fixed NATS port would do too; the HTTP address changes and
	// clients follow it.
	args := upArgs(dataDir, "--concurrency", "20", "--drain-timeout", "200ms")
	first := startProcess(t, args...)
	var current atomic.Value
	current.Store(first.http)
	var jobs []contracts.SubmitResponse
	for range 20 {
		jobs = append(jobs, submit(t, first.http, "watched", map[string]any{"command": watchedCommand}))
	}
	wait := watchMany(t, func() string { return current.Load().(string) }, jobs, 5)
	waitForLines(t, first.http, jobs, 5)
	first.stop()
	second := startProcess(t, args...)
	current.Store(second.http)
	touch(t, dataDir, "watched", "gate")
	ws := assertWatchers(t, wait(), 100)
	handedBack := 0
	for _, w := range ws {
		if w.complete.Attempt > 1 {
			handedBack++
		}
	}
	t.Logf("%d of %d clients watched a job that ran again after the restart", handedBack, len(ws))
}

// gatedCommand prints a line every 20 ms until the gate file appears in
// its workspace, then five more: a restart before the gate opens always
// happens while it runs and prints.
var gatedCommand = []string{"sh", "-c", "i=0; while [ ! -e gate ]; do i=$((i+1)); echo line$i; sleep 0.02; done; " +
	"for j in 1 2 3 4 5; do echo tail$j; done"}

// watchedCommand is gatedCommand at a line every 100 ms, for the tests
// that run 20 of them under 100 watchers: at every 20 ms those 20 shells
// alone started 1,000 sleep processes a second, which on a 2-core CI
// machine starved NATS and the streamer until the watchers' deadline
// passed (the restart is what those tests are about, not the line rate).
var watchedCommand = []string{"sh", "-c", "i=0; while [ ! -e gate ]; do i=$((i+1)); echo line$i; sleep 0.1; done; " +
	"for j in 1 2 3 4 5; do echo tail$j; done"}

// waitForLines waits until every job has printed at least n lines, so
// the restart that follows happens while they run.
func waitForLines(t *testing.T, base string, jobs []contracts.SubmitResponse, n int) {
	t.Helper()
	for _, j := range jobs {
		s := openStream(t, base, j.EventsURL, "")
		for lines := 0; lines < n; {
			ev, err := s.Next()
			must(t, err, "read stream")
			if ev.Name == contracts.SSEOutput {
				lines++
			}
		}
		s.Close()
	}
}

func assertWatchers(t *testing.T, ws []*watcher, want int) []*watcher {
	t.Helper()
	if len(ws) != want {
		t.Fatalf("%d watchers finished, want %d", len(ws), want)
	}
	reconnected := 0
	for i, w := range ws {
		if err := w.check(); err != nil {
			t.Errorf("watcher %d: %v", i, err)
		}
		if w.complete.Status != contracts.StatusSucceeded {
			t.Errorf("watcher %d: complete %+v", i, w.complete)
		}
		if w.reconnects > 0 {
			reconnected++
		}
	}
	if reconnected == 0 {
		t.Fatal("no client had to reconnect: the restart did not happen while they watched")
	}
	return ws
}

// Kill the API between accepting a request and answering it: the client
// gets no reply, retries with the same idempotency key on another API
// process, and there is one job, not two. The API is frozen (SIGSTOP) the
// moment its job message reaches NATS, then killed; if the reply was
// already on its way the test says so, and the retry must still return
// the same job.
func TestAPIKilledBeforeReplyYieldsOneJob(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	t.Parallel()
	up := startProcess(t, upArgs(t.TempDir())...)
	victim := startProcess(t, "api", "--nats-url", up.nats, "--nats-nkey", up.seed("api"), "--http-addr", "127.0.0.1:0")
	submit(t, up.http, "idem", map[string]any{"command": []string{"true"}}) // creates the project

	nc, err := up.connectNATS()
	must(t, err, "connect")
	defer nc.Close()
	seen := make(chan string, 4)
	var froze sync.Once
	_, err = nc.Subscribe(contracts.SubjectJobsPrefix+".*.idem", func(m *nats.Msg) {
		froze.Do(func() { _ = syscall.Kill(victim.pid, syscall.SIGSTOP) })
		seen <- m.Header.Get(contracts.HeaderJobID)
	})
	must(t, err, "subscribe")
	must(t, nc.Flush(), "flush")

	body := map[string]any{"command": []string{"echo", "once"}, "idempotency_key": "deploy-42"}
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, victim.http+"/v1/projects/idem/commands", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+adminKey)
	req.Header.Set("Content-Type", "application/json")
	cl := &http.Client{Timeout: 3 * time.Second}
	resp, err := cl.Do(req)
	var first string
	if err == nil {
		rb, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		first = mustJSON[contracts.SubmitResponse](t, string(rb)).JobID
		t.Log("the reply left before the API froze; the retry must still return the same job")
	} else {
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("client error %v, want a timeout", err)
		}
	}
	victim.kill()
	var published string
	select {
	case published = <-seen:
	case <-time.After(10 * time.Second):
		t.Fatal("the job never reached NATS")
	}

	status, rb := call(t, http.MethodPost, up.http+"/v1/projects/idem/commands", body)
	if status != http.StatusAccepted {
		t.Fatalf("retry: %d %s", status, rb)
	}
	retried := mustJSON[contracts.SubmitResponse](t, string(rb)).JobID
	if retried != published || (first != "" && first != retried) {
		t.Fatalf("retry returned job %s; the killed API queued %s (reply %q)", retried, published, first)
	}
	if st := waitFinal(t, up.http, retried, 20*time.Second); st.Status != contracts.StatusSucceeded {
		t.Fatalf("job %+v", st)
	}
	select {
	case other := <-seen:
		t.Fatalf("a second job %s was queued", other)
	case <-time.After(300 * time.Millisecond):
	}
}

// NATS goes away for 10 s under running api, worker and streamer
// processes: the API answers 503 at once (never a 202 without
// durability, never a hang), and all three reconnect by themselves; the
// job running through the outage completes with every line, and new jobs
// run.
func TestNATSOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	// Not parallel: it loads the machine (or measures bounds) and must
	// not share it with the other heavy process-level tests.
	store := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err, "free port")
	addr := ln.Addr().String()
	ln.Close()
	srv, err := natsserver.Start(natsserver.Config{Addr: addr, StoreDir: store})
	must(t, err, "start NATS")
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	url := srv.ClientURL()

	api := startProcess(t, "api", "--nats-url", url, "--http-addr", "127.0.0.1:0")
	startProcess(t, "worker", "--nats-url", url, "--data-dir", t.TempDir(), "--ack-wait", "30s")
	streamer := startProcess(t, "streamer", "--nats-url", url, "--http-addr", "127.0.0.1:0")

	long := submit(t, api.http, "outage", map[string]any{
		"command": []string{"sh", "-c", "for i in $(seq 1 150); do echo tick$i; sleep 0.1; done"},
	})
	var w *watcher
	done := make(chan struct{})
	go func() {
		w = follow(func() string { return streamer.http }, long.EventsURL, time.Now().Add(90*time.Second))
		close(done)
	}()
	// Some lines go through a healthy NATS first.
	waitForLines(t, streamer.http, []contracts.SubmitResponse{long}, 5)

	srv.Shutdown()
	srv.WaitForShutdown()
	downAt := time.Now()
	for range 3 {
		t0 := time.Now()
		status, rb := call(t, http.MethodPost, api.http+"/v1/projects/outage/commands", map[string]any{"command": []string{"true"}})
		if status != http.StatusServiceUnavailable {
			t.Fatalf("submit with NATS down: %d %s, want 503", status, rb)
		}
		if d := time.Since(t0); d > 3*time.Second {
			t.Fatalf("submit with NATS down took %s", d)
		}
	}
	time.Sleep(time.Until(downAt.Add(10 * time.Second)))
	srv, err = natsserver.Start(natsserver.Config{Addr: addr, StoreDir: store})
	must(t, err, "restart NATS")
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })

	var (
		status int
		rb     []byte
	)
	back, cancelBack := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancelBack()
	if await.Poll(back, func() bool {
		status, rb = call(t, http.MethodPost, api.http+"/v1/projects/outage/commands", map[string]any{"command": []string{"echo", "after"}})
		return status == http.StatusAccepted
	}) != nil {
		t.Fatalf("the API did not accept jobs again: %d %s", status, rb)
	}
	after := mustJSON[contracts.SubmitResponse](t, string(rb))
	<-done
	if err := w.check(); err != nil {
		t.Fatalf("job through the outage: %v", err)
	}
	if w.complete.Status != contracts.StatusSucceeded || w.complete.Lines != 150 {
		t.Fatalf("job through the outage ended %+v", w.complete)
	}
	if st := waitFinal(t, api.http, after.JobID, 30*time.Second); st.Status != contracts.StatusSucceeded {
		t.Fatalf("job after the outage: %+v", st)
	}
}
