package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
)

// waitAudit polls the audit log until query has want records (they are
// written without making the request wait).
func (b bundle) waitAudit(t *testing.T, query string, want int) []contracts.AuditRecord {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if p := b.audit(t, query); len(p.Records) >= want || time.Now().After(deadline) {
			if len(p.Records) != want {
				t.Fatalf("audit %s: %d records, want %d: %+v", query, len(p.Records), want, p.Records)
			}
			return p.Records
		}
	}
}

// A refused atomic batch names no job, stream or URL for any item: none
// was queued (it used to sign a token for an empty stream id).
func TestRefusedAtomicBatchHasNoURLs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	resp, rb := b.post(t, "/v1/projects/demo/batches?atomic=true", "application/json",
		[]byte(`[{"command":["true"]},{"command":["true"],"timeout_seconds":-1}]`))
	if resp.StatusCode != http.StatusBadRequest || strings.Contains(string(rb), "events_url") || strings.Contains(string(rb), "job_id") {
		t.Fatalf("refused atomic batch: %d %s", resp.StatusCode, rb)
	}
}

// A retried dead letter records its retry: a second retry is a conflict
// unless forced; it can be deleted; a project's dead letters are retried
// or purged at once; all of it is audited, and the reply has a trace id.
func TestDeadLetterRetryStateDeleteAndPurge(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	for _, id := range []string{"D1", "D2", "D3"} {
		dl := contracts.DeadLetter{V: 1, ID: id, Reason: contracts.ReasonWorkerLost, Attempts: 2, Time: time.Now(),
			Job: &contracts.Job{V: 1, ID: id, Project: "demo", Kind: contracts.KindExec, Command: []string{"true"},
				Priority: contracts.PriorityNormal, TimeoutSeconds: 60, Attempt: 2, StreamID: "S" + id}}
		body, _ := json.Marshal(dl)
		_, err := b.js.Publish(ctx, contracts.SubjectDead("demo"), body, jetstream.WithMsgID(id))
		must(t, err)
	}
	traceparent := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	resp, rb := b.post(t, "/v1/dead-letters/D1/retry", "", nil, "traceparent", traceparent)
	var first contracts.SubmitResponse
	must(t, json.Unmarshal(rb, &first))
	if resp.StatusCode != http.StatusAccepted || first.TraceID != "0af7651916cd43dd8448eb211c80319c" {
		t.Fatalf("retry: %d %s", resp.StatusCode, rb)
	}
	if resp, rb := b.post(t, "/v1/dead-letters/D1/retry", "", nil); resp.StatusCode != http.StatusConflict || errCode(t, rb) != "dead_letter_retried" || !strings.Contains(string(rb), first.JobID) {
		t.Fatalf("second retry: %d %s", resp.StatusCode, rb)
	}
	_, rb = b.get(t, "/v1/dead-letters?project=demo")
	var page contracts.DeadLetterPage
	must(t, json.Unmarshal(rb, &page))
	if r := page.DeadLetters[0].Retried; r == nil || r.JobID != first.JobID || r.Retries != 1 || page.DeadLetters[1].Retried != nil {
		t.Fatalf("dead letters after a retry: %s", rb)
	}
	if resp, rb := b.post(t, "/v1/dead-letters/D1/retry?force=true", "", nil); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("forced retry: %d %s", resp.StatusCode, rb)
	}
	if resp, rb := b.do(t, http.MethodDelete, "/v1/dead-letters/D2", "", nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: %d %s", resp.StatusCode, rb)
	}
	if resp, rb := b.do(t, http.MethodDelete, "/v1/dead-letters/D2", "", nil); resp.StatusCode != http.StatusNotFound || errCode(t, rb) != "dead_letter_not_found" {
		t.Fatalf("delete again: %d %s", resp.StatusCode, rb)
	}
	before := natstest.Msgs(t, b.js, contracts.StreamJobs)
	resp, rb = b.post(t, "/v1/projects/demo/dead-letters/retry", "", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(rb), `"retried":1`) || !strings.Contains(string(rb), `"skipped":1`) {
		t.Fatalf("project retry: %d %s", resp.StatusCode, rb)
	}
	if n := natstest.Msgs(t, b.js, contracts.StreamJobs); n != before+1 {
		t.Fatalf("project retry queued %d jobs, want 1 (D3; D1 was retried already)", n-before)
	}
	resp, rb = b.do(t, http.MethodDelete, "/v1/projects/demo/dead-letters", "", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(rb), `"purged":2`) {
		t.Fatalf("purge: %d %s", resp.StatusCode, rb)
	}
	if _, rb := b.get(t, "/v1/dead-letters?project=demo"); !strings.Contains(string(rb), `"dead_letters":[]`) {
		t.Fatalf("after purge: %s", rb)
	}
	k := b.newKey(t, `{"name":"p","scopes":["project:demo:submit","project:demo:read"]}`)
	if resp, _ := b.do(t, http.MethodDelete, "/v1/projects/demo/dead-letters", "", nil, bearer(k.Key)...); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("purge by a project key: %d", resp.StatusCode)
	}
	b.waitAudit(t, "kind=dead_letter_retried", 3)
	b.waitAudit(t, "kind=dead_letter_deleted", 1)
	if r := b.waitAudit(t, "kind=dead_letters_purged", 1)[0]; r.Actor != "bootstrap" || r.Detail["purged"] != 2.0 {
		t.Fatalf("purge record %+v", r)
	}
}

