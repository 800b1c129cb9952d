package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// lastJob is the job last queued for project at normal priority.
func (b bundle) lastJob(t *testing.T, project string) contracts.Job {
	t.Helper()
	s, err := b.js.Stream(context.Background(), contracts.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(context.Background(), contracts.SubjectJob(contracts.PriorityNormal, project))
	if err != nil {
		t.Fatal(err)
	}
	var job contracts.Job
	if err := json.Unmarshal(m.Data, &job); err != nil {
		t.Fatal(err)
	}
	return job
}

// An unknown option is refused with a message listing the known ones;
// "continue_job" resumes the session an earlier job recorded, and a job
// without one is a conflict.
func TestClaudeOptionsAndContinueJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	resp, body := b.post(t, "/v1/projects/demo/claude", "application/json", []byte(`{"prompt":"x","maxturns":3}`))
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "max_turns") || !strings.Contains(string(body), `\"maxturns\"`) {
		t.Fatalf("unknown option: %d %s", resp.StatusCode, body)
	}

	resp, body = b.post(t, "/v1/projects/demo/claude", "application/json", []byte(`{"prompt":"first","model":"sonnet","max_turns":2}`))
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit: %d %s", resp.StatusCode, body)
	}
	var first contracts.SubmitResponse
	_ = json.Unmarshal(body, &first)
	resp, body = b.post(t, "/v1/projects/demo/claude", "application/json", []byte(`{"prompt":"more","continue_job":"`+first.JobID+`"}`))
	if resp.StatusCode != http.StatusConflict || !strings.Contains(string(body), "no_session") {
		t.Fatalf("continue a job without a session: %d %s", resp.StatusCode, body)
	}
	// The worker records the session when the job ends; stand in for it.
	e, err := b.kv.Get(context.Background(), contracts.JobKey(first.JobID))
	if err != nil {
		t.Fatal(err)
	}
	var st contracts.JobState
	_ = json.Unmarshal(e.Value(), &st)
	st.Status, st.Claude = contracts.StatusSucceeded, &contracts.ClaudeSession{SessionID: "5f1e7c2a-0b3d-4e8f-9a6b-1c2d3e4f5a6b", Result: true}
	raw, _ := json.Marshal(st)
	if _, err := b.kv.Put(context.Background(), contracts.JobKey(first.JobID), raw); err != nil {
		t.Fatal(err)
	}
	resp, body = b.post(t, "/v1/projects/other/claude", "application/json", []byte(`{"prompt":"more","continue_job":"`+first.JobID+`"}`))
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("continue another project's job: %d %s", resp.StatusCode, body)
	}
	resp, body = b.post(t, "/v1/projects/demo/claude", "application/json", []byte(`{"prompt":"more","continue_job":"`+first.JobID+`"}`))
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("continue: %d %s", resp.StatusCode, body)
	}
	job := b.lastJob(t, "demo")
	want := []string{"claude", "-p", "--verbose", "--output-format=stream-json", "--resume=5f1e7c2a-0b3d-4e8f-9a6b-1c2d3e4f5a6b", "--", "more"}
	if strings.Join(job.Command, "|") != strings.Join(want, "|") || job.Claude == nil || job.Claude.ContinueJob != first.JobID {
		t.Fatalf("continued job %q %+v; want %q", job.Command, job.Claude, want)
	}
}
