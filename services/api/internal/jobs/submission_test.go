package jobs

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

func limits(l Limits) Limits { l.setDefaults(); return l }

func code(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func TestClaudeCommandTemplate(t *testing.T) {
	t.Parallel()
	l := limits(Limits{ClaudeCommand: []string{"my-claude", "--print", PromptPlaceholder, "--json"}})
	job, err := l.build(Submission{Project: "p", Kind: contracts.KindClaude, Prompt: "a\x00b\x1b\tc\nd\u0085"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"my-claude", "--print", "--json", "--output-format=stream-json", "--", "ab\tc\nd"}
	if strings.Join(job.Command, "|") != strings.Join(want, "|") {
		t.Fatalf("argv %q, want %q", job.Command, want)
	}
}

// Every option becomes one --flag=value element before "--", so neither
// a value nor the prompt can be read as another flag.
func TestClaudeOptionsAreSafeFlags(t *testing.T) {
	t.Parallel()
	l := limits(Limits{})
	job, err := l.build(Submission{Project: "p", Kind: contracts.KindClaude, Prompt: "--dangerously-skip-permissions",
		Claude: contracts.ClaudeOptions{Model: "sonnet", MaxTurns: 3, AllowedTools: []string{"Read", "Bash(git diff:*)"},
			DisallowedTools: []string{"WebFetch"}, PermissionMode: "acceptEdits", AppendSystemPrompt: "--be brief\x1b",
			OutputFormat: "json", Resume: "5f1e7c2a-0b3d-4e8f-9a6b-1c2d3e4f5a6b"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"claude", "-p", "--verbose", "--output-format=json", "--model=sonnet", "--max-turns=3",
		"--allowedTools=Read", "--allowedTools=Bash(git diff:*)", "--disallowedTools=WebFetch", "--permission-mode=acceptEdits",
		"--append-system-prompt=--be brief", "--resume=5f1e7c2a-0b3d-4e8f-9a6b-1c2d3e4f5a6b", "--", "--dangerously-skip-permissions"}
	if strings.Join(job.Command, "|") != strings.Join(want, "|") {
		t.Fatalf("argv\n%q\nwant\n%q", job.Command, want)
	}
	if job.Claude == nil || job.Claude.Model != "sonnet" {
		t.Fatalf("options not kept on the job: %+v", job.Claude)
	}
	for _, tc := range []struct {
		o    contracts.ClaudeOptions
		want string
	}{
		{contracts.ClaudeOptions{Model: "-x"}, "invalid_model"},
		{contracts.ClaudeOptions{Model: "a b"}, "invalid_model"},
		{contracts.ClaudeOptions{MaxTurns: -1}, "invalid_max_turns"},
		{contracts.ClaudeOptions{MaxTurns: MaxTurns + 1}, "invalid_max_turns"},
		{contracts.ClaudeOptions{AllowedTools: []string{"--all"}}, "invalid_tools"},
		{contracts.ClaudeOptions{DisallowedTools: []string{"Bash(x))"}}, "invalid_tools"},
		{contracts.ClaudeOptions{PermissionMode: "yolo"}, "invalid_permission_mode"},
		{contracts.ClaudeOptions{OutputFormat: "xml"}, "invalid_output_format"},
		{contracts.ClaudeOptions{Resume: "--continue"}, "invalid_resume"},
		{contracts.ClaudeOptions{AppendSystemPrompt: strings.Repeat("x", 33<<10)}, "invalid_append_system_prompt"},
	} {
		if _, err := l.build(Submission{Project: "p", Kind: contracts.KindClaude, Prompt: "hi", Claude: tc.o}); code(err) != tc.want {
			t.Errorf("options %+v: got %v, want %s", tc.o, err, tc.want)
		}
	}
}

func TestPromptLengthIsCapped(t *testing.T) {
	t.Parallel()
	l := limits(Limits{MaxPromptBytes: 10})
	if _, err := l.build(Submission{Project: "p", Kind: contracts.KindClaude, Prompt: strings.Repeat("x", 11)}); code(err) != "prompt_too_large" {
		t.Fatalf("got %v, want prompt_too_large", err)
	}
	if _, err := l.build(Submission{Project: "p", Kind: contracts.KindClaude, Prompt: strings.Repeat("x", 10)}); err != nil {
		t.Fatalf("a prompt at the limit: %v", err)
	}
}

func TestTimeoutDefaultsAndBounds(t *testing.T) {
	t.Parallel()
	l := limits(Limits{DefaultTimeout: time.Minute, MaxTimeout: time.Hour})
	job, err := l.build(Submission{Project: "p", Kind: contracts.KindExec, Command: []string{"true"}})
	if err != nil || job.TimeoutSeconds != 60 || job.Priority != contracts.PriorityNormal || job.Attempt != 1 {
		t.Fatalf("defaults: %+v %v", job, err)
	}
	if _, err := l.build(Submission{Project: "p", Kind: contracts.KindExec, Command: []string{"true"}, TimeoutSeconds: 3601}); code(err) != "invalid_timeout" {
		t.Fatalf("over max: %v", err)
	}
	if job, err := l.build(Submission{Project: "p", Kind: contracts.KindExec, Command: []string{"true"}, TimeoutSeconds: 3600}); err != nil || job.TimeoutSeconds != 3600 {
		t.Fatalf("at max: %+v %v", job, err)
	}
}

func TestCommandAndEnvLimits(t *testing.T) {
	t.Parallel()
	l := limits(Limits{MaxCommandBytes: 8, MaxEnv: 1, MaxEnvBytes: 8})
	for _, tc := range []struct {
		sub  Submission
		want string
	}{
		{Submission{Command: []string{"123456789"}}, "command_too_large"},
		{Submission{Command: []string{"true"}, Env: map[string]string{"A": "1", "B": "2"}}, "invalid_env"},
		{Submission{Command: []string{"true"}, Env: map[string]string{"A": "123456789"}}, "invalid_env"},
		{Submission{Command: []string{"true"}, WorkDir: ".."}, "invalid_work_dir"},
		{Submission{Command: []string{"true"}, Kind: "python"}, "invalid_kind"},
	} {
		tc.sub.Project = "p"
		if tc.sub.Kind == "" {
			tc.sub.Kind = contracts.KindExec
		}
		if _, err := l.build(tc.sub); code(err) != tc.want {
			t.Errorf("%+v: got %v, want %s", tc.sub, err, tc.want)
		}
	}
}

func TestTraceContextIsKeptOnlyWhenWellFormed(t *testing.T) {
	t.Parallel()
	l := limits(Limits{})
	tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	job, err := l.build(Submission{Project: "p", Kind: contracts.KindExec, Command: []string{"true"},
		Trace: map[string]string{"traceparent": tp, "tracestate": "rojo=00f067aa0ba902b7"}})
	if err != nil || job.Trace["traceparent"] != tp || job.Trace["tracestate"] != "rojo=00f067aa0ba902b7" {
		t.Fatalf("trace %v, err %v", job.Trace, err)
	}
	job, err = l.build(Submission{Project: "p", Kind: contracts.KindExec, Command: []string{"true"},
		Trace: map[string]string{"traceparent": "garbage"}})
	if err != nil || job.Trace != nil {
		t.Fatalf("a bad traceparent must be dropped, not refused: trace %v, err %v", job.Trace, err)
	}
}
