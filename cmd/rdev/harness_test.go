package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/client"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/contracts/openapi/openapitest"
	"github.com/rdev-dev/rdev/pkg/telemetry"
)

// childEnv makes the test binary act as the rdev binary, so process-level
// tests run real rdev processes without a separate build.
const childEnv = "RDEV_TEST_RUN_MAIN"

// adminKey is the bootstrap admin key of every test node, in this process
// and in child processes (which inherit the environment).
const adminKey = "rdev-test-admin-key-0123456789abcdef"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		main()
		os.Exit(0)
	}
	if err := os.Setenv("RDEV_BOOTSTRAP_API_KEY", adminKey); err != nil {
		panic(err)
	}
	// Test data directories (t.TempDir) are private to root, out of the
	// default job user's reach; the job user tests choose their own.
	if _, ok := os.LookupEnv("RDEV_JOB_USER"); !ok {
		if err := os.Setenv("RDEV_JOB_USER", "root"); err != nil {
			panic(err)
		}
	}
	os.Exit(m.Run())
}

// call sends a request with the admin key and returns the status and body.
func call(t testing.TB, method, url string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Transport: openapitest.Transport(t, nil)}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, rb
}

// validated makes a client check its traffic against the OpenAPI document.
func validated(t testing.TB) client.Option {
	return client.WithHTTPClient(&http.Client{Transport: openapitest.Transport(t, nil)})
}

// node is a running rdev: in this process or a child process.
type node struct {
	http string // base URL, e.g. http://127.0.0.1:1234
	nats string // client URL of its embedded NATS server, if any
	// natsCreds is the directory of its embedded server's credentials.
	natsCreds string
	// adminKey is the admin key the node printed at its first start.
	adminKey string
	dataDir  string
	stop     func() // graceful stop, waits for exit
	kill     func() // SIGKILL (child processes only)
	pid      int    // child processes only
}

// seed is the nkey seed file of role ("api", "worker", "streamer",
// "admin") on the node's embedded NATS.
func (n *node) seed(role string) string { return filepath.Join(n.natsCreds, role+".nk") }

// connectNATS connects to the node's embedded NATS as its admin.
func (n *node) connectNATS(opts ...nats.Option) (*nats.Conn, error) {
	o, err := nats.NkeyOptionFromSeed(n.seed("admin"))
	if err != nil {
		return nil, err
	}
	return nats.Connect(n.nats, append(opts, o)...)
}

// logWriter sends a node's logs to the test log, line by line.
type logWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done && testing.Verbose() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *logWriter) close() { w.mu.Lock(); w.done = true; w.mu.Unlock() }

// run runs rdev in this process until ctx ends, as main does.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runWith(ctx, context.WithoutCancel(ctx), args, stdout, stderr, telemetry.Config{})
}

// upArgs are the flags every test node uses: free ports, a fast ack wait
// so lost workers are noticed quickly.
func upArgs(dataDir string, extra ...string) []string {
	return append([]string{"up", "--http-addr", "127.0.0.1:0", "--nats-addr", "127.0.0.1:0", "--data-dir", dataDir,
		"--ack-wait", "2s", "--drain-timeout", "5s", "--kill-grace", "200ms"}, extra...)
}

// startInProcess runs `rdev up` in this process, stopped at cleanup.
func startInProcess(t testing.TB, extra ...string) *node {
	t.Helper()
	return startInProcessWith(t, telemetry.Config{}, extra...)
}

// startInProcessWith is startInProcess with extra telemetry destinations.
func startInProcessWith(t testing.TB, tel telemetry.Config, extra ...string) *node {
	t.Helper()
	dataDir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	logs := &logWriter{t: t}
	done := make(chan error, 1)
	go func() {
		done <- runWith(ctx, context.WithoutCancel(ctx), upArgs(dataDir, extra...), pw, logs, tel)
		pw.Close()
	}()
	n := readReady(t, pr, done)
	n.dataDir = dataDir
	var once sync.Once
	n.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("rdev up: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("rdev up did not stop within 30s")
			}
			logs.close()
		})
	}
	t.Cleanup(n.stop)
	return n
}

// startProcess runs the rdev binary (this test binary in child mode).
func startProcess(t testing.TB, args ...string) *node {
	t.Helper()
	return startProcessEnv(t, nil, args...)
}

