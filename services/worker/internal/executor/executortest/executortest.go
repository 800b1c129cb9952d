// Package executortest is the conformance suite of executor.Executor. Every
// adapter runs Run against itself, so the job runner can rely on the same
// contract whichever adapter runs a job.
//
// The suite runs only POSIX tools (sh, sleep, yes, head, printf, mkdir, pwd,
// sed, echo, cksum, wc) inside the adapter's workspace, and observes processes through
// the executor itself, so it works where the commands run elsewhere than the
// test, in a pod for instance. Processes are checked through /proc when the
// command's environment has it.
package executortest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/services/worker/internal/executor"
)

// execLimit bounds every Exec of the suite, so that a hanging adapter fails
// the test instead of stalling it.
const execLimit = 60 * time.Second

// Run runs the conformance suite against the executors newExecutor returns,
// one per subtest. Subtests run in parallel, each in a project of its own;
// newExecutor should give each its own workspace root too (t.TempDir), and
// its KillGrace (or equivalent) should be short, as some subtests wait for it.
func Run(t *testing.T, newExecutor func(t *testing.T) executor.Executor) {
	t.Helper()
	for _, tc := range []struct {
		name string
		test func(t *testing.T, s *suite)
	}{
		{"StdoutInOrder", testStdoutInOrder},
		{"StdoutAndStderrSeparate", testStdoutAndStderrSeparate},
		{"MergeStderrKeepsOrder", testMergeStderrKeepsOrder},
		{"ExitCodes", testExitCodes},
		{"ExitCodeOfSignal", testExitCodeOfSignal},
		{"NoShell", testNoShell},
		{"Env", testEnv},
		{"SecretEnv", testSecretEnv},
		{"WorkDir", testWorkDir},
		{"WorkDirRejected", testWorkDirRejected},
		{"CommandNotStartable", testCommandNotStartable},
		{"DeadlineStopsCommandAndChildren", testDeadlineStopsCommandAndChildren},
		{"CancelWrapsCause", testCancelWrapsCause},
		{"CancelKillsProcessesIgnoringTerm", testCancelKillsProcessesIgnoringTerm},
		{"ContextDoneBeforeStart", testContextDoneBeforeStart},
		{"BackgroundChildHoldingStdout", testBackgroundChildHoldingStdout},
		{"WriterErrorStopsCommand", testWriterErrorStopsCommand},
		{"HugeOutput", testHugeOutput},
		{"BinaryOutput", testBinaryOutput},
		{"ConcurrentExecs", testConcurrentExecs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.test(t, setup(t, newExecutor))
		})
	}
}

// suite is what a subtest works with: an executor and a project of its own.
type suite struct {
	ex      executor.Executor
	project string
}

func setup(t *testing.T, newExecutor func(t *testing.T) executor.Executor) *suite {
	t.Helper()
	return &suite{
		ex:      newExecutor(t),
		project: fmt.Sprintf("conformance-%016x", rand.Uint64()),
	}
}

// spec returns a Spec for command in the subtest's project.
func (s *suite) spec(command ...string) executor.Spec {
	return executor.Spec{JobID: "job-" + s.project, Project: s.project, Command: command}
}

// result is what one Exec returned and printed.
type result struct {
	code           int
	err            error
	stdout, stderr *recorder
}

// exec runs spec with a bounded context, recording its output.
func (s *suite) exec(t *testing.T, spec executor.Spec) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), execLimit)
	defer cancel()
	return s.execCtx(t, ctx, spec, newRecorder(t), newRecorder(t))
}

// execCtx runs spec under ctx, failing the test if Exec does not return
// within execLimit (ctx may never end by itself). It may be called from any
// goroutine.
func (s *suite) execCtx(t *testing.T, ctx context.Context, spec executor.Spec, stdout, stderr *recorder) result {
	t.Helper()
	done := make(chan result, 1)
	go func() {
		code, err := s.ex.Exec(ctx, spec, stdout, stderr)
		stdout.close()
		stderr.close()
		done <- result{code: code, err: err, stdout: stdout, stderr: stderr}
	}()
	timer := time.NewTimer(execLimit + 10*time.Second)
	defer timer.Stop()
	select {
	case r := <-done:
		if r.err != nil && r.code != -1 {
			t.Errorf("Exec(%q) = %d, %v: want exit code -1 with an error", spec.Command, r.code, r.err)
		}
		return r
	case <-timer.C:
		t.Errorf("Exec(%q) did not return", spec.Command)
		return result{code: -1, err: errors.New("exec did not return"), stdout: stdout, stderr: stderr}
	}
}

