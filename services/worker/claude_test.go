package worker_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/worker"
)

// A stand-in for the claude CLI that prints a realistic stream-json
// session (init, assistant text, tool_use, tool_result, result).
const standInClaude = `#!/bin/sh
cat <<'JSON'
{"type":"system","subtype":"init","cwd":"/w","session_id":"5f1e7c2a-0b3d-4e8f-9a6b-1c2d3e4f5a6b","tools":["Bash"],"model":"claude-sonnet-4-5","permissionMode":"default","apiKeySource":"ANTHROPIC_API_KEY"}
{"type":"assistant","message":{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"Bash","input":{"command":"ls"}}],"usage":{"input_tokens":3,"output_tokens":20}},"parent_tool_use_id":null,"session_id":"5f1e7c2a-0b3d-4e8f-9a6b-1c2d3e4f5a6b"}
{"type":"user","message":{"role":"user","content":[{"tool_use_id":"toolu_1","type":"tool_result","content":"Makefile","is_error":false}]},"parent_tool_use_id":null,"session_id":"5f1e7c2a-0b3d-4e8f-9a6b-1c2d3e4f5a6b"}
{"type":"assistant","message":{"id":"msg_2","type":"message","role":"assistant","content":[{"type":"text","text":"There is a Makefile."}],"usage":{"input_tokens":40,"output_tokens":8}},"parent_tool_use_id":null,"session_id":"5f1e7c2a-0b3d-4e8f-9a6b-1c2d3e4f5a6b"}
{"type":"result","subtype":"success","is_error":false,"duration_ms":2100,"duration_api_ms":1900,"num_turns":2,"result":"There is a Makefile.","session_id":"5f1e7c2a-0b3d-4e8f-9a6b-1c2d3e4f5a6b","total_cost_usd":0.0042,"usage":{"input_tokens":43,"cache_creation_input_tokens":100,"cache_read_input_tokens":200,"output_tokens":28}}
JSON
`

// writeStandIn puts an executable claude in a new directory and returns
// the directory.
func writeStandIn(t *testing.T, script string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "claude"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// A Claude job found on the job PATH the worker was given records its
// session (id, cost, turns, usage, is_error) on the job's state.
func TestClaudeSessionIsRecorded(t *testing.T) {
	t.Parallel()
	b := setup(t)
	bin := writeStandIn(t, standInClaude)
	b.start(worker.Config{Concurrency: 1, AckWait: 3 * time.Second, JobEnv: []string{"PATH=" + bin + ":/usr/bin:/bin"}})
	job := newJob("claude1", "demo", "claude", "-p", "--output-format=stream-json", "--verbose", "--", "list files")
	job.Kind = contracts.KindClaude
	b.submit(t, job)
	if ev := b.next(t, job.ID, contracts.EventSucceeded, contracts.EventFailed); ev.Type != contracts.EventSucceeded {
		t.Fatalf("claude job ended %+v", ev)
	}
	st := b.state(t, job.ID)
	want := contracts.ClaudeSession{SessionID: "5f1e7c2a-0b3d-4e8f-9a6b-1c2d3e4f5a6b", Model: "claude-sonnet-4-5", Subtype: "success",
		CostUSD: 0.0042, NumTurns: 2, DurationMS: 2100, Result: true}
	if st.Claude == nil || st.Claude.Usage == nil || st.Claude.Usage.OutputTokens != 28 || st.Claude.Usage.CacheReadInputTokens != 200 {
		t.Fatalf("claude session %+v", st.Claude)
	}
	got := *st.Claude
	got.Usage = nil
	if got != want {
		t.Fatalf("claude session %+v; want %+v", got, want)
	}
}

// "stderr":"merge" stores stderr in stdout's stream, in the order the
// command wrote them.
func TestStderrMerge(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.start(worker.Config{Concurrency: 1, AckWait: 3 * time.Second})
	job := newJob("merge1", "demo", "sh", "-c", "echo a; echo b >&2; echo c; echo d >&2")
	job.Stderr = contracts.StderrMerge
	b.submit(t, job)
	b.next(t, job.ID, contracts.EventSucceeded)
	ctx := context.Background()
	c, err := b.js.OrderedConsumer(ctx, contracts.StreamOutput, jetstream.OrderedConsumerConfig{FilterSubjects: []string{contracts.SubjectOutput(job.StreamID)}})
	if err != nil {
		t.Fatal(err)
	}
	var got string
	for range 4 {
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var l contracts.OutputLine
		if err := json.Unmarshal(m.Data(), &l); err != nil {
			t.Fatal(err)
		}
		if l.FD != contracts.Stdout {
			t.Fatalf("line %+v is not on stdout", l)
		}
		got += l.Text
	}
	if got != "abcd" {
		t.Fatalf("merged lines %q; want abcd", got)
	}
}
