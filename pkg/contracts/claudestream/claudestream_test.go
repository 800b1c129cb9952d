package claudestream_test

import (
	"bytes"
	"os"
	"testing"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/contracts/claudestream"
)

func lines(t *testing.T) [][]byte {
	t.Helper()
	b, err := os.ReadFile("testdata/session.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Split(bytes.TrimSpace(b), []byte("\n"))
}

func TestRecorderGathersTheSession(t *testing.T) {
	t.Parallel()
	var r claudestream.Recorder
	if r.Session() != nil {
		t.Fatal("a session before any line")
	}
	r.Observe([]byte("plain text, not stream-json"))
	for _, l := range lines(t) {
		r.Observe(l)
	}
	s := r.Session()
	want := contracts.ClaudeSession{SessionID: "8d3f6b1e-2c4a-4f7e-9b0d-5a6c7e8f9012", Model: "claude-sonnet-4-5-20250929",
		Subtype: "success", CostUSD: 0.0123, NumTurns: 3, DurationMS: 5234, Result: true,
		Usage: &contracts.ClaudeUsage{InputTokens: 128, OutputTokens: 73, CacheCreationInputTokens: 2048, CacheReadInputTokens: 4096}}
	if s == nil || s.Usage == nil || *s.Usage != *want.Usage {
		t.Fatalf("session %+v; want %+v", s, want)
	}
	s.Usage, want.Usage = nil, nil
	if *s != want {
		t.Fatalf("session %+v; want %+v", *s, want)
	}
}

func TestEventsDecodeEachKind(t *testing.T) {
	t.Parallel()
	var names []string
	for i, l := range lines(t) {
		for _, ev := range claudestream.Events(uint64(i+1), l) {
			names = append(names, ev.Name)
			switch d := ev.Data.(type) {
			case contracts.ClaudeToolUseData:
				if d.Name != "Bash" || d.ID != "toolu_01" || d.Seq != 3 || !bytes.Contains(d.Input, []byte("cat Makefile")) {
					t.Errorf("tool_use %+v", d)
				}
			case contracts.ClaudeToolResultData:
				if d.ToolUseID != "toolu_01" || d.Content != "test:\n\tgo test ./..." {
					t.Errorf("tool_result %+v", d)
				}
			case contracts.ClaudeResultData:
				if !d.Result || d.NumTurns != 3 || d.Text != "The build runs go test." {
					t.Errorf("result %+v", d)
				}
			}
		}
	}
	want := []string{"assistant", "tool_use", "tool_result", "assistant", "result"}
	if len(names) != len(want) {
		t.Fatalf("events %v; want %v", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("events %v; want %v", names, want)
		}
	}
	for _, l := range []string{"not json", `{"no":"type"}`, `[1,2]`, ""} {
		if evs := claudestream.Events(1, []byte(l)); evs != nil {
			t.Errorf("line %q gave events %v", l, evs)
		}
	}
}
