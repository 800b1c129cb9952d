package api_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
	"github.com/rdev-dev/rdev/services/api"
)

func (b bundle) audit(t *testing.T, query string, header ...string) contracts.AuditPage {
	t.Helper()
	resp, rb := b.get(t, "/v1/audit?"+query, header...)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("audit %s: %d %s", query, resp.StatusCode, rb)
	}
	var p contracts.AuditPage
	if err := json.Unmarshal(rb, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestProjectLifecycle(t *testing.T) {
	t.Parallel()
	b := setup(t)
	resp, rb := b.post(t, "/v1/projects", "application/json",
		[]byte(`{"id":"alpha","name":"Alpha","allowed_ips":["10.0.0.0/8","127.0.0.1"],"rate_limit":{"requests":100,"window_seconds":60},"max_concurrent_jobs":4,"default_priority":"low"}`))
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Location") != "/v1/projects/alpha" {
		t.Fatalf("create: %d %s", resp.StatusCode, rb)
	}
	var p map[string]any
	_ = json.Unmarshal(rb, &p)
	if p["name"] != "Alpha" || p["max_concurrent_jobs"] != 4.0 || p["allowed_ips"].([]any)[1] != "127.0.0.1/32" {
		t.Fatalf("created %s", rb)
	}
	if resp, rb := b.post(t, "/v1/projects", "application/json", []byte(`{"id":"alpha"}`)); resp.StatusCode != http.StatusConflict || errCode(t, rb) != "project_exists" {
		t.Fatalf("duplicate: %d %s", resp.StatusCode, rb)
	}
	for body, code := range map[string]string{
		`{"id":"Alpha"}`:                 "invalid_project",
		`{"id":"b","allowed_ips":["x"]}`: "invalid_allowed_ips",
		`{"id":"b","rate_limit":{"requests":0,"window_seconds":1}}`: "invalid_rate_limit",
		`{"id":"b","default_priority":"urgent"}`:                    "invalid_priority",
		`{"id":"b","nope":1}`:                                       "unknown_field",
	} {
		if resp, rb := b.post(t, "/v1/projects", "application/json", []byte(body)); resp.StatusCode != http.StatusBadRequest || errCode(t, rb) != code {
			t.Errorf("%s: %d %s, want 400 %s", body, resp.StatusCode, rb, code)
		}
	}
	// The default priority applies to jobs that name none.
	resp, rb = b.post(t, "/v1/projects/alpha/commands", "application/json", []byte(`{"command":["true"]}`))
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit: %d %s", resp.StatusCode, rb)
	}
	var sr contracts.SubmitResponse
	_ = json.Unmarshal(rb, &sr)
	if _, jb := b.get(t, "/v1/jobs/"+sr.JobID); !strings.Contains(string(jb), `"priority":"low"`) {
		t.Fatalf("job %s: want priority low from the project", jb)
	}
	// PATCH takes a subset; a project walled off from this address refuses.
	resp, rb = b.do(t, http.MethodPatch, "/v1/projects/alpha", "application/json", []byte(`{"allowed_ips":["10.0.0.0/8"],"rate_limit":{"requests":0}}`))
	if resp.StatusCode != http.StatusOK || strings.Contains(string(rb), "rate_limit") || !strings.Contains(string(rb), `"name":"Alpha"`) {
		t.Fatalf("patch: %d %s", resp.StatusCode, rb)
	}
	// Admins are exempt from projects' allowed IPs; other keys are not.
	sk := b.newKey(t, `{"name":"s","scopes":["project:alpha:submit"]}`)
	if resp, rb := b.post(t, "/v1/projects/alpha/commands", "application/json", []byte(`{"command":["true"]}`), bearer(sk.Key)...); resp.StatusCode != http.StatusForbidden || errCode(t, rb) != "ip_not_allowed" {
		t.Fatalf("walled project: %d %s", resp.StatusCode, rb)
	}
	// Deleting a project takes its scopes from keys; a key left with none
	// is revoked, so a project re-created under the id is not open to it.
	k := b.newKey(t, `{"name":"a","scopes":["project:alpha:read"]}`)
	mixed := b.newKey(t, `{"name":"m","scopes":["project:alpha:read","project:demo:read"]}`)
	if resp, rb := b.do(t, http.MethodDelete, "/v1/projects/alpha", "", nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: %d %s", resp.StatusCode, rb)
	}
	if resp, rb := b.post(t, "/v1/projects/alpha/commands", "application/json", []byte(`{"command":["true"]}`)); resp.StatusCode != http.StatusNotFound || errCode(t, rb) != "project_not_found" {
		t.Fatalf("submit to deleted project: %d %s", resp.StatusCode, rb)
	}
	b.post(t, "/v1/projects", "application/json", []byte(`{"id":"alpha"}`))
	if resp, rb := b.get(t, "/v1/projects/alpha", bearer(k.Key)...); resp.StatusCode != http.StatusUnauthorized || errCode(t, rb) != "revoked_api_key" {
		t.Fatalf("old key on re-created project: %d %s", resp.StatusCode, rb)
	}
	if resp, _ := b.get(t, "/v1/projects/alpha", bearer(mixed.Key)...); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("mixed key on re-created project: %d", resp.StatusCode)
	}
	if resp, _ := b.get(t, "/v1/projects/demo", bearer(mixed.Key)...); resp.StatusCode != http.StatusOK {
		t.Fatalf("mixed key keeps its other project: %d", resp.StatusCode)
	}
	// Any key reads itself, without its secret: what its scopes allow.
	resp, rb = b.get(t, "/v1/keys/self", bearer(mixed.Key)...)
	var self contracts.Key
	if err := json.Unmarshal(rb, &self); err != nil || resp.StatusCode != http.StatusOK || self.ID != mixed.ID || self.Key != "" ||
		strings.Join(self.Scopes, ",") != "project:demo:read" || strings.Contains(string(rb), mixed.Key) {
		t.Fatalf("key self: %d %s", resp.StatusCode, rb)
	}
	if resp, rb := b.get(t, "/v1/keys/self", bearer("rdev_nope_nope")...); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("key self without a valid key: %d %s", resp.StatusCode, rb)
	}
	// Keys are listed without secrets or hashes.
	_, kb := b.get(t, "/v1/keys")
	if strings.Contains(string(kb), k.Key) || strings.Contains(string(kb), `"hash"`) || strings.Contains(string(kb), `"key":`) {
		t.Fatalf("key list leaks secrets: %s", kb)
	}
}

