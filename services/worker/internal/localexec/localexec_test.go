package localexec_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/services/worker/internal/executor"
	"github.com/rdev-dev/rdev/services/worker/internal/executor/executortest"
	"github.com/rdev-dev/rdev/services/worker/internal/localexec"
)

// grace is short so that tests waiting for it stay fast.
const grace = 300 * time.Millisecond

func newExecutor(t *testing.T, cfg localexec.Config) *localexec.Executor {
	t.Helper()
	if cfg.Root == "" {
		cfg.Root = t.TempDir()
	}
	if cfg.KillGrace == 0 {
		cfg.KillGrace = grace
	}
	ex, err := localexec.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return ex
}

func TestConformance(t *testing.T) {
	t.Parallel()
	executortest.Run(t, func(t *testing.T) executor.Executor {
		return newExecutor(t, localexec.Config{})
	})
}

func exec(t *testing.T, ex *localexec.Executor, spec executor.Spec) (code int, stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code, err = ex.Exec(ctx, spec, &out, &errOut)
	return code, out.String(), errOut.String(), err
}

func TestWorkspaceLayoutAndEnvironment(t *testing.T) {
	t.Parallel()
	root := filepath.Join(t.TempDir(), "workspaces")
	ex := newExecutor(t, localexec.Config{Root: root})
	_, stdout, _, err := exec(t, ex, executor.Spec{Project: "demo", Command: []string{"env"}})
	if err != nil {
		t.Fatal(err)
	}
	ws := filepath.Join(root, "demo")
	fi, err := os.Stat(ws)
	if err != nil || fi.Mode().Perm() != 0o750 {
		t.Fatalf("workspace %s: %v, %v; want a 0o750 directory", ws, fi, err)
	}
	env := strings.Fields(stdout)
	for _, want := range []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "HOME=" + ws} {
		if !slices.Contains(env, want) {
			t.Errorf("environment %q lacks %q", env, want)
		}
	}
	for _, kv := range env {
		if !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, "LANG=") &&
			!strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, "PWD=") {
			t.Errorf("unexpected variable %q: the worker's environment leaked", kv)
		}
	}
}

func TestCommandIsLookedUpInItsOwnPath(t *testing.T) {
	t.Parallel()
	bin := t.TempDir()
	script := filepath.Join(bin, "rdev-hello")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho hello from $0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ex := newExecutor(t, localexec.Config{BaseEnv: []string{"PATH=/usr/bin:/bin"}})
	spec := executor.Spec{Project: "demo", Command: []string{"rdev-hello"}}
	if _, _, _, err := exec(t, ex, spec); !errors.Is(err, executor.ErrStart) {
		t.Fatalf("before PATH has %s: err = %v, want ErrStart", bin, err)
	}
	spec.Env = map[string]string{"PATH": bin + ":/usr/bin:/bin"}
	if _, stdout, _, err := exec(t, ex, spec); err != nil || stdout != "hello from "+script+"\n" {
		t.Fatalf("Exec = %q, %v", stdout, err)
	}
	// A relative PATH entry would resolve inside the workspace: skipped.
	spec.Env = map[string]string{"PATH": "."}
	if _, _, _, err := exec(t, ex, spec); !errors.Is(err, executor.ErrStart) {
		t.Fatalf("relative PATH: err = %v, want ErrStart", err)
	}
}

func TestSpecRejected(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	ex := newExecutor(t, localexec.Config{Root: root})
	if err := os.MkdirAll(filepath.Join(root, "demo"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/", filepath.Join(root, "demo", "out")); err != nil {
		t.Fatal(err)
	}
	for name, spec := range map[string]executor.Spec{
		"project not a label":  {Project: "../etc", Command: []string{"true"}},
		"empty project":        {Project: "", Command: []string{"true"}},
		"absolute work dir":    {Project: "demo", Command: []string{"true"}, WorkDir: "/tmp"},
		"symlink out":          {Project: "demo", Command: []string{"true"}, WorkDir: "out/tmp"},
		"env name with =":      {Project: "demo", Command: []string{"true"}, Env: map[string]string{"A=B": "c"}},
		"empty env name":       {Project: "demo", Command: []string{"true"}, Env: map[string]string{"": "c"}},
		"directory as command": {Project: "demo", Command: []string{"/tmp"}},
	} {
		if code, _, _, err := exec(t, ex, spec); !errors.Is(err, executor.ErrStart) || code != -1 {
			t.Errorf("%s: Exec = %d, %v; want -1, ErrStart", name, code, err)
		}
	}
}

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]localexec.Config{
		"no root":        {},
		"negative grace": {Root: t.TempDir(), KillGrace: -time.Second},
		"bad base env":   {Root: t.TempDir(), BaseEnv: []string{"PATH"}},
	} {
		if _, err := localexec.New(cfg); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
}

