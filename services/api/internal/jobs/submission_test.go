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
	if want := []string{"my-claude", "--print", "ab\tc\nd", "--json"}; strings.Join(job.Command, "|") != strings.Join(want, "|") {
		t.Fatalf("argv %q, want %q", job.Command, want)
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
