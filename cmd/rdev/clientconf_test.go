package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// Contexts of the config file choose the server; RDEV_* variables and
// --context win over the current context; the file is private and the
// key never printed.
func TestClientContextsAndEnvironment(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	t.Parallel()
	n := startInProcess(t)
	createProject(t, n, "ctx")
	cfg := filepath.Join(t.TempDir(), "rdev", "config.yaml")
	noEnv := []string{"RDEV_URL=", "RDEV_API_KEY=", "RDEV_PROJECT=", "RDEV_CONTEXT=", "RDEV_CONFIG=" + cfg}
	cli := func(env []string, args ...string) (string, string, int) {
		t.Helper()
		return runCLI(t, append(append([]string{}, noEnv...), env...), args...)
	}
	// The key from standard input: out of the shell's history.
	add := exec.Command(os.Args[0], "context", "add", "good", "--url", n.http, "--api-key", "-", "-p", "ctx")
	add.Env = append(append(os.Environ(), childEnv+"=1"), noEnv...)
	add.Stdin = strings.NewReader(adminKey + "\n")
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("context add: %v %s", err, out)
	}
	if _, stderr, code := cli(nil, "context", "add", "broken", "--url", "http://127.0.0.1:1", "--api-key", "wrong"); code != 0 {
		t.Fatalf("context add: %d %s", code, stderr)
	}
	if st, err := os.Stat(cfg); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config file %v, %v: want mode 0600", st, err)
	}
	out, _, _ := cli(nil, "context", "ls")
	if strings.Contains(out, adminKey) || !strings.Contains(out, "* ") || !strings.Contains(out, "broken") {
		t.Fatalf("context ls printed %q: want both contexts, broken current, no key", out)
	}
	// The current context (broken) is used...
	if _, _, code := cli(nil, "run", "--", "true"); code != 1 {
		t.Fatalf("run on the broken context: exit %d, want 1", code)
	}
	// ...unless the environment or --context names another server.
	if out, stderr, code := cli([]string{"RDEV_URL=" + n.http, "RDEV_API_KEY=" + adminKey, "RDEV_PROJECT=ctx"}, "run", "--", "echo", "env"); code != 0 || out != "env\n" {
		t.Fatalf("run with RDEV_URL over the context: %d %q %s", code, out, stderr)
	}
	if out, stderr, code := cli(nil, "run", "--context", "good", "--", "echo", "flag"); code != 0 || out != "flag\n" {
		t.Fatalf("run --context good: %d %q %s", code, out, stderr)
	}
	if _, stderr, code := cli(nil, "context", "use", "good"); code != 0 {
		t.Fatalf("context use: %d %s", code, stderr)
	}
	out, stderr, code := cli(nil, "run", "--", "echo", "file")
	if code != 0 || out != "file\n" {
		t.Fatalf("run on the current context: %d %q %s", code, out, stderr)
	}
	if _, stderr, code := cli(nil, "context", "use", "nosuch"); code != 1 || !strings.Contains(stderr, "rdev context add") {
		t.Fatalf("context use nosuch: %d %s", code, stderr)
	}
	b, err := os.ReadFile(cfg)
	must(t, err, "read config")
	if !strings.Contains(string(b), "current-context: good") {
		t.Fatalf("config file:\n%s", b)
	}
}

// `rdev logs -f` on a running job replays its lines and follows it to
// its end; `jobs get -o json` prints the API's reply.
func TestLogsFollowRunningJob(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	t.Parallel()
	n := startInProcess(t)
	job := submit(t, n.http, "logs", map[string]any{"command": gatedCommand})
	p := startCLI(t, serverEnv(n), "logs", "-f", job.JobID)
	if l := p.line(t); l != "line1" {
		t.Fatalf("first line %q", l)
	}
	touch(t, n.dataDir, "logs", "gate")
	rest, code := p.wait(t, time.Minute)
	lines := strings.Split(strings.TrimSuffix(rest, "\n"), "\n")
	if code != 0 || len(lines) < 6 || strings.Join(lines[len(lines)-5:], ",") != "tail1,tail2,tail3,tail4,tail5" {
		t.Fatalf("exit %d, rest %q", code, rest)
	}
	for i, l := range lines[:len(lines)-5] {
		if l != fmt.Sprint("line", i+2) {
			t.Fatalf("line %d is %q", i+2, l)
		}
	}
	out, stderr, code := runCLI(t, serverEnv(n), "jobs", "get", "-o", "json", job.JobID)
	if code != 0 {
		t.Fatalf("jobs get: %d %s", code, stderr)
	}
	if st := mustJSON[contracts.JobResponse](t, out); st.JobID != job.JobID || st.Status != contracts.StatusSucceeded {
		t.Fatalf("jobs get: %+v", st)
	}
	out, _, _ = runCLI(t, serverEnv(n), "jobs", "get", job.JobID)
	if !strings.Contains(out, "STATUS") || strings.Contains(out, "\x1b[") || json.Valid([]byte(out)) {
		t.Fatalf("jobs get table %q: want a table without colours (not a terminal)", out)
	}
}

func TestColourOnlyOnATerminalWithoutNoColor(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		tty     bool
		noColor string
		want    bool
	}{{true, "", true}, {true, "1", false}, {false, "", false}} {
		if got := colourOn(tc.tty, tc.noColor); got != tc.want {
			t.Errorf("colourOn(%v, %q) = %v", tc.tty, tc.noColor, got)
		}
	}
}
