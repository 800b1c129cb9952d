// Package k8sexec is the executor.Executor adapter that runs each job in its
// project's Kubernetes pod, through the pods/exec API, the way kubectl exec
// does (WebSocket first, SPDY for older API servers), from code.
//
// A project's pod is found by the label rdev.dev/project=<project> in one
// namespace and, when allowed, created from a pod template and waited for
// until Ready. Each command runs under a small sh wrapper that enters the
// work dir, exports the environment and starts the command as the leader
// of a new process group whose id it records in the workspace: stopping a
// job (timeout, cancel, worker shutdown) is a second exec that kills that
// group, since closing an exec stream does not stop the process in the
// container. The container image needs sh and setsid (busybox has both).
// A job's project secrets reach the wrapper on the exec's stdin, never in
// its argv, which the request URL carries into API server logs.
//
// Every API call and exec goes through one circuit breaker; while the API
// is unreachable or the breaker is open, Exec fails fast with
// executor.ErrUnavailable before anything ran.
package k8sexec

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"
	"k8s.io/streaming/pkg/httpstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/worker/internal/executor"
)

// Executor runs commands in project pods; it implements executor.Executor
// and is safe for concurrent use.
type Executor struct {
	cfg     Config
	rest    *rest.Config
	core    *corePods
	breaker *gobreaker.TwoStepCircuitBreaker[struct{}]
	pods    *podFinder
}

var _ executor.Executor = (*Executor)(nil)

// New returns an Executor that reaches the API with rc, configured by
// cfg with defaults applied.
func New(cfg Config, rc *rest.Config) (*Executor, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rc = rest.CopyConfig(rc)
	core, err := newCorePods(rc)
	if err != nil {
		return nil, fmt.Errorf("k8sexec: client: %w", err)
	}
	e := &Executor{cfg: cfg, rest: rc, core: core, breaker: newBreaker(cfg)}
	e.pods = &podFinder{e: e, inflight: map[string]*podCall{}}
	return e, nil
}

// Exec runs spec in the project's pod as described by executor.Executor.
//
// Beyond the port's errors, it returns errors wrapping
// executor.ErrUnavailable (API unreachable or breaker open; nothing ran),
// executor.ErrNotReady (the pod is not and does not become Ready) and
// executor.ErrLost (the pod went away while the command ran).
func (e *Executor) Exec(ctx context.Context, spec executor.Spec, stdout, stderr io.Writer) (int, error) {
	if ctx.Err() != nil {
		return -1, fmt.Errorf("command not started: %w", context.Cause(ctx))
	}
	argv, err := e.wrapped(spec)
	if err != nil {
		return -1, err
	}
	pod, err := e.pods.ready(ctx, spec.Project)
	if err != nil {
		return -1, err
	}
	if ctx.Err() != nil {
		return -1, fmt.Errorf("command not started: %w", context.Cause(ctx))
	}
	return e.run(ctx, pod, argv, stdout, stderr)
}

// wrapped validates spec and returns the argv that runs it under
// wrapperScript, with a fresh run file.
func (e *Executor) wrapped(spec executor.Spec) (execArgv, error) {
	if len(spec.Command) == 0 || spec.Command[0] == "" {
		return execArgv{}, fmt.Errorf("%w: empty command", executor.ErrStart)
	}
	if !contracts.ValidProjectID(spec.Project) {
		return execArgv{}, fmt.Errorf("%w: project %q is not a DNS label", executor.ErrStart, spec.Project)
	}
	dir := ""
	if spec.WorkDir != "" {
		dir = path.Clean(spec.WorkDir)
		if path.IsAbs(dir) || dir == ".." || strings.HasPrefix(dir, "../") {
			return execArgv{}, fmt.Errorf("%w: work dir %q escapes the workspace", executor.ErrStart, spec.WorkDir)
		}
		if dir == "." {
			dir = ""
		}
	}
	secrets, err := secretInput(spec.SecretEnv)
	if err != nil {
		return execArgv{}, err
	}
	env := make([]string, 0, len(spec.Env))
	for k, v := range spec.Env {
		if !validEnvName(k) {
			return execArgv{}, fmt.Errorf("%w: invalid environment variable name %q", executor.ErrStart, k)
		}
		env = append(env, k+"="+v)
	}
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	run := e.cfg.Workspace + "/.rdev/run/" + hex.EncodeToString(b)
	merge := "0"
	if spec.MergeStderr {
		merge = "1"
	}
	cmd := make([]string, 0, 10+len(env)+len(spec.Command))
	cmd = append(cmd, "sh", "-c", wrapperScript, "rdev", run, e.cfg.Workspace, dir, merge,
		strconv.Itoa(len(env)), strconv.Itoa(len(spec.SecretEnv)))
	cmd = append(cmd, env...)
	cmd = append(cmd, spec.Command...)
	return execArgv{cmd: cmd, run: run, stdin: secrets}, nil
}