// ok runs spec and fails the test unless it exits without an error.
func (s *suite) ok(t *testing.T, spec executor.Spec) result {
	t.Helper()
	r := s.exec(t, spec)
	if r.err != nil {
		t.Fatalf("Exec(%q): %v (stderr %q)", spec.Command, r.err, r.stderr.String())
	}
	return r
}

func testStdoutInOrder(t *testing.T, s *suite) {
	const n = 5000
	r := s.ok(t, s.spec("sh", "-c", `i=1; while [ $i -le `+strconv.Itoa(n)+` ]; do echo "line $i"; i=$((i+1)); done`))
	var want strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	if got := r.stdout.String(); got != want.String() {
		t.Fatalf("stdout out of order or incomplete: %d bytes, want %d", len(got), want.Len())
	}
	if r.code != 0 {
		t.Fatalf("exit code %d, want 0", r.code)
	}
}

func testStdoutAndStderrSeparate(t *testing.T, s *suite) {
	r := s.ok(t, s.spec("sh", "-c", `echo out1; echo err1 >&2; echo out2; echo err2 >&2`))
	if got := r.stdout.String(); got != "out1\nout2\n" {
		t.Errorf("stdout = %q", got)
	}
	if got := r.stderr.String(); got != "err1\nerr2\n" {
		t.Errorf("stderr = %q", got)
	}
}

// With MergeStderr the command's stderr joins its stdout where it runs,
// so lines written in turn to each arrive on stdout in that order. Many
// turns make a merge done after the fact (two streams joined by the
// reader) show up as reordered lines.
func testMergeStderrKeepsOrder(t *testing.T, s *suite) {
	const n = 200
	spec := s.spec("sh", "-c", `i=1; while [ $i -le `+strconv.Itoa(n)+` ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done; exit 3`)
	spec.MergeStderr = true
	r := s.ok(t, spec)
	var want strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&want, "out %d\nerr %d\n", i, i)
	}
	if got := r.stdout.String(); got != want.String() {
		t.Errorf("merged stdout is not the lines in the order written: %d bytes, want %d; starts %.80q", len(got), want.Len(), got)
	}
	if got := r.stderr.String(); got != "" {
		t.Errorf("stderr = %.80q, want nothing", got)
	}
	if r.code != 3 {
		t.Errorf("exit code %d, want 3", r.code)
	}
}

func testExitCodes(t *testing.T, s *suite) {
	for _, want := range []int{0, 1, 3, 255} {
		r := s.ok(t, s.spec("sh", "-c", "exit "+strconv.Itoa(want)))
		if r.code != want {
			t.Errorf("exit %d: got exit code %d", want, r.code)
		}
	}
}

func testExitCodeOfSignal(t *testing.T, s *suite) {
	for sig, want := range map[string]int{"TERM": 128 + 15, "KILL": 128 + 9} {
		r := s.ok(t, s.spec("sh", "-c", "kill -"+sig+" $$"))
		if r.code != want {
			t.Errorf("killed by SIG%s: got exit code %d, want %d", sig, r.code, want)
		}
	}
}

func testNoShell(t *testing.T, s *suite) {
	r := s.ok(t, s.spec("echo", "$HOME", "a;b", "*", "`x`"))
	if got, want := r.stdout.String(), "$HOME a;b * `x`\n"; got != want {
		t.Fatalf("stdout = %q, want %q (arguments must not go through a shell)", got, want)
	}
}

func testEnv(t *testing.T, s *suite) {
	spec := s.spec("sh", "-c", `printf '%s|%s|%s' "$RDEV_ONE" "$RDEV_TWO" "$HOME"`)
	spec.Env = map[string]string{"RDEV_ONE": "one two", "RDEV_TWO": "=x'\"", "HOME": "/rdev/home"}
	r := s.ok(t, spec)
	if got, want := r.stdout.String(), `one two|=x'"|/rdev/home`; got != want {
		t.Fatalf("stdout = %q, want %q", got, want)
	}
}

