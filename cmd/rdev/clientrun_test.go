package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// cliProc is a running client command (`rdev run`, ...) of this test
// binary in child mode.
type cliProc struct {
	cmd            *exec.Cmd
	stdout, stderr *bufio.Reader
	errText        string // stderr, once the process ended
}

// startCLI starts rdev args with env added to this process's (and a
// config file of the test's own, so no user config is read).
func startCLI(t *testing.T, env []string, args ...string) *cliProc {
	t.Helper()
	return startCLIWithInput(t, env, nil, args...)
}

// startCLIWithInput is startCLI with in as rdev's standard input (nil: none).
func startCLIWithInput(t *testing.T, env []string, in io.Reader, args ...string) *cliProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Stdin = in
	cmd.Env = append(append(os.Environ(), childEnv+"=1", "RDEV_CONFIG="+filepath.Join(t.TempDir(), "config.yaml")), env...)
	out, err := cmd.StdoutPipe()
	must(t, err, "stdout pipe")
	errOut, err := cmd.StderrPipe()
	must(t, err, "stderr pipe")
	must(t, cmd.Start(), "start rdev %v", args)
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return &cliProc{cmd: cmd, stdout: bufio.NewReader(out), stderr: bufio.NewReader(errOut)}
}

// wait reads the rest of stdout and stderr and waits for the exit
// (bounded).
func (p *cliProc) wait(t *testing.T, within time.Duration) (stdout string, code int) {
	t.Helper()
	outc, errc := make(chan string, 1), make(chan string, 1)
	go func() { b, _ := io.ReadAll(p.stdout); outc <- string(b) }()
	go func() { b, _ := io.ReadAll(p.stderr); errc <- string(b) }()
	timeout := time.After(within)
	for range 2 {
		select {
		case stdout = <-outc:
		case p.errText = <-errc:
		case <-timeout:
			_ = p.cmd.Process.Kill()
			t.Fatalf("rdev %v did not exit within %s", p.cmd.Args[1:], within)
		}
	}
	err := p.cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("wait: %v", err)
	}
	return stdout, p.cmd.ProcessState.ExitCode()
}

// line reads one line of stdout (bounded by the test's timeout).
func (p *cliProc) line(t *testing.T) string {
	t.Helper()
	return readLine(t, p.stdout)
}

func readLine(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	l, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read a line of rdev's output: %v", err)
	}
	return strings.TrimSuffix(l, "\n")
}

// runCLI runs rdev args to its end and returns stdout, stderr and the
// exit code.
func runCLI(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	p := startCLI(t, env, args...)
	stdout, code = p.wait(t, time.Minute)
	return stdout, p.errText, code
}

// runOK runs rdev args to its end and returns its stdout; any exit but 0
// fails the test.
func runOK(t *testing.T, env []string, args ...string) string {
	t.Helper()
	out, stderr, code := runCLI(t, env, args...)
	if code != 0 {
		t.Fatalf("rdev %v: exit %d, %s", args, code, stderr)
	}
	return out
}

// detachedID is the job id a `run -d` style reply starts with.
func detachedID(t *testing.T, out string) string {
	t.Helper()
	f := strings.Fields(strings.SplitN(out, "\n", 2)[0])
	if len(f) != 2 || f[0] != "job:" {
		t.Fatalf("printed %q: want job: <id> first", out)
	}
	return f[1]
}

// serverEnv points the client at n with the admin key.
func serverEnv(n *node) []string {
	return []string{"RDEV_URL=" + n.http, "RDEV_API_KEY=" + adminKey}
}

// createProject creates project on n as admin.
func createProject(t *testing.T, n *node, project string) {
	t.Helper()
	if status, b := call(t, http.MethodPost, n.http+"/v1/projects", map[string]string{"id": project}); status != http.StatusCreated {
		t.Fatalf("create project %s: %d %s", project, status, b)
	}
}

