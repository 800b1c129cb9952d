package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology"
)

// natsServerProcess is a real nats-server process (built from the
// nats-server/v2 module this repository embeds), so that it can be killed
// with SIGKILL like a crashed node.
type natsServerProcess struct {
	t     *testing.T
	bin   string
	port  int
	store string
	extra []string // cluster flags
	cmd   *exec.Cmd
}

// buildNATSServer builds the nats-server binary once per test.
func buildNATSServer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "nats-server")
	build := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build nats-server: %v\n%s", err, out)
	}
	return bin
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err, "free port")
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func startNATSServerProcess(t *testing.T) *natsServerProcess {
	t.Helper()
	p := &natsServerProcess{t: t, bin: buildNATSServer(t), port: freePort(t), store: t.TempDir()}
	p.start()
	t.Cleanup(func() { p.kill() })
	return p
}

// startNATSClusterProcesses starts three nats-server processes forming one
// JetStream cluster, named n0, n1, n2.
func startNATSClusterProcesses(t *testing.T) []*natsServerProcess {
	t.Helper()
	bin := buildNATSServer(t)
	routes := []int{freePort(t), freePort(t), freePort(t)}
	var urls []string
	for _, r := range routes {
		urls = append(urls, "nats://127.0.0.1:"+strconv.Itoa(r))
	}
	nodes := make([]*natsServerProcess, 3)
	for i := range nodes {
		nodes[i] = &natsServerProcess{t: t, bin: bin, port: freePort(t), store: t.TempDir(), extra: []string{
			"--server_name", fmt.Sprintf("n%d", i), "--cluster_name", "rdev-test",
			"--cluster", urls[i], "--routes", strings.Join(urls, ","),
		}}
	}
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(n.start)
	}
	wg.Wait()
	for _, n := range nodes {
		t.Cleanup(n.kill)
	}
	return nodes
}

func (p *natsServerProcess) url() string { return "nats://127.0.0.1:" + strconv.Itoa(p.port) }

func (p *natsServerProcess) start() {
	p.t.Helper()
	p.cmd = exec.Command(p.bin, append([]string{"-a", "127.0.0.1", "-p", strconv.Itoa(p.port), "-js", "-sd", p.store}, p.extra...)...)
	logs := &logWriter{t: p.t}
	p.cmd.Stdout, p.cmd.Stderr = logs, logs
	must(p.t, p.cmd.Start(), "start nats-server")
	await.Within(p.t, 20*time.Second, "nats-server accepting connections", func() bool {
		nc, err := nats.Connect(p.url())
		if err == nil {
			nc.Close()
		}
		return err == nil
	})
}

// kill sends SIGKILL and reaps the process.
func (p *natsServerProcess) kill() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Wait()
	p.cmd = nil
}

