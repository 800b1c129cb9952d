package deploy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/client"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
)

// The compose file's wiring, not only its syntax: each service of
// docker-compose.yml runs as a local process with its own command and
// environment — the three NATS nodes as in-process servers from
// deploy/compose/nats.conf (rdev's users and permissions included), Redis
// as a real redis-server, every rdev service as the binary the Dockerfile
// builds — with each service's host name and port mapped to a free
// loopback port. Provision runs first, every service must pass its own
// health check, then jobs are submitted through both apis and watched
// through both streamers while one api, one streamer and one worker are
// killed with SIGKILL: every job succeeds, and every watcher sees every
// line of its job once, in order.
func TestComposeEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	p := loadCompose(t)
	bin := rdevBinary(t)
	st := &stack{t: t, p: p, bin: bin, addr: map[string]string{}, procs: map[string]*process{}}
	st.mapAddresses()
	st.startNATS()
	st.startRedis()
	st.run("provision")
	services := []string{"api-1", "api-2", "streamer-1", "streamer-2", "worker-1", "worker-2", "notifier-1", "notifier-2"}
	for _, name := range services {
		st.start(name)
	}
	for _, name := range services {
		st.waitHealthy(name)
	}

	key := env(p.Services["api-1"])["RDEV_BOOTSTRAP_API_KEY"]
	apis := []*client.Client{client.New("http://"+st.addr["api-1:8080"], client.WithAPIKey(key)), client.New("http://"+st.addr["api-2:8080"], client.WithAPIKey(key))}
	streamers := []*client.Client{client.New("http://" + st.addr["streamer-1:8080"]), client.New("http://" + st.addr["streamer-2:8080"])}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := apis[0].CreateProject(ctx, contracts.ProjectRequest{ID: "compose"}); err != nil {
		t.Fatalf("create project: %v", err)
	}
	const lines = 80
	job := contracts.CommandRequest{
		Command:       []string{"sh", "-c", fmt.Sprintf("for i in $(seq 1 %d); do echo L$i; sleep 0.05; done", lines)},
		SubmitOptions: contracts.SubmitOptions{MaxAttempts: 3},
	}
	submit := func(api *client.Client) contracts.SubmitResponse {
		r, err := api.SubmitCommand(ctx, "compose", job)
		if err != nil {
			t.Fatalf("submit: %v", err)
		}
		return r
	}
	var watches []*watch
	var jobs []contracts.SubmitResponse
	for i := range 6 {
		j := submit(apis[i%2])
		jobs = append(jobs, j)
		for _, s := range streamers {
			watches = append(watches, startWatch(ctx, j, s, streamers[1]))
		}
	}
	// Kill one of each while every job is printing.
	for _, w := range watches {
		w.waitLines(t, 3, 30*time.Second)
	}
	running := 0 // jobs that had printed and not ended at the kill
	for i := 0; i < len(watches); i += 2 {
		if !watches[i].ended() && !watches[i+1].ended() {
			running++
		}
	}
	for _, name := range []string{"api-1", "streamer-1", "worker-1"} {
		st.procs[name].kill()
	}
	// The survivors take new work alone.
	for range 2 {
		j := submit(apis[1])
		jobs = append(jobs, j)
		watches = append(watches, startWatch(ctx, j, streamers[1], streamers[1]))
	}
	retried := 0
	for _, w := range watches {
		complete, seqs, err := w.result(60 * time.Second)
		if err != nil {
			t.Errorf("job %s: %v", w.job.JobID, err)
			continue
		}
		if complete.Status != contracts.StatusSucceeded || complete.Lines < lines {
			t.Errorf("job %s: complete %+v, want succeeded with at least %d lines", w.job.JobID, complete, lines)
		}
		for i, s := range seqs {
			if s != uint64(i+1) {
				t.Errorf("job %s: line %d has seq %d (gap or duplicate)", w.job.JobID, i, s)
				break
			}
		}
		if complete.Attempt > 1 {
			retried++
		}
		t.Logf("job %s: attempt %d, %d lines", w.job.JobID, complete.Attempt, complete.Lines)
		if uint64(len(seqs)) != complete.Lines {
			t.Errorf("job %s: %d lines, complete says %d", w.job.JobID, len(seqs), complete.Lines)
		}
	}
	// More jobs ran at the kill than one worker has slots: the killed
	// worker had some, which the other one ran again.
	slots, err := strconv.Atoi(env(p.Services["worker-2"])["RDEV_CONCURRENCY"])
	if err != nil {
		t.Fatal(err)
	}
	if running > slots && retried == 0 {
		t.Errorf("%d jobs ran at the kill (%d slots a worker), yet none ran a second attempt", running, slots)
	}
	t.Logf("%d jobs were running at the kill; %d watchers saw a second attempt", running, retried)
	for _, j := range jobs {
		if r, err := apis[1].Job(ctx, j.JobID); err != nil || r.Status != contracts.StatusSucceeded {
			t.Errorf("job %s: %+v %v", j.JobID, r.JobState, err)
		}
	}

	st.closesRevokedSubscriber(ctx, apis[1])
	st.sharesTheSecretsKey(ctx, apis[1])
}