// execArgv is a wrapped command, the file its process group id goes to,
// and what the wrapper reads on stdin (nil: the exec has no stdin).
type execArgv struct {
	cmd   []string
	run   string
	stdin []byte
}

// secretInput encodes secrets for the wrapper's stdin, sorted by name:
// per variable a line with its name and a line with its value, in which
// every backslash is doubled and every control or non-ASCII byte written
// as \0ooo (octal), so the value is one line of printable ASCII that
// read -r takes as is in any locale (bash's read drops bytes of invalid
// UTF-8 in a UTF-8 one) and printf %b decodes in every POSIX sh.
// Secrets never go into the exec's argv: the request URL carries it,
// and API servers log URLs (audit). Errors name the variable, never the
// value.
func secretInput(secrets map[string]string) ([]byte, error) {
	if len(secrets) == 0 {
		return nil, nil
	}
	var b bytes.Buffer
	for _, k := range slices.Sorted(maps.Keys(secrets)) {
		v := secrets[k]
		if !validEnvName(k) {
			return nil, fmt.Errorf("%w: invalid environment variable name %q", executor.ErrStart, k)
		}
		if strings.IndexByte(v, 0) >= 0 {
			return nil, fmt.Errorf("%w: the value of %s holds a NUL byte", executor.ErrStart, k)
		}
		b.WriteString(k)
		b.WriteByte('\n')
		for _, c := range []byte(v) {
			switch {
			case c == '\\':
				b.WriteString(`\\`)
			case c < 0x20 || c >= 0x7f:
				b.Write([]byte{'\\', '0', '0' + c>>6, '0' + c>>3&7, '0' + c&7})
			default:
				b.WriteByte(c)
			}
		}
		b.WriteByte('\n')
	}
	return b.Bytes(), nil
}