// startProcessEnv is startProcess with extra environment variables.
func startProcessEnv(t testing.TB, env []string, args ...string) *node {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), childEnv+"=1"), env...)
	logs := &logWriter{t: t}
	cmd.Stderr = logs
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	waitErr := make(chan error, 1)
	go func() { err := cmd.Wait(); exited <- err; waitErr <- err }()
	n := readReady(t, stdout, exited)
	var once sync.Once
	finish := func(sig syscall.Signal) {
		once.Do(func() {
			_ = cmd.Process.Signal(sig)
			select {
			case <-waitErr:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				t.Errorf("rdev %s did not exit within 30s of %s", args[0], sig)
			}
			logs.close()
		})
	}
	n.stop = func() { finish(syscall.SIGTERM) }
	n.kill = func() { finish(syscall.SIGKILL) }
	n.pid = cmd.Process.Pid
	t.Cleanup(n.stop)
	return n
}

// readReady waits for the "rdev ready" line and parses the addresses.
func readReady(t testing.TB, r io.Reader, exited <-chan error) *node {
	t.Helper()
	lines := make(chan string, 1)
	var key string
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if k, ok := strings.CutPrefix(sc.Text(), "rdev admin API key (shown once, store it now): "); ok {
				key = k // read before the ready line is sent
			}
			if strings.HasPrefix(sc.Text(), "rdev ready") {
				lines <- sc.Text()
			}
		}
	}()
	select {
	case l := <-lines:
		n := &node{adminKey: key}
		for _, f := range strings.Fields(l) {
			if v, ok := strings.CutPrefix(f, "http="); ok {
				n.http = "http://" + v
			}
			if v, ok := strings.CutPrefix(f, "nats="); ok {
				n.nats = v
			}
			if v, ok := strings.CutPrefix(f, "nats-creds="); ok {
				n.natsCreds = v
			}
		}
		return n
	case err := <-exited:
		t.Fatalf("rdev exited before it was ready: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("rdev not ready within 60s")
	}
	return nil
}

// submit submits a command as admin, creating the project on first use.
func submit(t testing.TB, base, project string, body any) contracts.SubmitResponse {
	t.Helper()
	status, rb := call(t, http.MethodPost, base+"/v1/projects/"+project+"/commands", body)
	if status == http.StatusNotFound && strings.Contains(string(rb), "project_not_found") {
		if status, pb := call(t, http.MethodPost, base+"/v1/projects", map[string]string{"id": project}); status != http.StatusCreated && status != http.StatusConflict {
			t.Fatalf("create project %s: %d %s", project, status, pb)
		}
		status, rb = call(t, http.MethodPost, base+"/v1/projects/"+project+"/commands", body)
	}
	if status != http.StatusAccepted {
		t.Fatalf("submit: %d %s", status, rb)
	}
	var r contracts.SubmitResponse
	if err := json.Unmarshal(rb, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func getJob(t testing.TB, base, id string) contracts.JobState {
	t.Helper()
	status, rb := call(t, http.MethodGet, base+"/v1/jobs/"+id, nil)
	var st contracts.JobState
	if err := json.Unmarshal(rb, &st); err != nil || status != http.StatusOK {
		t.Fatalf("get job %s: %d %s", id, status, rb)
	}
	return st
}

// waitFinal polls a job's state until it is final (bounded).
func waitFinal(t testing.TB, base, id string, within time.Duration) contracts.JobState {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), within)
	defer cancel()
	var st contracts.JobState
	if await.Poll(ctx, func() bool {
		st = getJob(t, base, id)
		return st.Status.Final()
	}) != nil {
		t.Fatalf("job %s still %s after %s", id, st.Status, within)
	}
	return st
}

// touch creates a file in a project's workspace (a gate a test job waits on).
func touch(t testing.TB, dataDir, project, name string) {
	t.Helper()
	p := filepath.Join(dataDir, "workspaces", project, name)
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// gateCommand waits until the file gate exists in the workspace.
var gateCommand = []string{"sh", "-c", "while [ ! -e gate ]; do sleep 0.01; done"}

func mustJSON[T any, D ~string | ~[]byte](t testing.TB, data D) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(data), &v); err != nil {
		t.Fatalf("decode %q: %v", data, err)
	}
	return v
}

func must(t testing.TB, err error, what string, args ...any) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", fmt.Sprintf(what, args...), err)
	}
}

// openStream follows the event stream eventsURL of the node at base with
// pkg/client by its token (no API key), resuming after lastID. It never
// reconnects by itself: the tests judge each connection. Closed at
// cleanup.
func openStream(t testing.TB, base, eventsURL, lastID string) *client.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	s, err := client.New(base, validated(t)).Follow(ctx, eventsURL, client.FollowOptions{LastEventID: lastID, MaxReconnects: -1})
	must(t, err, "open %s", eventsURL)
	return s
}