// sharesTheSecretsKey: the key in .env is the one api, worker and
// notifier share. A project secret set through the API reaches its job in
// a worker, and the job's webhook reaches a receiver from a notifier,
// signed with the secret the API showed (each sealed by the API and
// opened by the other service).
func (st *stack) sharesTheSecretsKey(ctx context.Context, api *client.Client) {
	t := st.t
	type delivery struct {
		p   contracts.WebhookPayload
		err error
	}
	got := make(chan delivery, 8)
	var secret atomic.Value
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		wh, err := standardwebhooks.NewWebhook(secret.Load().(string))
		if err == nil {
			err = wh.Verify(body, r.Header)
		}
		var p contracts.WebhookPayload
		if err == nil {
			err = json.Unmarshal(body, &p)
		}
		got <- delivery{p, err}
	}))
	defer rc.Close()
	if _, err := api.CreateProject(ctx, contracts.ProjectRequest{ID: "sealed"}); err != nil {
		t.Fatalf("create project: %v", err)
	}
	if _, err := api.PutSecret(ctx, "sealed", "token", "opened-by-the-worker"); err != nil {
		t.Fatalf("put secret: %v", err)
	}
	wh, err := api.CreateWebhook(ctx, "sealed", contracts.WebhookRequest{URL: rc.URL, Events: []contracts.WebhookEventType{contracts.WebhookJobSucceeded}})
	if err != nil {
		t.Fatalf("create webhook: %v", err)
	}
	secret.Store(wh.Secret)
	j, err := api.SubmitCommand(ctx, "sealed", contracts.CommandRequest{Command: []string{"sh", "-c", `test "$TOKEN" = opened-by-the-worker`},
		SubmitOptions: contracts.SubmitOptions{Env: map[string]contracts.EnvValue{"TOKEN": {Secret: "token"}}}})
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	select {
	case d := <-got:
		if d.err != nil || d.p.Type != contracts.WebhookJobSucceeded || d.p.Data.JobID != j.JobID {
			t.Errorf("webhook %+v (%v), want job.succeeded of %s, verified", d.p, d.err, j.JobID)
		}
	case <-time.After(60 * time.Second):
		r, err := api.Job(ctx, j.JobID)
		t.Fatalf("no webhook within 60s; the job: %+v %v", r.JobState, err)
	}
}