// Every security-relevant act lands once in the audit log, with who, from
// where and what; filters and cursors page through it.
func TestAuditTrail(t *testing.T) {
	t.Parallel()
	b := setup(t)
	k := b.newKey(t, `{"name":"ci","scopes":["project:demo:submit","project:demo:read"]}`)
	resp, rb := b.post(t, "/v1/projects/demo/commands", "application/json", []byte(`{"command":["echo","audited"],"priority":"high"}`), bearer(k.Key)...)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit: %d %s", resp.StatusCode, rb)
	}
	var sr contracts.SubmitResponse
	_ = json.Unmarshal(rb, &sr)
	b.post(t, "/v1/projects/other/commands", "application/json", []byte(`{"command":["true"]}`), bearer(k.Key)...) // 403
	b.post(t, "/v1/projects/demo/commands", "application/json", []byte(`{"command":["true"]}`), bearer("rdev_nobody_x")...)
	b.do(t, http.MethodDelete, "/v1/keys/"+k.ID, "", nil)

	// Denials are written asynchronously: wait for them.
	var denied contracts.AuditPage
	await.Within(t, 5*time.Second, "two request_denied records", func() bool {
		denied = b.audit(t, "kind=request_denied")
		return len(denied.Records) >= 2
	})
	if len(denied.Records) != 2 {
		t.Fatalf("denied records: %+v", denied.Records)
	}
	if r := denied.Records[0]; r.Actor != k.ID || r.Project != "other" || r.Detail["status"] != 403.0 || r.ClientIP != "127.0.0.1" {
		t.Errorf("403 record %+v", r)
	}
	if r := denied.Records[1]; r.Actor != "" || r.Detail["code"] != "invalid_api_key" {
		t.Errorf("401 record %+v", r)
	}
	sub := b.audit(t, "kind=job_submitted&actor="+k.ID)
	if len(sub.Records) != 1 {
		t.Fatalf("submitted records %+v", sub.Records)
	}
	r := sub.Records[0]
	if r.JobID != sr.JobID || r.Project != "demo" || r.ClientIP != "127.0.0.1" || r.Detail["priority"] != "high" ||
		strings.Join(toStrings(r.Detail["command"]), " ") != "echo audited" || r.Seq == 0 {
		t.Errorf("submitted record %+v", r)
	}
	keys := b.audit(t, "kind=key_revoked")
	if len(keys.Records) != 1 || keys.Records[0].Detail["key_id"] != k.ID || keys.Records[0].Actor != "bootstrap" {
		t.Errorf("revoked records %+v", keys.Records)
	}
	// Paging: one record at a time walks every record exactly once.
	all := b.audit(t, "limit=1000")
	var walked []uint64
	cursor := ""
	for {
		p := b.audit(t, "limit=2&cursor="+cursor)
		for _, r := range p.Records {
			walked = append(walked, r.Seq)
		}
		if p.NextCursor == "" {
			break
		}
		cursor = p.NextCursor
	}
	if len(walked) != len(all.Records) {
		t.Fatalf("paging walked %d records, the log holds %d", len(walked), len(all.Records))
	}
	for i := range walked {
		if walked[i] != all.Records[i].Seq {
			t.Fatalf("page order differs at %d", i)
		}
	}
	// A project's own audit is open to its readers, and only its records.
	pk := b.newKey(t, `{"name":"reader","scopes":["project:demo:read"]}`)
	resp, rb = b.get(t, "/v1/projects/demo/audit", bearer(pk.Key)...)
	var pp contracts.AuditPage
	_ = json.Unmarshal(rb, &pp)
	if resp.StatusCode != http.StatusOK || len(pp.Records) == 0 {
		t.Fatalf("project audit: %d %s", resp.StatusCode, rb)
	}
	for _, r := range pp.Records {
		if r.Project != "demo" {
			t.Fatalf("project audit holds %+v", r)
		}
	}
	for q, code := range map[string]string{"kind=nope": "invalid_kind", "since=yesterday": "invalid_since", "limit=0": "invalid_limit", "cursor=x": "invalid_cursor"} {
		if resp, rb := b.get(t, "/v1/audit?"+q); resp.StatusCode != http.StatusBadRequest || errCode(t, rb) != code {
			t.Errorf("%s: %d %s", q, resp.StatusCode, rb)
		}
	}
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

// The first start without a configured key generates one and returns it
// once; later starts return nothing; a configured key replaces it.
func TestBootstrap(t *testing.T) {
	t.Parallel()
	_, _, js := natstest.Provisioned(t)
	ctx := context.Background()
	start := func() *api.Service { return newAPI(t, api.Config{}, js, slog.New(slog.DiscardHandler)) }
	first, err := start().Bootstrap(ctx, "")
	if err != nil || !strings.HasPrefix(first, "rdev_bootstrap_") {
		t.Fatalf("first start: %q %v", first, err)
	}
	if again, err := start().Bootstrap(ctx, ""); err != nil || again != "" {
		t.Fatalf("second start: %q %v", again, err)
	}
	if _, err := start().Bootstrap(ctx, "short"); err == nil {
		t.Fatal("a short bootstrap key was accepted")
	}
	if got, err := start().Bootstrap(ctx, adminKey); err != nil || got != "" {
		t.Fatalf("configured key: %q %v", got, err)
	}
}
