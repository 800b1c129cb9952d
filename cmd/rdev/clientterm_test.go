package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// onTerminal runs rdev args with env added on a pseudo-terminal (stdin,
// stdout and stderr), as a user at a shell would, and returns what it
// wrote there once it exited 0.
func onTerminal(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), childEnv+"=1", "RDEV_CONFIG="+filepath.Join(t.TempDir(), "config.yaml"), "TERM=xterm"), env...)
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 120})
	must(t, err, "start rdev %v on a terminal", args)
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = tty.Close() })
	out := make(chan []byte, 1)
	go func() {
		var b bytes.Buffer
		_, _ = io.Copy(&b, tty) // ends with EIO once the process has exited
		out <- b.Bytes()
	}()
	select {
	case b := <-out:
		if err := cmd.Wait(); err != nil {
			t.Fatalf("rdev %v on a terminal: %v; it wrote %q", args, err, b)
		}
		return string(b)
	case <-time.After(time.Minute):
		t.Fatalf("rdev %v on a terminal did not end within a minute", args)
	}
	return ""
}

// On a terminal statuses are coloured and a batch shows its live
// progress; NO_COLOR set to anything turns both off.
func TestNoColorOnATerminal(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	t.Parallel()
	n := startInProcess(t)
	job := submit(t, n.http, "tty", map[string]any{"command": []string{"true"}})
	if st := waitFinal(t, n.http, job.JobID, 30*time.Second); st.Status != contracts.StatusSucceeded {
		t.Fatalf("job %s", st.Status)
	}
	batch := filepath.Join(t.TempDir(), "jobs.jsonl")
	must(t, os.WriteFile(batch, []byte(strings.Repeat(`{"command":["true"]}`+"\n", 3)), 0o644), "write batch")
	for _, noColor := range []string{"", "1"} {
		env := append(serverEnv(n), "NO_COLOR="+noColor)
		colour := noColor == ""
		out := onTerminal(t, env, "jobs", "get", job.JobID)
		if strings.Contains(out, "\x1b[32msucceeded\x1b[0m") != colour || (!colour && strings.Contains(out, "\x1b[")) {
			t.Errorf("jobs get on a terminal, NO_COLOR=%q: %q; want colours %v", noColor, out, colour)
		}
		out = onTerminal(t, env, "batch", "submit", "-p", "tty", "--follow", batch)
		if strings.Contains(out, "/3 done") != colour || !strings.Contains(out, "succeeded") {
			t.Errorf("batch submit --follow on a terminal, NO_COLOR=%q: %q; want the progress display %v and the summary", noColor, out, colour)
		}
	}
}