// closesRevokedSubscriber: a direct subscriber connected to nats-3 is
// disconnected within seconds of its project's deletion by the API left
// (api-2, connected wherever), which finds it through the system user's
// CONNZ of the whole cluster and has nats-3 close it.
func (st *stack) closesRevokedSubscriber(ctx context.Context, api *client.Client) {
	t := st.t
	if _, err := api.CreateProject(ctx, contracts.ProjectRequest{ID: "direct"}); err != nil {
		t.Fatalf("create project: %v", err)
	}
	c, err := api.NATSCredentials(ctx, "direct")
	if err != nil {
		t.Fatalf("nats-credentials: %v", err)
	}
	closed := make(chan struct{})
	nc, err := nats.Connect("nats://"+st.addr["nats-3:4222"], nats.Token(c.Token), nats.NoReconnect(),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		t.Fatalf("connect to nats-3 with the credential: %v", err)
	}
	defer nc.Close()
	if err := api.DeleteProject(ctx, "direct"); err != nil {
		t.Fatalf("delete project: %v", err)
	}
	select {
	case <-closed:
	case <-time.After(30 * time.Second): // generous: a loaded machine; the credential lives 15 minutes
		t.Fatal("the deleted project's direct subscriber is still connected to nats-3")
	}
}

// stack is the compose project running as local processes.
type stack struct {
	t     *testing.T
	p     *types.Project
	bin   string
	addr  map[string]string // "service:port" → 127.0.0.1:free
	procs map[string]*process
}

// mapAddresses gives every port a service listens on a free loopback
// address: NATS client, route and monitoring ports, Redis, and the
// port of each rdev service's RDEV_HTTP_ADDR.
func (st *stack) mapAddresses() {
	for name, s := range st.p.Services {
		var ports []string
		switch {
		case strings.HasPrefix(s.Image, "nats:"):
			ports = []string{"4222", "6222", "8222"}
		case strings.HasPrefix(s.Image, "redis:"):
			ports = []string{"6379"}
		case env(s)["RDEV_HTTP_ADDR"] != "":
			_, port, err := net.SplitHostPort(env(s)["RDEV_HTTP_ADDR"])
			if err != nil {
				st.t.Fatal(err)
			}
			ports = []string{port}
		}
		for _, port := range ports {
			st.addr[name+":"+port] = natstest.FreeAddr(st.t)
		}
	}
}

// rewrite maps the host names and ports in s, as the service self sees
// them, to the local addresses: other services by name, its own
// listening addresses (0.0.0.0:port, 127.0.0.1:port) by port.
func (st *stack) rewrite(self, s string) string {
	var pairs []string
	for key, a := range st.addr {
		pairs = append(pairs, key, a)
		if name, port, _ := strings.Cut(key, ":"); name == self {
			pairs = append(pairs, "0.0.0.0:"+port, a, "127.0.0.1:"+port, a)
		}
	}
	return strings.NewReplacer(pairs...).Replace(s)
}

