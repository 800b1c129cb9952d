package k8sexec_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/services/worker/internal/executor"
	"github.com/rdev-dev/rdev/services/worker/internal/executor/executortest"
	"github.com/rdev-dev/rdev/services/worker/internal/k8sexec"
	"github.com/rdev-dev/rdev/services/worker/internal/k8sexec/k8stest"
)

const namespace = "rdev-test"

// bundle is what a test works with: an executor, the fake API server it
// talks to, and the workspace directory its commands run in.
type bundle struct {
	ex        *k8sexec.Executor
	api       *k8stest.Server
	workspace string
	cfg       k8sexec.Config
}

// setup starts a fake API server with opts and an executor on it; edit
// may change the executor's configuration.
func setup(t *testing.T, opts k8stest.Options, edit func(*k8sexec.Config)) bundle {
	t.Helper()
	api := k8stest.New(t, opts)
	b := bundle{api: api, workspace: t.TempDir()}
	b.cfg = k8sexec.Config{
		Namespace: namespace, CreatePods: true, Workspace: b.workspace,
		KillGrace: 300 * time.Millisecond, ReadyTimeout: 20 * time.Second,
		Log: slog.New(slog.NewTextHandler(tWriter{t}, nil)),
	}
	if edit != nil {
		edit(&b.cfg)
	}
	ex, err := k8sexec.New(b.cfg, api.Config())
	if err != nil {
		t.Fatal(err)
	}
	b.ex = ex
	return b
}

// tWriter sends logs to t.Log.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func TestConformanceWebSocket(t *testing.T) {
	t.Parallel()
	executortest.Run(t, func(t *testing.T) executor.Executor {
		return setup(t, k8stest.Options{AutoReady: true}, nil).ex
	})
}

func TestConformanceSPDY(t *testing.T) {
	t.Parallel()
	executortest.Run(t, func(t *testing.T) executor.Executor {
		return setup(t, k8stest.Options{AutoReady: true, SPDYOnly: true}, nil).ex
	})
}

// lineWriter signals each line written to it.
type lineWriter struct {
	mu    sync.Mutex
	buf   strings.Builder
	lines chan string
}

func newLineWriter() *lineWriter { return &lineWriter{lines: make(chan string, 100)} }

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for {
		s := w.buf.String()
		i := strings.IndexByte(s, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.lines <- s[:i]
		w.buf.Reset()
		w.buf.WriteString(s[i+1:])
	}
}

// next waits, within a bound, for the next line.
func (w *lineWriter) next(t *testing.T) string {
	t.Helper()
	select {
	case l := <-w.lines:
		return l
	case <-time.After(10 * time.Second):
		t.Fatal("no line within 10s")
		return ""
	}
}

func spec(project string, argv ...string) executor.Spec {
	return executor.Spec{JobID: "job-" + project, Project: project, Command: argv}
}

// TestTransportsStreamLinesLive runs a command that prints a line, then
// waits until the test has seen it before printing the next and exiting
// with 7, over WebSocket and over an SPDY-only (pre-1.30) API server.
func TestTransportsStreamLinesLive(t *testing.T) {
	t.Parallel()
	for name, spdyOnly := range map[string]bool{"websocket": false, "spdy": true} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, k8stest.Options{AutoReady: true, SPDYOnly: spdyOnly}, nil)
			gate := b.workspace + "/gate"
			stdout, stderr := newLineWriter(), newLineWriter()
			type result struct {
				code int
				err  error
			}
			done := make(chan result, 1)
			go func() {
				code, err := b.ex.Exec(t.Context(), spec("live", "sh", "-c",
					`echo first; echo warn >&2; while [ ! -e "$1" ]; do sleep 0.02; done; echo second; exit 7`, "sh", gate), stdout, stderr)
				done <- result{code, err}
			}()
			if l := stdout.next(t); l != "first" {
				t.Fatalf("first line %q", l)
			}
			if l := stderr.next(t); l != "warn" {
				t.Fatalf("stderr line %q", l)
			}
			select {
			case r := <-done:
				t.Fatalf("Exec returned before the gate opened: %v", r)
			default:
			}
			if err := os.WriteFile(gate, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if l := stdout.next(t); l != "second" {
				t.Fatalf("second line %q", l)
			}
			r := <-done
			if r.err != nil || r.code != 7 {
				t.Fatalf("Exec = %d, %v; want 7, nil", r.code, r.err)
			}
			if ws := b.api.WebSocketExecs(); spdyOnly && ws != 0 || !spdyOnly && ws == 0 {
				t.Fatalf("%d execs over WebSocket", ws)
			}
		})
	}
}