// testSecretEnv checks that secret values reach the command's environment
// byte for byte (newlines, quotes, $, backslashes, printf escapes, bytes
// that are not UTF-8), over Env of the same name, and that the command
// gets no stdin whichever way the adapter delivers them. The command
// prints checksums, not values: the values stay out of test output.
func testSecretEnv(t *testing.T, s *suite) {
	rnd := rand.New(rand.NewPCG(1, 2))
	big := make([]byte, 32<<10)
	for i := range big {
		big[i] = byte(1 + rnd.IntN(255)) // no NUL
	}
	secrets := map[string]string{
		"RDEV_SECRET_A": "line one\nline 'two' \"three\"\n",
		"RDEV_SECRET_B": "$HOME ${X:-y} $(id) `id` \\ \\n \\c \\0101 %s %b\\",
		"RDEV_SECRET_C": "\n",
		"RDEV_SECRET_D": "  spaced\t\r ",
		"RDEV_SECRET_E": "héllo ✓",
		"RDEV_SECRET_F": "secret wins",
		"RDEV_SECRET_G": string(big),
	}
	names := slices.Sorted(maps.Keys(secrets))
	var script, want strings.Builder
	for _, k := range names {
		fmt.Fprintf(&script, `printf '%%s' "$%s" | cksum; `, k)
		fmt.Fprintf(&want, "%s\n", cksum([]byte(secrets[k])))
	}
	script.WriteString(`wc -c`) // the command's stdin: empty
	want.WriteString("0\n")
	spec := s.spec("sh", "-c", script.String())
	spec.Env = map[string]string{"RDEV_SECRET_F": "plain loses", "RDEV_PLAIN": "p"}
	spec.SecretEnv = secrets
	r := s.ok(t, spec)
	var got strings.Builder
	for l := range strings.Lines(r.stdout.String()) {
		got.WriteString(strings.Join(strings.Fields(l), " ") + "\n")
	}
	if got.String() != want.String() {
		t.Fatalf("checksums of %v, then the size of stdin:\n%s\nwant\n%s", names, got.String(), want.String())
	}
}

// cksum is POSIX cksum's output for b: the CRC-32 (polynomial 0x04C11DB7,
// most significant bit first) of b followed by its length, and the length.
func cksum(b []byte) string {
	var crc uint32
	add := func(c byte) {
		crc ^= uint32(c) << 24
		for range 8 {
			if crc&0x80000000 != 0 {
				crc = crc<<1 ^ 0x04C11DB7
			} else {
				crc <<= 1
			}
		}
	}
	for _, c := range b {
		add(c)
	}
	for n := len(b); n > 0; n >>= 8 {
		add(byte(n))
	}
	return fmt.Sprintf("%d %d", ^crc, len(b))
}

func testWorkDir(t *testing.T, s *suite) {
	s.ok(t, s.spec("mkdir", "-p", "sub/dir"))
	root := strings.TrimSpace(s.ok(t, s.spec("pwd", "-P")).stdout.String())
	spec := s.spec("pwd", "-P")
	spec.WorkDir = "sub/dir"
	got := strings.TrimSpace(s.ok(t, spec).stdout.String())
	if want := strings.TrimSuffix(root, "/") + "/sub/dir"; got != want {
		t.Fatalf("pwd in WorkDir sub/dir = %q, want %q", got, want)
	}
	spec.WorkDir = "sub/./dir/../dir/"
	if got2 := strings.TrimSpace(s.ok(t, spec).stdout.String()); got2 != got {
		t.Fatalf("pwd in WorkDir %q = %q, want %q", spec.WorkDir, got2, got)
	}
}

func testWorkDirRejected(t *testing.T, s *suite) {
	s.ok(t, s.spec("sh", "-c", `mkdir -p sub && : > file`))
	for _, dir := range []string{"..", "../x", "sub/../../x", "no/such/dir", "file"} {
		spec := s.spec("sh", "-c", "echo ran")
		spec.WorkDir = dir
		r := s.exec(t, spec)
		if !errors.Is(r.err, executor.ErrStart) {
			t.Errorf("WorkDir %q: err = %v, want ErrStart", dir, r.err)
		}
		if r.stdout.Len() != 0 {
			t.Errorf("WorkDir %q: the command ran", dir)
		}
	}
}

func testCommandNotStartable(t *testing.T, s *suite) {
	s.ok(t, s.spec("sh", "-c", `printf 'echo ran\n' > notexec`))
	for name, cmd := range map[string][]string{
		"not found":      {"rdev-conformance-no-such-command"},
		"not executable": {"./notexec"},
		"missing path":   {"./no-such-file"},
		"empty":          nil,
	} {
		r := s.exec(t, s.spec(cmd...))
		if !errors.Is(r.err, executor.ErrStart) || r.code != -1 {
			t.Errorf("%s: Exec = %d, %v; want -1 and ErrStart", name, r.code, r.err)
		}
	}
}

func testDeadlineStopsCommandAndChildren(t *testing.T, s *suite) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	t.Cleanup(cancel)
	r := s.execCtx(t, ctx, s.spec("sh", "-c", `sleep 1000 & echo $!; wait`), newRecorder(t), newRecorder(t))
	if !errors.Is(r.err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want one wrapping context.DeadlineExceeded", r.err)
	}
	s.assertGone(t, r.stdout.pid(t))
}