// startNATS starts the NATS services from their mounted configuration
// files, read by nats-server's own parser with each service's environment.
func (st *stack) startNATS() {
	t := st.t
	var servers []*server.Server
	for _, name := range []string{"nats-1", "nats-2", "nats-3"} {
		s := st.p.Services[name]
		dir := t.TempDir()
		// The command is -c <config>: the mounted nats.conf.
		conf := ""
		for _, c := range s.Configs {
			target := filepath.Join(dir, filepath.Base(c.Target))
			if err := copyFile(st.p.Configs[c.Source].File, target); err != nil {
				t.Fatal(err)
			}
			if c.Target == s.Command[len(s.Command)-1] {
				conf = target
			}
		}
		for k, v := range env(s) {
			t.Setenv(k, v)
		}
		opts, err := server.ProcessConfigFile(conf)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		opts.Host, opts.Port = hostPort(t, st.addr[name+":4222"])
		opts.HTTPHost, opts.HTTPPort = hostPort(t, st.addr[name+":8222"])
		opts.Cluster.Host, opts.Cluster.Port = hostPort(t, st.addr[name+":6222"])
		for _, r := range opts.Routes {
			r.Host = st.rewrite(name, r.Host)
		}
		opts.StoreDir = t.TempDir()
		opts.NoSigs, opts.NoLog = true, true
		srv, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
		go srv.Start()
		servers = append(servers, srv)
	}
	for i, srv := range servers {
		if !srv.ReadyForConnections(30 * time.Second) {
			t.Fatalf("nats-%d not ready", i+1)
		}
	}
	// The services' own health check: JetStream is up on every node.
	for _, name := range []string{"nats-1", "nats-2", "nats-3"} {
		test := st.p.Services[name].HealthCheck.Test
		url := st.rewrite(name, test[len(test)-1])
		await.Within(t, 30*time.Second, name+" health check "+url, func() bool {
			resp, err := http.Get(url)
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	}
}

func hostPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	var port int
	if _, err := fmt.Sscan(p, &port); err != nil {
		t.Fatal(err)
	}
	return h, port
}

// startRedis runs redis-server with the service's command on its port.
func (st *stack) startRedis() {
	t := st.t
	s := st.p.Services["redis"]
	host, port := hostPort(t, st.addr["redis:6379"])
	args := append(slices.Clone(s.Command[1:]), "--port", fmt.Sprint(port), "--bind", host, "--dir", t.TempDir())
	cmd := exec.Command(s.Command[0], args...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("redis-server (.ci/run installs it): %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	await.Within(t, 10*time.Second, "redis PING", func() bool {
		c, err := net.DialTimeout("tcp", st.addr["redis:6379"], time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte("PING\r\n")); err != nil {
			return false
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		return err == nil && line == "+PONG\r\n"
	})
}

// process is one rdev service running as a child process.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	once sync.Once
}

// command returns the service's rdev command and environment, rewritten
// to local addresses and directories. Three settings differ from the
// file, for this machine: a worker running here as root keeps jobs as
// root (the image's worker is not root), workers notice a killed worker
// after 2 s instead of the default 30 s, and notifiers may deliver to
// loopback, where the test's receiver listens.
func (st *stack) command(name string) *exec.Cmd {
	s := st.p.Services[name]
	vols := map[string]string{}
	for _, v := range s.Volumes {
		vols[v.Target] = st.t.TempDir()
	}
	environ := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + st.t.TempDir()}
	for k, v := range env(s) {
		v = st.rewrite(name, v)
		for target, dir := range vols {
			if v == target || strings.HasPrefix(v, target+"/") {
				v = dir + strings.TrimPrefix(v, target)
			}
		}
		environ = append(environ, k+"="+v)
	}
	if rdevCommand(s) == "notifier" {
		environ = append(environ, "RDEV_WEBHOOK_ALLOW_CIDRS=127.0.0.0/8") // the test's receiver listens on loopback
	}
	if rdevCommand(s) == "worker" {
		environ = append(environ, "RDEV_ACK_WAIT=2s")
		if os.Geteuid() == 0 {
			environ = append(environ, "RDEV_JOB_USER=root")
		}
	}
	cmd := exec.Command(st.bin, s.Command...)
	cmd.Env = environ
	cmd.Stderr = &testLog{t: st.t, prefix: name}
	return cmd
}

// run runs a one-shot service (provision) to its successful end.
func (st *stack) run(name string) {
	cmd := st.command(name)
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		st.t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			st.t.Fatalf("%s: %v", name, err)
		}
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		st.t.Fatalf("%s did not finish within 60s", name)
	}
}

