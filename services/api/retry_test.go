package api_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/state"
)

// endAs sets job id's status as its worker would have.
func (b bundle) endAs(t *testing.T, id string, status contracts.Status) {
	t.Helper()
	if _, err := state.New(b.kv).Jobs.Modify(t.Context(), id, func(j *contracts.JobState) (bool, error) {
		j.Status = status
		return true, nil
	}); err != nil {
		t.Fatal(err)
	}
}

// retry posts a retry of job id; header as post's.
func (b bundle) retry(t *testing.T, id string, header ...string) (int, contracts.SubmitResponse, []byte) {
	t.Helper()
	resp, r, body := b.retryResp(t, id, header...)
	return resp.StatusCode, r, body
}

func (b bundle) retryResp(t *testing.T, id string, header ...string) (*http.Response, contracts.SubmitResponse, []byte) {
	t.Helper()
	resp, body := b.post(t, "/v1/jobs/"+id+"/retry", "", nil, header...)
	var r contracts.SubmitResponse
	if resp.StatusCode == http.StatusAccepted {
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatal(err)
		}
	}
	return resp, r, body
}

// A job that failed, timed out or was cancelled runs again as a new job
// of the same request, audited; a job still running is 409
// job_not_finished.
func TestRetryJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, r, _ := b.submit(t, "/v1/projects/demo/commands", `{"command":["sh","-c","exit 3"],"work_dir":"sub","timeout_seconds":90,"max_attempts":2,"retry_on_exit_codes":[3],"idempotency_key":"once"}`)
	if code, _, body := b.retry(t, r.JobID); code != http.StatusConflict || errCode(t, body) != "job_not_finished" {
		t.Fatalf("retry of a queued job: %d %s, want 409 job_not_finished", code, body)
	}
	for _, status := range []contracts.Status{contracts.StatusFailed, contracts.StatusTimedOut, contracts.StatusCancelled} {
		b.endAs(t, r.JobID, status)
		code, again, body := b.retry(t, r.JobID)
		if code != http.StatusAccepted || again.JobID == "" || again.JobID == r.JobID || again.StreamID == r.StreamID || again.Status != contracts.StatusQueued {
			t.Fatalf("retry of a %s job: %d %s", status, code, body)
		}
		job := b.lastJob(t, "demo")
		if job.ID != again.JobID || !slices.Equal(job.Command, []string{"sh", "-c", "exit 3"}) || job.WorkDir != "sub" || job.TimeoutSeconds != 90 ||
			job.MaxAttempts != 2 || !slices.Equal(job.RetryOnExitCodes, []int{3}) || job.Attempt != 1 || job.IdempotencyKey != "" {
			t.Fatalf("retried job %+v: want the same request as a new job, first attempt, no idempotency key", job)
		}
	}
	// A retry repeated with its idempotency key returns the first one's
	// job, and queues nothing more.
	key := []string{"Idempotency-Key", "retry-once"}
	resp, first, body := b.retryResp(t, r.JobID, key...)
	if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("keyed retry: %d %s", resp.StatusCode, body)
	}
	resp, again, body := b.retryResp(t, r.JobID, key...)
	if resp.StatusCode != http.StatusAccepted || again.JobID != first.JobID || resp.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("keyed retry repeated: %d %s, want job %s replayed", resp.StatusCode, body, first.JobID)
	}
	recs := b.waitAudit(t, "kind=job_retried&project=demo", 4)
	if recs[0].Actor != "bootstrap" || recs[0].Detail["retry_of"] != r.JobID || recs[0].JobID == r.JobID {
		t.Fatalf("audit record %+v: want the key, the new job and retry_of the old one", recs[0])
	}
	b.endAs(t, r.JobID, contracts.StatusSucceeded)
	if code, _, body := b.retry(t, r.JobID); code != http.StatusConflict || errCode(t, body) != "job_succeeded" {
		t.Fatalf("retry of a succeeded job: %d %s, want 409 job_succeeded", code, body)
	}
}

// Retry is authorized like a submit, and refuses what it cannot run again
// with a code.
func TestRetryJobRefusals(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, r, _ := b.submit(t, "/v1/projects/demo/commands", `{"command":["true"]}`)
	b.endAs(t, r.JobID, contracts.StatusFailed)
	reader := bearer(b.newKey(t, `{"name":"reader","scopes":["project:demo:read"]}`).Key)
	other := bearer(b.newKey(t, `{"name":"other","scopes":["project:other:submit","project:other:read"]}`).Key)
	submitter := bearer(b.newKey(t, `{"name":"submitter","scopes":["project:demo:submit"]}`).Key)
	_, withEnv, _ := b.submit(t, "/v1/projects/demo/commands", `{"command":["env"],"env":{"TOKEN":"s3cret"}}`)
	b.endAs(t, withEnv.JobID, contracts.StatusFailed)
	_, expired, _ := b.submit(t, "/v1/projects/demo/commands", `{"command":["true"]}`)
	b.endAs(t, expired.JobID, contracts.StatusFailed)
	if err := state.New(b.kv).Specs.Purge(t.Context(), expired.JobID); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, id string
		header   []string
		status   int
		code     string
	}{
		{"read only", r.JobID, reader, http.StatusForbidden, "forbidden"},
		{"another project's key", r.JobID, other, http.StatusNotFound, "job_not_found"},
		{"unknown job", "nope", nil, http.StatusNotFound, "job_not_found"},
		{"bad id", "a.b", nil, http.StatusBadRequest, "invalid_job_id"},
		{"env values not kept", withEnv.JobID, nil, http.StatusConflict, "job_env_redacted"},
		{"request not stored", expired.JobID, nil, http.StatusConflict, "job_not_retriable"},
		{"bad idempotency key", r.JobID, []string{"Idempotency-Key", strings.Repeat("k", 257)}, http.StatusBadRequest, "invalid_idempotency_key"},
	} {
		code, _, body := b.retry(t, c.id, c.header...)
		if code != c.status || errCode(t, body) != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.name, code, body, c.status, c.code)
		}
		if strings.Contains(string(body), "s3cret") {
			t.Errorf("%s: the env value in %s", c.name, body)
		}
	}
	if code, again, body := b.retry(t, r.JobID, submitter...); code != http.StatusAccepted || again.JobID == r.JobID {
		t.Fatalf("retry with a submit key: %d %s", code, body)
	}
}