func validEnvName(k string) bool {
	if k == "" || (k[0] >= '0' && k[0] <= '9') {
		return false
	}
	for _, c := range []byte(k) {
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

// run execs argv in pod and stops it when ctx ends, a writer fails or
// the pod is lost.
func (e *Executor) run(ctx context.Context, pod *corev1.Pod, argv execArgv, stdout, stderr io.Writer) (int, error) {
	stopped := make(chan error, 1)
	stop := func(err error) {
		select {
		case stopped <- err:
		default:
		}
	}
	outW := &guardWriter{w: stdout, fail: stop}
	errW := &guardWriter{w: stderr, fail: stop}
	head := &headerWriter{w: outW, seen: make(chan struct{})}
	defer func() { outW.close(); errW.close() }()

	// The pod watch and the stream end only when run says so.
	bg := context.WithoutCancel(ctx)
	watchCtx, stopWatch := context.WithCancel(bg)
	defer stopWatch()
	lost := make(chan error, 1)
	go e.watchPod(watchCtx, pod, lost)

	streamCtx, cancelStream := context.WithCancel(bg)
	defer cancelStream()
	done := make(chan error, 1)
	go func() { done <- e.stream(streamCtx, pod, argv, head, errW) }()
	streamEnd := func() error { return <-done }

	var cause error
	select {
	case err := <-done:
		return e.result(bg, pod, head, outW, errW, err, lost)
	case err := <-lost:
		cancelStream()
		_ = streamEnd() // the pod's loss says more than the broken stream
		return -1, err
	case <-ctx.Done():
		cause = fmt.Errorf("command stopped: %w", context.Cause(ctx))
	case err := <-stopped:
		cause = fmt.Errorf("command stopped: output: %w", err)
	}

	// Closing the stream would leave the command running in the
	// container: kill its process group, then let the stream end by
	// itself so that what the command printed is delivered.
	if err := e.kill(bg, pod, argv.run); err != nil {
		cause = fmt.Errorf("%w (and stopping it failed: %w)", cause, err)
	}
	wait := time.NewTimer(e.cfg.KillGrace + 5*time.Second)
	defer wait.Stop()
	// The stream's own end (an exit status of the killed command, or a
	// broken stream) says less than the cause.
	select {
	case err := <-done:
		e.cfg.Log.Debug("stream of a stopped command ended", "pod", pod.Name, "err", err)
	case err := <-lost:
		cancelStream()
		_ = streamEnd()
		return -1, errors.Join(cause, err)
	case <-wait.C:
		cancelStream()
		_ = streamEnd()
	}
	return -1, cause
}

// result interprets the end of an exec stream.
func (e *Executor) result(ctx context.Context, pod *corev1.Pod, head *headerWriter, outW, errW *guardWriter,
	err error, lost <-chan error) (int, error) {
	if werr := errors.Join(outW.failed(), errW.failed()); werr != nil {
		return -1, fmt.Errorf("command stopped: output: %w", werr)
	}
	started, startErr := head.result()
	if startErr != nil {
		return -1, startErr
	}
	var exit utilexec.CodeExitError
	switch {
	case started && err == nil:
		return 0, nil
	case started && errors.As(err, &exit):
		return exit.Code, nil
	}
	// The stream failed: was the pod lost under it?
	select {
	case lerr := <-lost:
		return -1, lerr
	default:
	}
	if lerr := e.checkLost(ctx, pod); lerr != nil {
		return -1, lerr
	}
	if !started && err != nil && apiDown(err) {
		return -1, fmt.Errorf("exec in pod %q: %w: %w", pod.Name, executor.ErrUnavailable, err)
	}
	if err == nil {
		err = errors.New("the wrapper printed no header")
	}
	return -1, fmt.Errorf("exec in pod %q: %w", pod.Name, err)
}

// stream runs one exec of argv in pod through the breaker, WebSocket first.
func (e *Executor) stream(ctx context.Context, pod *corev1.Pod, argv execArgv, stdout *headerWriter, stderr io.Writer) error {
	done, err := e.breaker.Allow()
	if err != nil {
		return fmt.Errorf("%w: %w", executor.ErrUnavailable, err)
	}
	var once sync.Once
	report := func(err error) { once.Do(func() { done(err) }) }
	// A long command's stream counts as a success once it started, so a
	// half-open breaker lets the next call through without waiting for it.
	stdout.onHeader = func() { report(nil) }
	var stdin io.Reader
	if argv.stdin != nil {
		stdin = bytes.NewReader(argv.stdin)
	}
	err = e.exec(ctx, pod, argv.cmd, stdin, stdout, stderr)
	report(err)
	return err
}

// exec streams cmd in pod without the breaker, with stdin (nil: none).
func (e *Executor) exec(ctx context.Context, pod *corev1.Pod, cmd []string, stdin io.Reader, stdout, stderr io.Writer) error {
	req := e.core.execRequest(pod, &corev1.PodExecOptions{
		Container: e.container(pod), Command: cmd, Stdin: stdin != nil, Stdout: true, Stderr: true,
	})
	ws, err := remotecommand.NewWebSocketExecutor(e.rest, "GET", req.URL().String())
	if err != nil {
		return err
	}
	spdy, err := remotecommand.NewSPDYExecutor(e.rest, "POST", req.URL())
	if err != nil {
		return err
	}
	// An API server without WebSocket exec refuses the upgrade; one that
	// is down (5xx) will not do better over SPDY.
	ex, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return (httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)) && !apiDown(err)
	})
	if err != nil {
		return err
	}
	return ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: stdin, Stdout: stdout, Stderr: stderr})
}