// A process that leaves the command's group (setsid) escapes the group kill;
// holding stdout, it must still not keep Exec past KillGrace.
func TestEscapedChildHoldingStdoutDoesNotHang(t *testing.T) {
	t.Parallel()
	ex := newExecutor(t, localexec.Config{})
	pidfile := filepath.Join(t.TempDir(), "pid")
	start := time.Now()
	code, stdout, _, err := exec(t, ex, executor.Spec{
		Project: "demo",
		// The command exits once the child has left its group, which the
		// pid file says.
		Command: []string{"sh", "-c", `setsid sh -c 'echo $$ > "$1.tmp"; mv "$1.tmp" "$1"; exec sleep 1000' sh "$1" &
while [ ! -s "$1" ]; do sleep 0.01; done
echo main`, "sh", pidfile},
	})
	// The escaped sleep is ours to clean up, once it has written its pid.
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidfile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	if err != nil || code != 0 || stdout != "main\n" {
		t.Fatalf("Exec = %d, %q, %v", code, stdout, err)
	}
	if elapsed := time.Since(start); elapsed > 10*grace {
		t.Fatalf("Exec took %v, want about KillGrace (%v)", elapsed, grace)
	}
}

// A writer slower than KillGrace must still receive all the output the
// command printed before it exited.
func TestSlowWriterIsNotCutOff(t *testing.T) {
	t.Parallel()
	ex := newExecutor(t, localexec.Config{KillGrace: 50 * time.Millisecond})
	w := &slowWriter{delay: 100 * time.Millisecond}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	// Four pipes full: the command exits while the writer is busy and a pipe
	// full of output still waits to be read.
	const size = 4 * 65536
	code, err := ex.Exec(ctx, executor.Spec{
		Project: "demo",
		Command: []string{"head", "-c", strconv.Itoa(size), "/dev/zero"},
	}, w, &bytes.Buffer{})
	if err != nil || code != 0 || w.n != size {
		t.Fatalf("Exec = %d, %v; wrote %d bytes, want %d", code, err, w.n, size)
	}
	if w.writes < 4 {
		t.Fatalf("%d writes: the test did not make the writer slower than the command", w.writes)
	}
}

// slowWriter takes delay per Write, longer than the executor's KillGrace.
type slowWriter struct {
	delay  time.Duration
	n      int
	writes int
}

func (w *slowWriter) Write(p []byte) (int, error) {
	timer := time.NewTimer(w.delay)
	defer timer.Stop()
	<-timer.C // stands for a slow publisher, not for synchronisation
	w.n += len(p)
	w.writes++
	return len(p), nil
}

// Exec waits for the processes it kills, even those that do not hold its
// output, so none is running when it returns.
func TestLeftoverProcessesAreDeadWhenExecReturns(t *testing.T) {
	t.Parallel()
	ex := newExecutor(t, localexec.Config{})
	for range 5 {
		_, stdout, _, err := exec(t, ex, executor.Spec{
			Project: "demo",
			Command: []string{"sh", "-c", `sleep 1000 >/dev/null 2>&1 & echo $!`},
		})
		if err != nil {
			t.Fatal(err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(stdout))
		if err != nil {
			t.Fatalf("stdout %q: %v", stdout, err)
		}
		if running(pid) {
			t.Fatalf("process %d still running when Exec returned", pid)
		}
	}
}

// running reports whether pid is alive and not a zombie (this machine's init
// may never reap it).
func running(pid int) bool {
	if errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
		return false
	}
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(status)) {
		if state, ok := strings.CutPrefix(line, "State:"); ok {
			state = strings.TrimSpace(state)
			return !strings.HasPrefix(state, "Z") && !strings.HasPrefix(state, "X")
		}
	}
	return true
}

// Home chooses HOME for every command (a shared login), and the base
// environment reaches the command; nothing else of the worker's does.
func TestHomeAndBaseEnv(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	ex := newExecutor(t, localexec.Config{Home: home, BaseEnv: []string{"PATH=/usr/bin:/bin", "ANTHROPIC_API_KEY=sk-test"}})
	_, stdout, _, err := exec(t, ex, executor.Spec{Project: "demo", Command: []string{"env"}})
	if err != nil {
		t.Fatal(err)
	}
	env := strings.Fields(stdout)
	for _, want := range []string{"PATH=/usr/bin:/bin", "ANTHROPIC_API_KEY=sk-test", "HOME=" + home} {
		if !slices.Contains(env, want) {
			t.Errorf("environment %q lacks %q", env, want)
		}
	}
	if _, err := localexec.New(localexec.Config{Root: t.TempDir(), Home: "relative"}); err == nil {
		t.Error("a relative Home was accepted")
	}
}

// A short command costs little memory of the worker's own: the relays'
// 64 KiB read buffers are reused, and its standard input is one /dev/null
// opened once. (Before, each command allocated two fresh buffers: 128 KiB.)
// Not parallel, so that other tests' allocations stay out of the count.
func TestShortCommandsAllocateLittle(t *testing.T) {
	ex := newExecutor(t, localexec.Config{})
	spec := executor.Spec{Project: "demo", Command: []string{"true"}}
	if _, _, _, err := exec(t, ex, spec); err != nil { // warm: the workspace, the buffers
		t.Fatal(err)
	}
	const runs = 50
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		if code, _, _, err := exec(t, ex, spec); err != nil || code != 0 {
			t.Fatalf("true: %d, %v", code, err)
		}
	}
	runtime.ReadMemStats(&after)
	limit := uint64(48 << 10)
	if raceDetector { // sync.Pool drops a quarter of what it is given, at random
		limit = 100 << 10
	}
	per := (after.TotalAlloc - before.TotalAlloc) / runs
	if per > limit {
		t.Fatalf("%d bytes allocated per command; want at most %d KiB", per, limit>>10)
	}
	t.Logf("%d bytes allocated per command", per)
}