// TestPodCreatedOnceUnderConcurrentJobs starts jobs of one project at once
// on two executors (two workers): one pod is created, by one request per
// worker at most, and every job runs in it.
func TestPodCreatedOnceUnderConcurrentJobs(t *testing.T) {
	t.Parallel()
	b := setup(t, k8stest.Options{AutoReady: true}, nil)
	other, err := k8sexec.New(b.cfg, b.api.Config())
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range 2 * n {
		ex := b.ex
		if i%2 == 1 {
			ex = other
		}
		wg.Go(func() {
			var out strings.Builder
			code, err := ex.Exec(t.Context(), spec("shared", "echo", "hi"), &out, &out)
			if err == nil && (code != 0 || out.String() != "hi\n") {
				err = fmt.Errorf("exit %d, output %q", code, out.String())
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if pods := b.api.Pods(t, namespace); len(pods) != 1 || pods[0].Name != k8sexec.PodName("shared") ||
		pods[0].Labels[k8sexec.LabelProject] != "shared" {
		t.Fatalf("pods: %v", pods)
	}
	if c := b.api.Creates(); c < 1 || c > 2 {
		t.Fatalf("%d create requests; want one per worker at most", c)
	}
}

// TestWaitsForReady holds a job until the test, playing the kubelet,
// marks the created pod Ready.
func TestWaitsForReady(t *testing.T) {
	t.Parallel()
	b := setup(t, k8stest.Options{}, nil)
	done := make(chan error, 1)
	var out strings.Builder
	go func() {
		_, err := b.ex.Exec(t.Context(), spec("slow", "echo", "ran"), &out, &out)
		done <- err
	}()
	name := k8sexec.PodName("slow")
	await.Until(t, "the pod to be created", func() bool { return len(b.api.Pods(t, namespace)) == 1 })
	select {
	case err := <-done:
		t.Fatalf("Exec returned before the pod was Ready: %v", err)
	default:
	}
	b.api.SetReady(t, namespace, name)
	select {
	case err := <-done:
		if err != nil || out.String() != "ran\n" {
			t.Fatalf("Exec: %v, output %q", err, out.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Exec did not run once the pod was Ready")
	}
}

// TestReadyTimeout fails a job whose pod stays Pending with ErrNotReady,
// and one whose pod crash-loops at once.
func TestReadyTimeout(t *testing.T) {
	t.Parallel()
	// The list, create and list before the pod is seen Pending must fit
	// in the ready timeout: 500ms did not on a loaded machine (load 10+
	// on 2 cores, race detector). The bound on the whole wait only has to
	// tell the ready timeout from the 2-minute default.
	const ready = 3 * time.Second
	b := setup(t, k8stest.Options{}, func(c *k8sexec.Config) { c.ReadyTimeout = ready })
	start := time.Now()
	_, err := b.ex.Exec(t.Context(), spec("pending", "echo", "ran"), io.Discard, io.Discard)
	if !errors.Is(err, executor.ErrNotReady) || !strings.Contains(err.Error(), "Pending") {
		t.Fatalf("err = %v, want ErrNotReady saying Pending", err)
	}
	if d := time.Since(start); d > ready+30*time.Second {
		t.Fatalf("took %s with a ready timeout of %s", d, ready)
	}

	b.api.AddPod(t, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "crashing", Namespace: namespace, Labels: map[string]string{k8sexec.LabelProject: "crashing"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "workspace", Image: "busybox"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{
			Name: "workspace", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
		}}},
	})
	_, err = b.ex.Exec(t.Context(), spec("crashing", "echo", "ran"), io.Discard, io.Discard)
	if !errors.Is(err, executor.ErrNotReady) || !strings.Contains(err.Error(), "CrashLoopBackOff") {
		t.Fatalf("err = %v, want ErrNotReady saying CrashLoopBackOff", err)
	}
}

// TestReadyTimeoutAfterCreatingThePod: the ready timeout passes while
// the API server is too slow to list the pod the executor just created.
// The error describes that pod (Pending), not "no pod": the executor
// knows it from the create's reply.
func TestReadyTimeoutAfterCreatingThePod(t *testing.T) {
	t.Parallel()
	// Generous: the first list and the create must fit in it on a loaded
	// machine; the list after the create never answers.
	const ready = 3 * time.Second
	b := setup(t, k8stest.Options{StallListsAfterCreate: true}, func(c *k8sexec.Config) { c.ReadyTimeout = ready })
	_, err := b.ex.Exec(t.Context(), spec("slowlist", "echo", "ran"), io.Discard, io.Discard)
	if !errors.Is(err, executor.ErrNotReady) || !strings.Contains(err.Error(), "Pending") || b.api.Creates() != 1 {
		t.Fatalf("err = %v after %d creates, want ErrNotReady saying Pending after 1", err, b.api.Creates())
	}
}

// TestNoPodAndCreationDisabled fails at once with ErrNotReady.
func TestNoPodAndCreationDisabled(t *testing.T) {
	t.Parallel()
	b := setup(t, k8stest.Options{}, func(c *k8sexec.Config) { c.CreatePods = false })
	_, err := b.ex.Exec(t.Context(), spec("nopod", "echo", "ran"), io.Discard, io.Discard)
	if !errors.Is(err, executor.ErrNotReady) || b.api.Creates() != 0 {
		t.Fatalf("err = %v, %d creates; want ErrNotReady and none", err, b.api.Creates())
	}
}

// TestPodDeletedMidJob fails the job with ErrLost, promptly.
func TestPodDeletedMidJob(t *testing.T) {
	t.Parallel()
	b := setup(t, k8stest.Options{AutoReady: true}, nil)
	stdout := newLineWriter()
	done := make(chan error, 1)
	go func() {
		_, err := b.ex.Exec(t.Context(), spec("doomed", "sh", "-c", "echo started; sleep 60"), stdout, io.Discard)
		done <- err
	}()
	stdout.next(t)
	b.api.DeletePod(t, namespace, k8sexec.PodName("doomed"))
	select {
	case err := <-done:
		if !errors.Is(err, executor.ErrLost) {
			t.Fatalf("err = %v, want ErrLost", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Exec did not return after the pod was deleted")
	}
}

// TestCancelAndTimeoutKillTheProcess checks, from outside the executor
// (this machine's /proc, where the fake runs the "container"), that a
// cancelled or timed-out command and its child are gone, although the
// fake leaves a process running when its exec client goes away.
func TestCancelAndTimeoutKillTheProcess(t *testing.T) {
	t.Parallel()
	for name, timeout := range map[string]bool{"cancel": false, "timeout": true} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, k8stest.Options{AutoReady: true}, nil)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			if timeout {
				ctx, cancel = context.WithTimeout(ctx, time.Second)
				defer cancel()
			}
			stdout := newLineWriter()
			done := make(chan error, 1)
			go func() {
				_, err := b.ex.Exec(ctx, spec("victim", "sh", "-c", `trap '' TERM; sleep 1000 & echo $$ $!; wait`), stdout, io.Discard)
				done <- err
			}()
			var pids []int
			for _, f := range strings.Fields(stdout.next(t)) {
				pid, err := strconv.Atoi(f)
				if err != nil {
					t.Fatal(err)
				}
				pids = append(pids, pid)
			}
			for _, pid := range pids {
				if !running(pid) {
					t.Fatalf("process %d not running before the stop", pid)
				}
			}
			if !timeout {
				cancel()
			}
			err := <-done
			want := context.Canceled
			if timeout {
				want = context.DeadlineExceeded
			}
			if !errors.Is(err, want) {
				t.Fatalf("err = %v, want %v", err, want)
			}
			for _, pid := range pids {
				await.Until(t, fmt.Sprintf("process %d to be gone", pid), func() bool { return !running(pid) })
			}
		})
	}
}

// running reports whether pid is a live process (not a zombie) here.
func running(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(stat)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// TestBreakerOpensAndCloses fails calls against a down API until the
// breaker opens (then Exec fails fast without calling the API), and runs
// again once the API is back and the breaker's open time passed.
func TestBreakerOpensAndCloses(t *testing.T) {
	t.Parallel()
	changes := make(chan string, 10)
	b := setup(t, k8stest.Options{AutoReady: true}, func(c *k8sexec.Config) {
		c.BreakerFailures, c.BreakerOpenFor = 3, 300*time.Millisecond
		c.OnBreakerChange = func(_, to string) { changes <- to }
	})
	b.api.SetDown(true)
	for i := range 3 {
		if _, err := b.ex.Exec(t.Context(), spec("flaky", "echo", "hi"), io.Discard, io.Discard); !errors.Is(err, executor.ErrUnavailable) {
			t.Fatalf("call %d: err = %v, want ErrUnavailable", i, err)
		}
	}
	if to := <-changes; to != "open" {
		t.Fatalf("breaker went %s, want open", to)
	}
	_, err := b.ex.Exec(t.Context(), spec("flaky", "echo", "hi"), io.Discard, io.Discard)
	if !errors.Is(err, executor.ErrUnavailable) || !strings.Contains(err.Error(), "circuit breaker is open") {
		t.Fatalf("err = %v, want ErrUnavailable from the open breaker", err)
	}
	b.api.SetDown(false)
	await.Until(t, "the breaker to let a call through", func() bool {
		var out strings.Builder
		code, err := b.ex.Exec(t.Context(), spec("flaky", "echo", "hi"), &out, io.Discard)
		return err == nil && code == 0 && out.String() == "hi\n"
	})
	for _, want := range []string{"half-open", "closed"} {
		if to := <-changes; to != want {
			t.Fatalf("breaker went %s, want %s", to, want)
		}
	}
}

// TestSecretsStayOutOfExecURLs checks that a job's secrets reach its
// command over the exec's stdin only: no exec request URL (which API
// server audit logs record) nor log line holds a value, in any encoding,
// over WebSocket and over SPDY; the job's exec asks for stdin and one
// without secrets does not.
func TestSecretsStayOutOfExecURLs(t *testing.T) {
	t.Parallel()
	for name, spdyOnly := range map[string]bool{"websocket": false, "spdy": true} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var logs strings.Builder
			var logMu sync.Mutex
			b := setup(t, k8stest.Options{AutoReady: true, SPDYOnly: spdyOnly}, func(c *k8sexec.Config) {
				c.Log = slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
			})
			const marker = "rdev-marker-3f9a"
			secret := "line one\n" + marker + " 'q' \"dq\" $HOME \\ ✓\n"
			s := spec("secrets", "sh", "-c", `printf '%s' "$RDEV_SECRET" | sha256sum`)
			s.SecretEnv = map[string]string{"RDEV_SECRET": secret}
			var stdout strings.Builder
			code, err := b.ex.Exec(t.Context(), s, &stdout, io.Discard)
			if err != nil || code != 0 {
				t.Fatalf("Exec = %d, %v", code, err)
			}
			if got, want := strings.Fields(stdout.String()), fmt.Sprintf("%x", sha256.Sum256([]byte(secret))); len(got) == 0 || got[0] != want {
				t.Fatalf("sha256 of the command's value = %q, want %s", got, want)
			}
			if code, err := b.ex.Exec(t.Context(), spec("secrets", "true"), io.Discard, io.Discard); err != nil || code != 0 {
				t.Fatalf("Exec without secrets = %d, %v", code, err)
			}
			// The wrapper refuses before it reads stdin: more than a pipe
			// holds stays unread, and the refusal is still what Exec says.
			s.WorkDir = "no/such/dir"
			s.SecretEnv = map[string]string{"RDEV_SECRET": marker + strings.Repeat("\xff", 64<<10)}
			if _, err := b.ex.Exec(t.Context(), s, io.Discard, io.Discard); !errors.Is(err, executor.ErrStart) || strings.Contains(err.Error(), marker) {
				t.Fatalf("Exec in a missing work dir = %v, want ErrStart without the value", err)
			}

			urls := b.api.ExecURLs()
			var withStdin, withoutStdin int
			for _, u := range urls {
				decoded, err := url.QueryUnescape(u)
				if err != nil {
					t.Fatalf("exec URL %q: %v", u, err)
				}
				for _, form := range []string{u, decoded} {
					if strings.Contains(form, marker) {
						t.Errorf("an exec request URL holds the secret: %q", form)
					}
				}
				q, err := url.ParseQuery(u[strings.IndexByte(u, '?')+1:])
				if err != nil {
					t.Fatal(err)
				}
				stdin := q.Get("stdin") == "true" || q.Get("input") == "1"
				switch {
				case slices.ContainsFunc(q["command"], func(a string) bool { return strings.Contains(a, "$RDEV_SECRET") }):
					if !stdin {
						t.Errorf("exec URL %q: the job with secrets has no stdin", u)
					}
					withStdin++
				case slices.Contains(q["command"], "true"):
					if stdin {
						t.Errorf("exec URL %q: the job without secrets has stdin", u)
					}
					withoutStdin++
				}
			}
			if withStdin == 0 || withoutStdin == 0 {
				t.Errorf("exec URLs %q: want both jobs' execs recorded", urls)
			}
			logMu.Lock()
			defer logMu.Unlock()
			if strings.Contains(logs.String(), marker) {
				t.Errorf("the executor's log holds the secret")
			}
		})
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

// projectPods is a fixed k8sexec.ProjectPods.
type projectPods map[string]access.PodSettings

func (p projectPods) PodSettings(_ context.Context, project string) (access.PodSettings, error) {
	return p[project], nil
}

// A project's pod settings replace the template's image and limits (a
// template request above a new limit is lowered to it); a project without
// settings gets the template unchanged.
func TestProjectPodSettingsApplied(t *testing.T) {
	t.Parallel()
	b := setup(t, k8stest.Options{AutoReady: true}, func(c *k8sexec.Config) {
		c.Projects = projectPods{"tuned": {Image: "ghcr.io/acme/ws:1.2", CPU: "2", Memory: "64Mi"}}
	})
	for _, project := range []string{"tuned", "plain"} {
		if _, err := b.ex.Exec(t.Context(), spec(project, "true"), io.Discard, io.Discard); err != nil {
			t.Fatalf("project %s: %v", project, err)
		}
	}
	pods := map[string]corev1.Container{}
	for _, p := range b.api.Pods(t, namespace) {
		pods[p.Labels[k8sexec.LabelProject]] = p.Spec.Containers[0]
	}
	tmpl := k8sexec.DefaultPodTemplate().Spec.Containers[0]
	tuned := pods["tuned"]
	if tuned.Image != "ghcr.io/acme/ws:1.2" {
		t.Errorf("tuned image %q", tuned.Image)
	}
	lim, req := tuned.Resources.Limits, tuned.Resources.Requests
	if lim.Cpu().String() != "2" || lim.Memory().String() != "64Mi" {
		t.Errorf("tuned limits %v; want cpu 2, memory 64Mi", lim)
	}
	if req.Cpu().String() != "100m" || req.Memory().String() != "64Mi" {
		t.Errorf("tuned requests %v; want cpu 100m (template), memory 64Mi (lowered to the limit)", req)
	}
	plain := pods["plain"]
	if plain.Image != tmpl.Image || !equality.Semantic.DeepEqual(plain.Resources, tmpl.Resources) {
		t.Errorf("plain container image %q resources %v; want the template's %q %v", plain.Image, plain.Resources, tmpl.Image, tmpl.Resources)
	}
}

// A setting that does not parse fails the job as not ready, and no pod
// is created.
func TestProjectPodSettingsInvalid(t *testing.T) {
	t.Parallel()
	b := setup(t, k8stest.Options{AutoReady: true}, func(c *k8sexec.Config) {
		c.Projects = projectPods{"bad": {Memory: "lots"}}
	})
	_, err := b.ex.Exec(t.Context(), spec("bad", "true"), io.Discard, io.Discard)
	if !errors.Is(err, executor.ErrNotReady) {
		t.Fatalf("err %v; want ErrNotReady", err)
	}
	if c := b.api.Creates(); c != 0 {
		t.Fatalf("%d pods created", c)
	}
}