// The only NATS server, a separate process, is killed with SIGKILL while
// jobs print to watchers, and started again on its storage 3 s later:
// every watcher ends with every line of its job exactly once, in order,
// and a batch submitted with idempotency keys while NATS was down is
// accepted once it is back, each job queued once.
func TestNATSServerKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	srv := startNATSServerProcess(t)
	api := startProcess(t, "api", "--nats-url", srv.url(), "--http-addr", "127.0.0.1:0")
	startProcess(t, "worker", "--nats-url", srv.url(), "--data-dir", t.TempDir(), "--concurrency", "8")
	streamer := startProcess(t, "streamer", "--nats-url", srv.url(), "--http-addr", "127.0.0.1:0")

	const lines = 200
	cmd := fmt.Sprintf("for i in $(seq 1 %d); do echo L$i; sleep 0.02; done", lines)
	var jobs []contracts.SubmitResponse
	for range 4 {
		jobs = append(jobs, submit(t, api.http, "killed", map[string]any{"command": []string{"sh", "-c", cmd}}))
	}
	wait := watchMany(t, func() string { return streamer.http }, jobs, 5)
	waitForLines(t, streamer.http, jobs, 5)

	srv.kill()
	killedAt := time.Now()
	items := make([]map[string]any, 20)
	for i := range items {
		items[i] = map[string]any{"command": []string{"true"}, "idempotency_key": fmt.Sprintf("outage-%d", i)}
	}
	status, rb := call(t, http.MethodPost, api.http+"/v1/projects/killed/batches", items)
	if status == http.StatusAccepted && mustJSON[contracts.BatchResponse](t, rb).Accepted == len(items) {
		t.Fatalf("a batch was accepted whole while NATS was down: %.300s", rb)
	}
	time.Sleep(time.Until(killedAt.Add(3 * time.Second)))
	srv.start()
	t.Logf("nats-server restarted %s after SIGKILL", time.Since(killedAt).Round(time.Millisecond))

	var accepted contracts.BatchResponse
	retry, cancelRetry := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancelRetry()
	if await.Poll(retry, func() bool {
		status, rb = call(t, http.MethodPost, api.http+"/v1/projects/killed/batches", items)
		if status == http.StatusAccepted {
			accepted = mustJSON[contracts.BatchResponse](t, rb)
		}
		return status == http.StatusAccepted && accepted.Accepted == len(items)
	}) != nil {
		t.Fatalf("the batch retried with the same keys is still refused after NATS came back: %d %.300s", status, rb)
	}
	recovered := time.Since(killedAt)

	ws := wait()
	for i, w := range ws {
		if err := w.check(); err != nil {
			t.Errorf("watcher %d: %v", i, err)
		} else if w.complete.Status != contracts.StatusSucceeded || w.complete.Lines != lines {
			t.Errorf("watcher %d: complete %+v", i, w.complete)
		}
	}
	for _, it := range accepted.Items {
		if st := waitFinal(t, api.http, it.JobID, 30*time.Second); st.Status != contracts.StatusSucceeded {
			t.Errorf("batch job %+v", st)
		}
	}
	t.Logf("batch with the same idempotency keys accepted %s after SIGKILL", recovered.Round(time.Millisecond))
}

// `rdev up` itself — embedded NATS, API, worker and streamer in one
// process — is killed with SIGKILL while jobs print, and started again on
// its data: the jobs' messages are delivered again, nobody holds them, so
// each attempt ends worker_lost and is retried (max_attempts 2) on the same
// stream. Every watcher sees every stored line once, in order, and a
// complete event whose lines is the last stored line.
func TestUpKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	dataDir := t.TempDir()
	args := upArgs(dataDir, "--concurrency", "8")
	first := startProcess(t, args...)
	var current atomic.Value
	current.Store(first.http)
	const lines = 150
	cmd := fmt.Sprintf("for i in $(seq 1 %d); do echo L$i; sleep 0.02; done", lines)
	var jobs []contracts.SubmitResponse
	for range 4 {
		jobs = append(jobs, submit(t, first.http, "upkill", map[string]any{"command": []string{"sh", "-c", cmd}, "max_attempts": 2}))
	}
	wait := watchMany(t, func() string { return current.Load().(string) }, jobs, 5)
	waitForLines(t, first.http, jobs, 5)
	first.kill()
	second := startProcess(t, args...)
	current.Store(second.http)
	for i, w := range wait() {
		if err := w.check(); err != nil {
			t.Errorf("watcher %d: %v", i, err)
			continue
		}
		if w.complete.Status != contracts.StatusSucceeded || w.complete.Attempt != 2 || w.complete.Lines <= lines {
			t.Errorf("watcher %d: complete %+v, want succeeded on attempt 2 after more than %d lines", i, w.complete, lines)
		}
	}
	for _, j := range jobs {
		st := getJob(t, second.http, j.JobID)
		t.Logf("job %s: %s after %d attempts, %d lines stored", j.JobID, st.Status, st.Attempt, st.Lines)
	}
}

