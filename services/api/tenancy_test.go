package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
)

func (b bundle) submit(t *testing.T, path, body string, header ...string) (*http.Response, contracts.SubmitResponse, []byte) {
	t.Helper()
	resp, rb := b.post(t, path, "application/json", []byte(body), header...)
	var r contracts.SubmitResponse
	_ = json.Unmarshal(rb, &r)
	return resp, r, rb
}

// A project deleted and created again under the same id is a new tenant:
// the old project's jobs, batches, idempotency keys and audit records are
// not found through it, and deleting it cancelled its queued jobs.
func TestRecreatedProjectSeesNothingOfTheDeletedOne(t *testing.T) {
	t.Parallel()
	b := setup(t)
	must200 := func(resp *http.Response, body []byte) {
		t.Helper()
		if resp.StatusCode >= 300 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	}
	resp, rb := b.post(t, "/v1/projects", "application/json", []byte(`{"id":"reborn"}`))
	must200(resp, rb)
	resp, old, rb := b.submit(t, "/v1/projects/reborn/commands", `{"command":["echo","secret-argv"],"idempotency_key":"nightly"}`)
	must200(resp, rb)
	resp, rb = b.post(t, "/v1/projects/reborn/batches", "application/json", []byte(`[{"command":["true"]}]`))
	must200(resp, rb)
	var batch contracts.BatchResponse
	_ = json.Unmarshal(rb, &batch)

	resp, rb = b.do(t, http.MethodDelete, "/v1/projects/reborn", "", nil)
	must200(resp, rb)
	// Deleting cancelled the queued job.
	_, rb = b.get(t, "/v1/jobs/"+old.JobID)
	if !strings.Contains(string(rb), `"status":"cancelled"`) {
		t.Errorf("the deleted project's queued job was not cancelled: %s", rb)
	}

	resp, rb = b.post(t, "/v1/projects", "application/json", []byte(`{"id":"reborn"}`))
	must200(resp, rb)
	reader := b.newKey(t, `{"name":"r","scopes":["project:reborn:read","project:reborn:submit"]}`)
	if resp, rb := b.get(t, "/v1/jobs/"+old.JobID, bearer(reader.Key)...); resp.StatusCode != http.StatusNotFound {
		t.Errorf("the new project's key read the old project's job: %d %s", resp.StatusCode, rb)
	}
	if resp, rb := b.get(t, "/v1/batches/"+batch.BatchID, bearer(reader.Key)...); resp.StatusCode != http.StatusNotFound {
		t.Errorf("the new project's key read the old project's batch: %d %s", resp.StatusCode, rb)
	}
	if resp, rb := b.get(t, "/v1/projects/reborn/audit", bearer(reader.Key)...); resp.StatusCode != http.StatusOK || strings.Contains(string(rb), "secret-argv") || strings.Contains(string(rb), old.JobID) {
		t.Errorf("the new project's audit shows the old project's records: %d %s", resp.StatusCode, rb)
	}
	// The old idempotency key names nothing in the new project.
	resp, fresh, rb := b.submit(t, "/v1/projects/reborn/commands", `{"command":["echo","secret-argv"],"idempotency_key":"nightly"}`, bearer(reader.Key)...)
	if resp.StatusCode != http.StatusAccepted || fresh.JobID == old.JobID || resp.Header.Get("Idempotent-Replayed") != "" {
		t.Errorf("the old idempotency key replayed into the new project: %d %s", resp.StatusCode, rb)
	}
}

// An idempotency key is bound to its request: another body under it is
// refused (422), and a replay hands ids and a stream token only to a key
// that may read the job (else 409 without ids).
func TestIdempotencyReplayIsBoundToTheRequestAndTheReader(t *testing.T) {
	t.Parallel()
	b := setup(t)
	body := `{"command":["make","release"],"idempotency_key":"nightly-build"}`
	resp, orig, rb := b.submit(t, "/v1/projects/demo/commands", body)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("%d %s", resp.StatusCode, rb)
	}
	submitter := b.newKey(t, `{"name":"s","scopes":["project:demo:submit"]}`)
	both := b.newKey(t, `{"name":"rs","scopes":["project:demo:submit","project:demo:read"]}`)
	for _, tc := range []struct {
		name, path, body string
		key              string
		status           int
		code             string
	}{
		{"another body", "/v1/projects/demo/commands", `{"command":["true"],"idempotency_key":"nightly-build"}`, b.admin, 422, "idempotency_key_reused"},
		{"another endpoint", "/v1/projects/demo/claude", `{"prompt":"make release","idempotency_key":"nightly-build"}`, b.admin, 422, "idempotency_key_reused"},
		{"header key, other body", "/v1/projects/demo/commands", `{"command":["true"]}`, b.admin, 422, "idempotency_key_reused"},
		{"same body, key that cannot read", "/v1/projects/demo/commands", body, submitter.Key, 409, "idempotency_key_in_use"},
	} {
		hdr := bearer(tc.key)
		if strings.HasPrefix(tc.name, "header") {
			hdr = append(hdr, "Idempotency-Key", "nightly-build")
		}
		resp, _, rb := b.submit(t, tc.path, tc.body, hdr...)
		if resp.StatusCode != tc.status || errCode(t, rb) != tc.code || strings.Contains(string(rb), orig.JobID) || strings.Contains(string(rb), "token") {
			t.Errorf("%s: %d %s, want %d %s and no ids", tc.name, resp.StatusCode, rb, tc.status, tc.code)
		}
	}
	// The same request from a key that reads the project is replayed.
	resp, again, rb := b.submit(t, "/v1/projects/demo/commands", body, bearer(both.Key)...)
	if resp.StatusCode != http.StatusAccepted || again.JobID != orig.JobID || resp.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay: %d %s", resp.StatusCode, rb)
	}
	// Key order and spacing do not make another request.
	resp, again, rb = b.submit(t, "/v1/projects/demo/commands", `{ "idempotency_key":"nightly-build", "command":["make","release"] }`)
	if resp.StatusCode != http.StatusAccepted || again.JobID != orig.JobID {
		t.Errorf("normalized replay: %d %s", resp.StatusCode, rb)
	}
	if n := natstest.Msgs(t, b.js, contracts.StreamJobs); n != 1 {
		t.Fatalf("%d jobs queued, want 1", n)
	}
}
