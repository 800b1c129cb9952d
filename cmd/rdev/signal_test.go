package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// lines keeps a process's log and signals each write.
type lines struct {
	mu    sync.Mutex
	b     bytes.Buffer
	wrote chan struct{}
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case l.wrote <- struct{}{}:
	default:
	}
	return l.b.Write(p)
}

// waitFor waits until the log holds s.
func (l *lines) waitFor(t *testing.T, s string, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	for {
		l.mu.Lock()
		found := strings.Contains(l.b.String(), s)
		l.mu.Unlock()
		if found {
			return
		}
		select {
		case <-l.wrote:
		case <-deadline:
			t.Fatalf("the log never said %q:\n%s", s, l.String())
		}
	}
}

func (l *lines) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// A running job holds the drain after SIGINT, and the log says so; a
// second SIGINT ends the process at once, with a non-zero exit code.
func TestSecondSignalStopsAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	t.Parallel()
	cmd := exec.Command(os.Args[0], upArgs(t.TempDir(), "--drain-timeout", "5m")...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	logs := &lines{wrote: make(chan struct{}, 1)}
	cmd.Stderr = logs
	stdout, err := cmd.StdoutPipe()
	must(t, err, "stdout")
	must(t, cmd.Start(), "start rdev")
	exited := make(chan error, 1)
	waitErr := make(chan error, 1)
	go func() { err := cmd.Wait(); exited <- err; waitErr <- err }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-waitErr
	})
	n := readReady(t, stdout, exited)

	job := submit(t, n.http, "held", map[string]any{"command": []string{"sleep", "300"}})
	await.Within(t, 20*time.Second, "the job to run", func() bool {
		return getJob(t, n.http, job.JobID).Status == contracts.StatusRunning
	})
	must(t, cmd.Process.Signal(syscall.SIGINT), "first SIGINT")
	logs.waitFor(t, `component=worker for="1 running jobs"`, 20*time.Second)
	select {
	case err := <-waitErr:
		t.Fatalf("rdev exited (%v) while its job held the drain", err)
	default:
	}
	sent := time.Now()
	must(t, cmd.Process.Signal(syscall.SIGINT), "second SIGINT")
	select {
	case err := <-waitErr:
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Errorf("exit after a forced stop: %v, want a non-zero code", err)
		}
		waitErr <- err // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatalf("rdev still running 10s after the second SIGINT:\n%s", logs)
	}
	if took := time.Since(sent); took > 5*time.Second {
		t.Errorf("rdev took %s to exit after the second SIGINT", took)
	}
	logs.waitFor(t, "second interrupt", time.Second)
}
