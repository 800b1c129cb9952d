package streamer_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// ?format=claude turns Claude Code's stream-json lines into typed events;
// other lines stay output, and the stored lines are unchanged.
func TestClaudeFormat(t *testing.T) {
	t.Parallel()
	f := setup(t, options{})
	j := f.newJob(t)
	for i, text := range []string{
		"plain text",
		`{"type":"system","subtype":"init","session_id":"s1","model":"m"}`,
		`{"type":"assistant","message":{"role":"assistant","content":[{"type":"text","text":"hi"},{"type":"tool_use","id":"toolu_1","name":"Bash","input":{"command":"ls"}}]},"session_id":"s1"}`,
		`{"type":"user","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"Makefile","is_error":false}]},"session_id":"s1"}`,
		`{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"hi","session_id":"s1","total_cost_usd":0.01}`,
	} {
		b, _ := json.Marshal(contracts.OutputLine{V: contracts.OutputLineVersion, StreamID: j.streamID, JobID: j.jobID, Attempt: 1,
			Seq: uint64(i + 1), FD: contracts.Stdout, Text: text, Time: time.Now().UTC()})
		if _, err := f.js.Publish(context.Background(), contracts.SubjectOutput(j.project, j.streamID), b); err != nil {
			t.Fatal(err)
		}
	}
	j.event(t, contracts.EventSucceeded, 5)
	var names []string
	var result contracts.ClaudeResultData
	for _, ev := range f.connect(t, j.streamID, dialOpts{query: "format=claude"}).rest(t) {
		if ev.Name == "" {
			continue
		}
		names = append(names, ev.Name)
		if ev.Name == contracts.SSEClaudeResult {
			_ = json.Unmarshal([]byte(ev.Data), &result)
		}
	}
	want := []string{"connected", "output", "output", "assistant", "tool_use", "tool_result", "result", "complete"}
	if len(names) != len(want) {
		t.Fatalf("events %v, want %v", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("events %v, want %v", names, want)
		}
	}
	if result.SessionID != "s1" || result.NumTurns != 1 || result.Text != "hi" || result.Seq != 5 {
		t.Fatalf("result %+v", result)
	}
	if resp := f.get(t, j.streamID, dialOpts{query: "format=xml"}); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("unknown format: %d", resp.StatusCode)
	}
}