// start runs a service until the test ends (SIGTERM, then SIGKILL).
func (st *stack) start(name string) {
	p := &process{name: name, cmd: st.command(name), done: make(chan struct{})}
	if err := p.cmd.Start(); err != nil {
		st.t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	st.procs[name] = p
	st.t.Cleanup(func() { p.stop(syscall.SIGTERM) })
}

func (p *process) stop(sig syscall.Signal) {
	p.once.Do(func() {
		_ = p.cmd.Process.Signal(sig)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
}

func (p *process) kill() { p.stop(syscall.SIGKILL) }

// waitHealthy runs the service's own health check command until it passes.
func (st *stack) waitHealthy(name string) {
	test := st.p.Services[name].HealthCheck.Test // CMD rdev probe URL
	args := make([]string, len(test)-2)
	for i, a := range test[2:] {
		args[i] = st.rewrite(name, a)
	}
	var last string // the output of the last failed check
	st.t.Cleanup(func() {
		if st.t.Failed() && last != "" {
			st.t.Logf("%s: last failed health check: %s", name, last)
		}
	})
	await.Within(st.t, 60*time.Second, name+" health check", func() bool {
		select {
		case <-st.procs[name].done:
			st.t.Fatalf("%s exited: %v", name, st.procs[name].err)
		default:
		}
		out, err := exec.Command(st.bin, args...).CombinedOutput()
		if err != nil {
			last = fmt.Sprintf("%v: %s", err, out)
		}
		return err == nil
	})
}

// testLog sends a process's log lines to the test log when -v.
type testLog struct {
	t      *testing.T
	prefix string
	mu     sync.Mutex
}

func (w *testLog) Write(b []byte) (int, error) {
	if testing.Verbose() {
		w.mu.Lock()
		for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
			fmt.Fprintf(os.Stderr, "%s | %s\n", w.prefix, l)
		}
		w.mu.Unlock()
	}
	return len(b), nil
}

// watch follows one job's event stream as a browser would: when its
// streamer goes away it resumes on the fallback streamer with
// Last-Event-ID.
type watch struct {
	job      contracts.SubmitResponse
	mu       sync.Mutex
	seqs     []uint64
	complete contracts.Event
	err      error
	done     chan struct{}
}

func startWatch(ctx context.Context, j contracts.SubmitResponse, streamer, fallback *client.Client) *watch {
	w := &watch{job: j, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		w.err = w.follow(ctx, streamer, "")
		var lost *streamLost
		if errors.As(w.err, &lost) {
			w.err = w.follow(ctx, fallback, lost.lastID)
		}
	}()
	return w
}

// streamLost is a connection that broke before the complete event.
type streamLost struct {
	lastID string
	err    error
}

func (e *streamLost) Error() string { return fmt.Sprintf("stream lost after %q: %v", e.lastID, e.err) }

// follow reads one streamer to the complete event; a broken connection is
// a *streamLost (no reconnect to the same streamer: it was killed).
func (w *watch) follow(ctx context.Context, streamer *client.Client, lastID string) error {
	s, err := streamer.Follow(ctx, w.job.EventsURL, client.FollowOptions{LastEventID: lastID, MaxReconnects: -1})
	if err != nil {
		return &streamLost{lastID: lastID, err: err}
	}
	defer s.Close()
	for {
		ev, err := s.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return &streamLost{lastID: s.LastEventID(), err: err}
		}
		switch ev.Name {
		case contracts.SSEOutput:
			l, err := ev.Line()
			if err != nil {
				return err
			}
			w.mu.Lock()
			w.seqs = append(w.seqs, l.Seq)
			w.mu.Unlock()
		case contracts.SSEComplete:
			if w.complete, err = ev.Status(); err != nil {
				return err
			}
		}
	}
}

// ended says whether the watch has ended.
func (w *watch) ended() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// waitLines waits until the watcher has seen n lines.
func (w *watch) waitLines(t *testing.T, n int, within time.Duration) {
	t.Helper()
	await.Within(t, within, fmt.Sprintf("%d lines of job %s", n, w.job.JobID), func() bool {
		ended := w.ended() // before the count: lines come before the end
		w.mu.Lock()
		got := len(w.seqs)
		w.mu.Unlock()
		if got < n && ended {
			t.Fatalf("the watch of job %s ended after %d lines: %v", w.job.JobID, got, w.err)
		}
		return got >= n
	})
}

func (w *watch) result(within time.Duration) (contracts.Event, []uint64, error) {
	select {
	case <-w.done:
	case <-time.After(within):
		return contracts.Event{}, nil, fmt.Errorf("no complete event within %s", within)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.complete, w.seqs, w.err
}