// A cancel records who asked; a batch whose jobs had all ended answers
// 409 like a job that ended; GET batch never says job_ids null.
func TestCancelIsAuditedAndBatchRuleMatchesJobs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	resp, rb := b.post(t, "/v1/projects/demo/batches", "application/json", []byte(`[{"command":["true"]},{"command":["true"]}]`))
	var br contracts.BatchResponse
	must(t, json.Unmarshal(rb, &br))
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("batch: %d %s", resp.StatusCode, rb)
	}
	if resp, rb := b.post(t, "/v1/batches/"+br.BatchID+"/cancel", "", nil); resp.StatusCode != http.StatusAccepted || !strings.Contains(string(rb), `"cancelled":2`) {
		t.Fatalf("batch cancel: %d %s", resp.StatusCode, rb)
	}
	if resp, rb := b.post(t, "/v1/batches/"+br.BatchID+"/cancel", "", nil); resp.StatusCode != http.StatusConflict || errCode(t, rb) != "batch_finished" {
		t.Fatalf("second batch cancel: %d %s", resp.StatusCode, rb)
	}
	if resp, rb := b.post(t, "/v1/jobs/"+br.Items[0].JobID+"/cancel", "", nil); resp.StatusCode != http.StatusConflict {
		t.Fatalf("cancel of an ended job: %d %s", resp.StatusCode, rb)
	}
	if r := b.waitAudit(t, "kind=batch_cancel_requested", 2)[0]; r.Actor != "bootstrap" || r.ClientIP != "127.0.0.1" || r.Project != "demo" {
		t.Fatalf("batch cancel record %+v", r)
	}
	if r := b.waitAudit(t, "kind=job_cancel_requested", 1)[0]; r.Actor != "bootstrap" || r.JobID != br.Items[0].JobID || r.Detail["outcome"] != "refused" {
		t.Fatalf("job cancel record %+v", r)
	}
	_, rb = b.get(t, "/v1/batches/"+br.BatchID+"?limit=1")
	var st contracts.BatchStatus
	must(t, json.Unmarshal(rb, &st))
	if strings.Contains(string(rb), `"job_ids":null`) || len(st.JobIDs) != 1 || st.JobIDs[0] != br.Items[0].JobID {
		t.Fatalf("batch status: %s", rb)
	}
}

// An admin reads a project outside its allowed IPs as it can change it;
// a refusal of a revoked key names that key in the audit log.
func TestAdminIPExemptionAndRevokedKeyActor(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if resp, rb := b.post(t, "/v1/projects", "application/json", []byte(`{"id":"walled","allowed_ips":["10.0.0.0/8"]}`)); resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: %d %s", resp.StatusCode, rb)
	}
	for _, path := range []string{"/v1/projects/walled", "/v1/projects/walled/audit"} {
		if resp, rb := b.get(t, path); resp.StatusCode != http.StatusOK {
			t.Errorf("admin GET %s: %d %s", path, resp.StatusCode, rb)
		}
	}
	k := b.newKey(t, `{"name":"gone","scopes":["project:demo:read"]}`)
	if resp, rb := b.do(t, http.MethodDelete, "/v1/keys/"+k.ID, "", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke: %d %s", resp.StatusCode, rb)
	}
	if resp, _ := b.get(t, "/v1/projects/demo", bearer(k.Key)...); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("revoked key: %d", resp.StatusCode)
	}
	if r := b.waitAudit(t, "kind=request_denied", 1)[0]; r.Actor != k.ID || r.Detail["code"] != "revoked_api_key" {
		t.Fatalf("denied record %+v", r)
	}
}