// container is the container commands run in.
func (e *Executor) container(pod *corev1.Pod) string {
	if e.cfg.Container != "" {
		return e.cfg.Container
	}
	return pod.Spec.Containers[0].Name
}

// kill stops the process group recorded in run with a second exec.
func (e *Executor) kill(ctx context.Context, pod *corev1.Pod, run string) error {
	tenths := int((e.cfg.KillGrace + 99*time.Millisecond) / (100 * time.Millisecond))
	ctx, cancel := context.WithTimeout(ctx, e.cfg.KillGrace+15*time.Second)
	defer cancel()
	cmd := []string{"sh", "-c", stopScript, "rdev", run, strconv.Itoa(tenths)}
	var out strings.Builder
	err := e.call(ctx, "stop command", func(ctx context.Context) error {
		return e.exec(ctx, pod, cmd, nil, &out, &out)
	})
	if err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(out.String()))
	}
	return nil
}

// guardWriter passes writes to w until w fails or close is called. After
// a failure it reports the error once and swallows what follows, so the
// exec stream keeps draining while the command is stopped; after close it
// swallows everything, so w is never used once Exec returned.
type guardWriter struct {
	mu     sync.Mutex
	w      io.Writer
	err    error
	closed bool
	fail   func(error)
}

func (g *guardWriter) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed || g.err != nil {
		return len(p), nil
	}
	if _, err := g.w.Write(p); err != nil {
		g.err = err
		g.fail(err)
	}
	return len(p), nil
}

func (g *guardWriter) failed() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

func (g *guardWriter) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

// headerWriter strips the wrapper's header line from stdout and passes the
// rest on.
type headerWriter struct {
	w        io.Writer
	buf      []byte
	done     bool
	ok       bool
	why      string
	seen     chan struct{}
	onHeader func()
	mu       sync.Mutex
}

// maxHeader bounds the header line; a longer one is not the wrapper's.
const maxHeader = 4096

func (h *headerWriter) Write(p []byte) (int, error) {
	h.mu.Lock()
	if h.done {
		h.mu.Unlock()
		return h.w.Write(p)
	}
	n := len(p)
	i := bytes.IndexByte(p, '\n')
	if i < 0 {
		h.buf = append(h.buf, p...)
		if len(h.buf) > maxHeader {
			h.finish("")
		}
		h.mu.Unlock()
		return n, nil
	}
	h.buf = append(h.buf, p[:i]...)
	h.finish(string(h.buf))
	h.buf = nil
	rest := p[i+1:]
	h.mu.Unlock()
	if len(rest) > 0 {
		if _, err := h.w.Write(rest); err != nil {
			return n, err
		}
	}
	return n, nil
}

// finish records the header line; h.mu is held.
func (h *headerWriter) finish(line string) {
	h.done = true
	switch {
	case line == "\x1erdev:ok":
		h.ok = true
	case strings.HasPrefix(line, "\x1erdev:error:"):
		h.why = strings.TrimPrefix(line, "\x1erdev:error:")
	default:
		h.why = "unexpected output before the command started"
	}
	close(h.seen)
	if h.ok && h.onHeader != nil {
		h.onHeader()
	}
}

// result reports whether the command started and, when the wrapper
// refused to start it, why (wrapping executor.ErrStart).
func (h *headerWriter) result() (started bool, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.done {
		return false, nil
	}
	if !h.ok {
		return false, fmt.Errorf("%w: %s", executor.ErrStart, h.why)
	}
	return true, nil
}