func testCancelWrapsCause(t *testing.T, s *suite) {
	ctx, cancel := context.WithCancelCause(t.Context())
	t.Cleanup(func() { cancel(nil) })
	cause := errors.New("job cancelled by its owner")
	stdout := newRecorder(t)
	go func() {
		// Cancel once the child has started, so that stopping must reach it.
		select {
		case <-stdout.newline:
			cancel(cause)
		case <-ctx.Done():
		}
	}()
	r := s.execCtx(t, ctx, s.spec("sh", "-c", `sleep 1000 & echo $!; wait`), stdout, newRecorder(t))
	if !errors.Is(r.err, cause) {
		t.Fatalf("err = %v, want one wrapping the cause", r.err)
	}
	s.assertGone(t, r.stdout.pid(t))
}

func testCancelKillsProcessesIgnoringTerm(t *testing.T, s *suite) {
	ctx, cancel := context.WithCancelCause(t.Context())
	t.Cleanup(func() { cancel(nil) })
	stdout := newRecorder(t)
	go func() {
		select {
		case <-stdout.newline:
			cancel(errors.New("stop"))
		case <-ctx.Done():
		}
	}()
	// An ignored signal stays ignored across exec, so sleep ignores TERM too.
	r := s.execCtx(t, ctx, s.spec("sh", "-c", `trap '' TERM; sleep 1000 & echo $!; wait`), stdout, newRecorder(t))
	if r.err == nil {
		t.Fatal("Exec returned no error after cancel")
	}
	s.assertGone(t, r.stdout.pid(t))
}

func testContextDoneBeforeStart(t *testing.T, s *suite) {
	ctx, cancel := context.WithCancelCause(t.Context())
	cause := errors.New("cancelled early")
	cancel(cause)
	r := s.execCtx(t, ctx, s.spec("sh", "-c", "echo ran"), newRecorder(t), newRecorder(t))
	if !errors.Is(r.err, cause) {
		t.Fatalf("err = %v, want one wrapping the cause", r.err)
	}
	if r.stdout.Len() != 0 {
		t.Fatal("the command ran")
	}
}

func testBackgroundChildHoldingStdout(t *testing.T, s *suite) {
	// The child inherits stdout and stderr and outlives the command.
	r := s.ok(t, s.spec("sh", "-c", `sleep 1000 & echo $!; echo done >&2`))
	if r.code != 0 || r.stderr.String() != "done\n" {
		t.Fatalf("Exec = %d, stderr %q; want 0, done", r.code, r.stderr.String())
	}
	s.assertGone(t, r.stdout.pid(t))
}

func testWriterErrorStopsCommand(t *testing.T, s *suite) {
	ctx, cancel := context.WithTimeout(t.Context(), execLimit)
	t.Cleanup(cancel)
	boom := errors.New("publish failed")
	stdout := newRecorder(t)
	stdout.failAfter(1<<20, boom)
	r := s.execCtx(t, ctx, s.spec("yes", "endless output"), stdout, newRecorder(t))
	if !errors.Is(r.err, boom) {
		t.Fatalf("err = %v, want one wrapping the writer's error", r.err)
	}
}

func testHugeOutput(t *testing.T, s *suite) {
	const size = 50 << 20
	const pattern = "0123456789abcd\n" // 15 bytes, so writes do not align with it
	stdout := newRecorder(t)
	stdout.expect([]byte(pattern))
	ctx, cancel := context.WithTimeout(t.Context(), execLimit)
	t.Cleanup(cancel)
	r := s.execCtx(t, ctx, s.spec("sh", "-c", `yes 0123456789abcd | head -c `+strconv.Itoa(size)), stdout, newRecorder(t))
	if r.err != nil || r.code != 0 {
		t.Fatalf("Exec = %d, %v (stderr %q)", r.code, r.err, r.stderr.String())
	}
	if n, bad := stdout.checked(); n != size || bad >= 0 {
		t.Fatalf("stdout: %d bytes, first wrong byte at %d; want %d bytes, none wrong", n, bad, size)
	}
}

func testBinaryOutput(t *testing.T, s *suite) {
	var format strings.Builder
	want := make([]byte, 0, 512)
	for range 2 {
		for b := range 256 {
			fmt.Fprintf(&format, `\%03o`, b)
			want = append(want, byte(b))
		}
	}
	r := s.ok(t, s.spec("sh", "-c", `printf "$1"; printf "$1" >&2`, "sh", format.String()))
	if got := r.stdout.Bytes(); !bytes.Equal(got, want) {
		t.Errorf("stdout = %x\nwant %x", got, want)
	}
	if got := r.stderr.Bytes(); !bytes.Equal(got, want) {
		t.Errorf("stderr = %x\nwant %x", got, want)
	}
}