// `rdev run` behaves like the command run locally: its stdout and stderr
// apart, its exit code; a timeout is 124, a refused submit 2, a missing
// server 1 with what to do.
func TestRunExitCodes(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	t.Parallel()
	n := startInProcess(t)
	createProject(t, n, "cli")
	must(t, os.MkdirAll(filepath.Join(n.dataDir, "workspaces", "cli", "sub"), 0o755), "workdir")
	env := serverEnv(n)
	for _, tc := range []struct {
		name           string
		env            []string
		args           []string
		stdout, stderr string // stderr: a substring
		code           int
	}{
		{"success", env, []string{"run", "-p", "cli", "--", "echo", "hi"}, "hi\n", "", 0},
		{"exit code and streams apart", env, []string{"run", "-p", "cli", "--", "sh", "-c", "echo out; echo err >&2; echo out2; exit 3"},
			"out\nout2\n", "err\n", 3},
		{"env and workdir", env, []string{"run", "-p", "cli", "-e", "A=1", "--env", "B=2", "--workdir", "sub", "--", "sh", "-c", "echo $A$B ${PWD##*/}"},
			"12 sub\n", "", 0},
		{"timed out", env, []string{"run", "-p", "cli", "--timeout", "1s", "--", "sleep", "30"}, "", "timed out", exitTimedOut},
		{"could not start", env, []string{"run", "-p", "cli", "--", "/no/such/command"}, "", "failed", exitLost},
		{"rejected", env, []string{"run", "-p", "nosuchproject", "--", "true"}, "", "project_not_found", exitRejected},
		{"bad key", []string{"RDEV_URL=" + n.http, "RDEV_API_KEY=wrong"}, []string{"run", "-p", "cli", "--", "true"}, "",
			"set RDEV_API_KEY or run `rdev context add`", 1},
		{"no server", nil, []string{"run", "-p", "cli", "--", "true"}, "", "set RDEV_URL", 1},
		{"server down", []string{fmt.Sprintf("RDEV_URL=http://127.0.0.1:%d", freePort(t)), "RDEV_API_KEY=k"}, []string{"run", "-p", "cli", "--", "true"}, "",
			"no rdev server answers there", 1},
		{"detach", env, []string{"run", "-p", "cli", "--detach", "--", "true"}, "job:", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := append([]string{"RDEV_URL=", "RDEV_API_KEY="}, tc.env...)
			stdout, stderr, code := runCLI(t, env, tc.args...)
			if code != tc.code || (tc.name != "detach" && stdout != tc.stdout) || !strings.Contains(stdout, tc.stdout) ||
				!strings.Contains(stderr, tc.stderr) || (tc.code == 0 && stderr != "") {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr with %q", code, stdout, stderr, tc.code, tc.stdout, tc.stderr)
			}
			if tc.name == "detach" && (!strings.Contains(stdout, "events: "+n.http+"/v1/streams/") || strings.Contains(stdout, adminKey)) {
				t.Fatalf("detach printed %q: want the job id and URLs, no key", stdout)
			}
		})
	}
}

// Ctrl-C cancels the job and waits for its end: exit 130, the job
// cancelled, its process gone.
func TestRunInterruptCancelsTheJob(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	t.Parallel()
	n := startInProcess(t)
	createProject(t, n, "cli")
	p := startCLI(t, serverEnv(n), "run", "-p", "cli", "--", "sh", "-c", "echo $$; exec sleep 60")
	pid, err := strconv.Atoi(p.line(t))
	must(t, err, "read the job's pid")
	must(t, p.cmd.Process.Signal(os.Interrupt), "interrupt")
	_, code := p.wait(t, 30*time.Second)
	if code != exitCancelled || !strings.Contains(p.errText, "cancelled") {
		t.Fatalf("exit %d, stderr %q: want %d and the job cancelled", code, p.errText, exitCancelled)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("the job's process %d is still there after rdev run ended: %v", pid, err)
	}
	var id string
	for _, f := range strings.Fields(p.errText) {
		if len(f) == 26 {
			id = f
		}
	}
	if st := getJob(t, n.http, id); st.Status != contracts.StatusCancelled {
		t.Fatalf("job %s is %s, want cancelled", id, st.Status)
	}
}

// A second Ctrl-C detaches: the job goes on, its id is printed.
func TestRunSecondInterruptDetaches(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	t.Parallel()
	n := startInProcess(t, "--kill-grace", "3s")
	createProject(t, n, "cli")
	// The job ignores SIGTERM, so the cancel takes the kill grace.
	p := startCLI(t, serverEnv(n), "run", "-p", "cli", "--", "sh", "-c", "trap '' TERM; echo up; sleep 30")
	p.line(t)
	must(t, p.cmd.Process.Signal(os.Interrupt), "interrupt")
	if l := readLine(t, p.stderr); !strings.Contains(l, "Ctrl-C again") {
		t.Fatalf("stderr %q after the first interrupt", l)
	}
	must(t, p.cmd.Process.Signal(os.Interrupt), "interrupt again")
	_, code := p.wait(t, 10*time.Second)
	if code != exitCancelled || !strings.Contains(p.errText, "detached; job ") {
		t.Fatalf("exit %d, stderr %q: want %d and detached", code, p.errText, exitCancelled)
	}
}

// The streamer restarts while `rdev run` follows a job: it resumes from
// the last event and prints every line once, in order.
func TestRunResumesAcrossStreamerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	t.Parallel()
	dataDir := t.TempDir()
	up := startProcess(t, upArgs(dataDir, "--without", "streamer")...)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	streamer := func() *node {
		return startProcess(t, "streamer", "--nats-url", up.nats, "--nats-nkey", up.seed("streamer"), "--http-addr", addr)
	}
	first := streamer()
	createProject(t, up, "resume")
	p := startCLI(t, append(serverEnv(up), "RDEV_STREAM_URL=http://"+addr), append([]string{"run", "-p", "resume", "--"}, gatedCommand...)...)
	var lines []string
	for len(lines) < 5 {
		lines = append(lines, p.line(t))
	}
	first.stop()
	streamer()
	touch(t, dataDir, "resume", "gate")
	rest, code := p.wait(t, time.Minute)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, p.errText)
	}
	lines = append(lines, strings.Split(strings.TrimSuffix(rest, "\n"), "\n")...)
	tail := lines[len(lines)-5:]
	for i, l := range lines[:len(lines)-5] {
		if l != fmt.Sprint("line", i+1) {
			t.Fatalf("line %d is %q: want line%d (a line repeated or missing)", i+1, l, i+1)
		}
	}
	if strings.Join(tail, ",") != "tail1,tail2,tail3,tail4,tail5" {
		t.Fatalf("last lines %q", tail)
	}
}
