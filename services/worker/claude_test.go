package worker_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/worker"
	"github.com/rdev-dev/rdev/services/worker/internal/k8sexec/k8stest"
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
	var got string
	for _, l := range b.storedLines(t, job.StreamID, 4) {
		if l.FD != contracts.Stdout {
			t.Fatalf("line %+v is not on stdout", l)
		}
		got += l.Text
	}
	if got != "abcd" {
		t.Fatalf("merged lines %q; want abcd", got)
	}
}

// A Claude job in Kubernetes finds claude and its key in the environment
// the pod template gives the container (not in the job), and records its
// session on the job's state as a local one does. The fake API server's
// kubelet runs the stand-in through the real exec protocol.
func TestClaudeSessionIsRecordedInKubernetes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	api := k8stest.New(t, k8stest.Options{AutoReady: true})
	bin := writeStandIn(t, strings.Replace(standInClaude, "#!/bin/sh\n", "#!/bin/sh\necho \"key $ANTHROPIC_API_KEY\" >&2\n", 1))
	template := filepath.Join(t.TempDir(), "pod.yaml")
	if err := os.WriteFile(template, []byte(`apiVersion: v1
kind: Pod
spec:
  containers:
    - name: claude
      image: claude-code:test
      env:
        - {name: PATH, value: "`+bin+`:/usr/bin:/bin"}
        - {name: ANTHROPIC_API_KEY, value: sk-ant-from-the-pod}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := kubernetesConfig(t, api)
	cfg.Concurrency, cfg.AckWait, cfg.Kubernetes.PodTemplate = 1, 3*time.Second, template
	b.start(cfg)
	job := newJob("k8sclaude", "demo", "claude", "-p", "--verbose", "--output-format=stream-json", "--", "list files")
	job.Kind = contracts.KindClaude
	b.submit(t, job)
	if ev := b.next(t, job.ID, contracts.EventSucceeded, contracts.EventFailed); ev.Type != contracts.EventSucceeded || ev.Lines != 6 {
		t.Fatalf("claude job ended %+v; want succeeded with 6 lines", ev)
	}
	if api.Execs() == 0 {
		t.Fatal("the job did not run through the Kubernetes executor")
	}
	st := b.state(t, job.ID)
	want := contracts.ClaudeSession{SessionID: "5f1e7c2a-0b3d-4e8f-9a6b-1c2d3e4f5a6b", Model: "claude-sonnet-4-5", Subtype: "success",
		CostUSD: 0.0042, NumTurns: 2, DurationMS: 2100, Result: true}
	if st.Claude == nil || st.Claude.Usage == nil || st.Claude.Usage.InputTokens != 43 || st.Claude.Usage.OutputTokens != 28 ||
		st.Claude.Usage.CacheCreationInputTokens != 100 || st.Claude.Usage.CacheReadInputTokens != 200 {
		t.Fatalf("claude session %+v", st.Claude)
	}
	got := *st.Claude
	got.Usage = nil
	if got != want {
		t.Fatalf("claude session %+v; want %+v", got, want)
	}
	var key []string
	for _, l := range b.storedLines(t, job.StreamID, 6) {
		if l.FD == contracts.Stderr {
			key = append(key, l.Text)
		}
	}
	if len(key) != 1 || key[0] != "key sk-ant-from-the-pod" {
		t.Fatalf("stderr lines %q; want the key from the pod template", key)
	}
}

// storedLines reads the first n stored lines of stream.
func (b bundle) storedLines(t *testing.T, stream string, n int) []contracts.OutputLine {
	t.Helper()
	c, err := b.js.OrderedConsumer(context.Background(), contracts.StreamOutput,
		jetstream.OrderedConsumerConfig{FilterSubjects: []string{contracts.SubjectStreamOutput(stream)}})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]contracts.OutputLine, 0, n)
	for range n {
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("line %d of %d: %v", len(out)+1, n, err)
		}
		var l contracts.OutputLine
		if err := json.Unmarshal(m.Data(), &l); err != nil {
			t.Fatal(err)
		}
		out = append(out, l)
	}
	return out
}