func testConcurrentExecs(t *testing.T, s *suite) {
	const n = 4
	var wg sync.WaitGroup
	results := make([]result, n)
	for i := range n {
		wg.Go(func() {
			results[i] = s.exec(t, s.spec("sh", "-c", `for i in 1 2 3; do echo "$1"; echo "$1" >&2; done; exit "$1"`, "sh", strconv.Itoa(i)))
		})
	}
	wg.Wait()
	for i, r := range results {
		want := strings.Repeat(strconv.Itoa(i)+"\n", 3)
		if r.err != nil || r.code != i || r.stdout.String() != want || r.stderr.String() != want {
			t.Errorf("exec %d: %d, %v, stdout %q, stderr %q", i, r.code, r.err, r.stdout.String(), r.stderr.String())
		}
	}
}

// assertGone waits, within a bound, until process pid (in the command's
// environment) is no longer running; a zombie counts as gone, since whether
// it is reaped depends on the environment's init.
func (s *suite) assertGone(t *testing.T, pid int) {
	t.Helper()
	const script = `[ -d /proc/self ] || { kill -0 "$1" 2>/dev/null; exit $?; }
state=$(sed -n 's/^State:[[:space:]]*//p' "/proc/$1/status" 2>/dev/null)
case $state in ""|Z*|X*) exit 1 ;; esac
exit 0`
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		r := s.ok(t, s.spec("sh", "-c", script, "sh", strconv.Itoa(pid)))
		if r.code != 0 {
			return
		}
		select {
		case <-deadline.C:
			t.Fatalf("process %d still running after Exec returned", pid)
		case <-tick.C:
		}
	}
}

// recorder is an io.Writer that keeps what it is given and checks that the
// executor uses it as the contract says: never from two goroutines at once,
// never after Exec has returned.
type recorder struct {
	t       *testing.T
	mu      sync.Mutex
	buf     bytes.Buffer
	writing atomic.Bool
	closed  atomic.Bool
	// newline is closed on the first '\n' written.
	newline     chan struct{}
	sawNewline  bool
	failAt      int // fail with failErr once this many bytes were written; 0: never
	failErr     error
	pattern     []byte // when set, bytes are checked against it, not kept
	n, firstBad int
}

func newRecorder(t *testing.T) *recorder {
	return &recorder{t: t, newline: make(chan struct{}), firstBad: -1}
}

// failAfter makes Write fail with err once n bytes have been written.
func (r *recorder) failAfter(n int, err error) { r.failAt, r.failErr = n, err }

// expect makes the recorder check that the output repeats pattern, counting
// bytes instead of keeping them.
func (r *recorder) expect(pattern []byte) { r.pattern = pattern }

func (r *recorder) Write(p []byte) (int, error) {
	if !r.writing.CompareAndSwap(false, true) {
		r.t.Error("writer used by two goroutines at once")
	}
	defer r.writing.Store(false)
	if r.closed.Load() {
		r.t.Error("writer used after Exec returned")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failAt > 0 && r.n >= r.failAt {
		return 0, r.failErr
	}
	if r.pattern != nil {
		r.check(p)
	} else {
		r.buf.Write(p)
	}
	r.n += len(p)
	if !r.sawNewline && bytes.IndexByte(p, '\n') >= 0 {
		r.sawNewline = true
		close(r.newline)
	}
	return len(p), nil
}

func (r *recorder) check(p []byte) {
	if r.firstBad >= 0 {
		return
	}
	for i := 0; i < len(p); {
		off := (r.n + i) % len(r.pattern)
		k := min(len(p)-i, len(r.pattern)-off)
		if !bytes.Equal(p[i:i+k], r.pattern[off:off+k]) {
			r.firstBad = r.n + i
			return
		}
		i += k
	}
}

// close marks Exec as returned.
func (r *recorder) close() { r.closed.Store(true) }

func (r *recorder) Bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.buf.Bytes())
}

func (r *recorder) String() string { return string(r.Bytes()) }

func (r *recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// checked returns the bytes counted and the offset of the first one that
// broke the pattern, or -1.
func (r *recorder) checked() (n, firstBad int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n, r.firstBad
}

// pid parses the first line of the output as a process id.
func (r *recorder) pid(t *testing.T) int {
	t.Helper()
	first, _, _ := strings.Cut(r.String(), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		t.Fatalf("want a process id on the first line of stdout, got %q", r.String())
	}
	return pid
}
