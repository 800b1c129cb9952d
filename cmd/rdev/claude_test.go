package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/alecthomas/kong"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// --claude-command takes one string split as a shell would, or a JSON
// array; a value starting with "-" is a value, not a flag.
func TestClaudeCommandFlag(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"api", "--claude-command", `claude -p --verbose --model "opus 4" {prompt}`}, []string{"claude", "-p", "--verbose", "--model", "opus 4", "{prompt}"}},
		{[]string{"api", `--claude-command=["npx","claude","-p","{prompt}"]`}, []string{"npx", "claude", "-p", "{prompt}"}},
		{[]string{"api", "--claude-command=-p {prompt}"}, []string{"-p", "{prompt}"}},
		{[]string{"api"}, nil},
	} {
		var c cli
		parser, err := kong.New(&c, kong.Name("rdev"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := parser.Parse(tc.args); err != nil {
			t.Fatalf("parse %q: %v", tc.args, err)
		}
		got, err := c.API.API.claudeArgv()
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%q: argv %q, %v; want %q", tc.args, got, err, tc.want)
		}
	}
	for _, bad := range []string{`["unclosed"`, `claude "unclosed`, `[]`} {
		if argv, err := (apiFlags{ClaudeCommand: bad}).claudeArgv(); err == nil {
			t.Errorf("%q accepted as %q", bad, argv)
		}
	}
}

// The job environment: the worker's PATH unless --job-path, named
// variables passed through, --job-env last; nothing else.
func TestJobEnvFlags(t *testing.T) {
	t.Parallel()
	worker := map[string]string{"PATH": "/home/u/.local/bin:/usr/bin", "ANTHROPIC_API_KEY": "sk-1", "AWS_SECRET_ACCESS_KEY": "no"}
	lookup := func(k string) (string, bool) { v, ok := worker[k]; return v, ok }
	env, err := workerFlags{JobEnvPass: []string{"ANTHROPIC_API_KEY", "UNSET"}, JobEnv: []string{"A=b=c"}}.jobEnv(lookup)
	want := []string{"PATH=/home/u/.local/bin:/usr/bin", "LANG=C.UTF-8", "ANTHROPIC_API_KEY=sk-1", "A=b=c"}
	if err != nil || !slices.Equal(env, want) {
		t.Fatalf("env %q, %v; want %q", env, err, want)
	}
	if env, _ := (workerFlags{JobPath: "/opt/bin"}).jobEnv(lookup); env[0] != "PATH=/opt/bin" {
		t.Fatalf("--job-path ignored: %q", env)
	}
	for _, f := range []workerFlags{{JobEnv: []string{"NOEQUALS"}}, {JobEnv: []string{"1X=a"}}, {JobEnvPass: []string{"A-B"}}} {
		if _, err := f.jobEnv(lookup); err == nil {
			t.Errorf("%+v accepted", f)
		}
	}
}

// The README's quick start with a claude installed in a directory on the
// PATH of the person starting rdev (not in /usr/bin), and its API key
// passed through: a prompt runs without any per-job env, records its
// session, and the next prompt resumes it with continue_job.
func TestClaudeStandInFromQuickStart(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("process-level test")
	}
	bin := t.TempDir()
	script := `#!/bin/sh
echo "key=$ANTHROPIC_API_KEY"
echo "args=$*"
echo '{"type":"system","subtype":"init","session_id":"5f1e7c2a-0b3d-4e8f-9a6b-1c2d3e4f5a6b","model":"claude-sonnet-4-5","tools":["Bash"]}'
echo '{"type":"assistant","message":{"role":"assistant","content":[{"type":"text","text":"hello"}]},"session_id":"5f1e7c2a-0b3d-4e8f-9a6b-1c2d3e4f5a6b"}'
echo '{"type":"result","subtype":"success","is_error":false,"duration_ms":10,"num_turns":1,"result":"hello","session_id":"5f1e7c2a-0b3d-4e8f-9a6b-1c2d3e4f5a6b","total_cost_usd":0.001,"usage":{"input_tokens":5,"output_tokens":1,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}'
`
	if err := os.WriteFile(filepath.Join(bin, "claude"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	n := startProcessEnv(t, []string{"PATH=" + bin + ":" + os.Getenv("PATH"), "ANTHROPIC_API_KEY=sk-ant-test-key",
		"RDEV_JOB_ENV_PASSTHROUGH=ANTHROPIC_API_KEY"}, upArgs(t.TempDir())...)
	if status, body := call(t, http.MethodPost, n.http+"/v1/projects", map[string]string{"id": "demo"}); status != http.StatusCreated {
		t.Fatalf("create project: %d %s", status, body)
	}
	prompt := func(body map[string]any) (contracts.SubmitResponse, []string) {
		t.Helper()
		status, rb := call(t, http.MethodPost, n.http+"/v1/projects/demo/claude", body)
		if status != http.StatusAccepted {
			t.Fatalf("submit prompt: %d %s", status, rb)
		}
		r := mustJSON[contracts.SubmitResponse](t, string(rb))
		lines, c := watch(t, n.http, r.EventsURL)
		if c.Type != "succeeded" {
			t.Fatalf("claude job ended %+v (lines %+v)", c, lines)
		}
		var texts []string
		for _, l := range lines {
			texts = append(texts, l.Text)
		}
		return r, texts
	}
	first, texts := prompt(map[string]any{"prompt": "--help me"})
	if texts[0] != "key=sk-ant-test-key" || texts[1] != "args=-p --verbose --output-format=stream-json -- --help me" {
		t.Fatalf("stand-in printed %q", texts[:2])
	}
	st := getJob(t, n.http, first.JobID)
	if st.Claude == nil || st.Claude.SessionID != "5f1e7c2a-0b3d-4e8f-9a6b-1c2d3e4f5a6b" || st.Claude.NumTurns != 1 || st.Claude.CostUSD != 0.001 {
		raw, _ := json.Marshal(st)
		t.Fatalf("job state %s lacks the session", raw)
	}
	_, texts = prompt(map[string]any{"prompt": "and then?", "continue_job": first.JobID, "max_turns": 4})
	if !strings.Contains(texts[1], "--max-turns=4 --resume=5f1e7c2a-0b3d-4e8f-9a6b-1c2d3e4f5a6b -- and then?") {
		t.Fatalf("continued job's args %q", texts[1])
	}
}
