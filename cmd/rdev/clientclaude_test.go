package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// `rdev claude` renders Claude Code's stream-json readably: text as it
// is, a tool call and its result one line each, a summary with cost and
// tokens; --raw prints the JSON lines.
func TestClaudeRendersTheSession(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	t.Parallel()
	session, err := filepath.Abs("../../pkg/contracts/claudestream/testdata/session.jsonl")
	must(t, err, "testdata")
	fake, _ := json.Marshal([]string{"sh", "-c", `cat "$0"`, session, "{prompt}"})
	n := startInProcess(t, "--claude-command", string(fake))
	createProject(t, n, "claude")
	out, stderr, code := runCLI(t, serverEnv(n), "claude", "-p", "claude", "why does the build fail?")
	if code != 0 || !strings.Contains(out, "I'll look at the build.\n→ Bash {") || !strings.Contains(out, "← test:") ||
		strings.Contains(out, `"type"`) || !strings.Contains(stderr, "turns") || !strings.Contains(stderr, "tokens in") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	raw, _, code := runCLI(t, serverEnv(n), "claude", "--raw", "-p", "claude", "again")
	if code != 0 || !strings.HasPrefix(raw, `{"type":"system"`) {
		t.Fatalf("--raw: exit %d, %q", code, raw)
	}
}