// The reproduction of the durability issue, run the same way: three
// standalone nats-server processes, rdev api, streamer and two workers
// given all three URLs, 10 jobs each printing 300 lines 50 ms apart,
// watched by 20 SSE clients that reconnect with Last-Event-ID; the node
// leading the output stream is killed with SIGKILL and started again 10 s
// later. With one replica (the stream's only node dies) and with three
// (its leader dies), every watcher has L1..L300 once, in order, for every
// job, and every job succeeded with 300 lines.
func TestNATSClusterNodeKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level cluster test")
	}
	for _, replicas := range []int{1, 3} {
		t.Run(fmt.Sprintf("R%d", replicas), func(t *testing.T) { natsNodeKilled(t, replicas) })
	}
}

func natsNodeKilled(t *testing.T, replicas int) {
	nodes := startNATSClusterProcesses(t)
	var urls []string
	for _, n := range nodes {
		urls = append(urls, n.url())
	}
	url := strings.Join(urls, ",")
	js := provisionCluster(t, url, replicas)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	flags := func(cmd string, extra ...string) []string {
		return append([]string{cmd, "--nats-url", url, "--replicas", strconv.Itoa(replicas)}, extra...)
	}
	api := startProcess(t, flags("api", "--http-addr", "127.0.0.1:0")...)
	streamer := startProcess(t, flags("streamer", "--http-addr", "127.0.0.1:0")...)
	for range 2 {
		startProcess(t, flags("worker", "--data-dir", t.TempDir(), "--concurrency", "8")...)
	}
	const lines = 300
	cmd := fmt.Sprintf("for i in $(seq 1 %d); do echo L$i; sleep 0.05; done", lines)
	var jobs []contracts.SubmitResponse
	for range 10 {
		jobs = append(jobs, submit(t, api.http, "repro", map[string]any{"command": []string{"sh", "-c", cmd}}))
	}
	wait := watchMany(t, func() string { return streamer.http }, jobs, 2)
	waitForLines(t, streamer.http, jobs, 5)

	s, err := js.Stream(ctx, contracts.StreamOutput)
	must(t, err, "output stream")
	info, err := s.Info(ctx)
	must(t, err, "output stream info")
	victim := -1
	for i := range nodes {
		if info.Cluster != nil && info.Cluster.Leader == fmt.Sprintf("n%d", i) {
			victim = i
		}
	}
	if victim < 0 {
		t.Fatalf("no leader for %s: %+v", contracts.StreamOutput, info.Cluster)
	}
	nodes[victim].kill()
	killedAt := time.Now()
	time.Sleep(10 * time.Second)
	nodes[victim].start()
	t.Logf("R%d: n%d (output stream leader) killed with SIGKILL, restarted %s later", replicas, victim, time.Since(killedAt).Round(time.Millisecond))

	ws := wait()
	if len(ws) != 20 {
		t.Fatalf("%d watchers finished, want 20", len(ws))
	}
	for i, w := range ws {
		if err := w.check(); err != nil {
			t.Errorf("watcher %d: %v", i, err)
		} else if w.complete.Status != contracts.StatusSucceeded || w.complete.Lines != lines {
			t.Errorf("watcher %d: complete %+v", i, w.complete)
		}
	}
	t.Logf("R%d: every job ended %s after the kill", replicas, time.Since(killedAt).Round(time.Millisecond))
}

// provisionCluster connects to the cluster at url (closed at cleanup) and
// provisions the topology with replicas replicas, retrying while the
// cluster elects its meta leader.
func provisionCluster(t *testing.T, url string, replicas int) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	must(t, err, "connect")
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	must(t, err, "jetstream")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if await.Poll(ctx, func() bool {
		actx, acancel := context.WithTimeout(ctx, 5*time.Second) // a request sent before the meta leader is elected is never answered
		defer acancel()
		_, err = topology.Ensure(actx, js, topology.Config{Replicas: replicas})
		return err == nil
	}) != nil {
		t.Fatalf("provision: %v", err)
	}
	return js
}
