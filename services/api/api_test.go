package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/access/natskv"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/contracts/openapi/openapitest"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
	"github.com/rdev-dev/rdev/services/api"
)

type bundle struct {
	url string
	js  jetstream.JetStream
	kv  jetstream.KeyValue
	// admin is the bootstrap admin key.
	admin string
	// http checks every request and reply against the OpenAPI document.
	http *http.Client
}

// adminKey is the bootstrap key every test API starts with.
var adminKey = "test-admin-key-" + strings.Repeat("x", 32)

// setup serves the API over real HTTP on a real embedded NATS server, with
// the projects "demo" and "other".
func setup(t *testing.T) bundle {
	t.Helper()
	return setupWith(t, api.Config{MaxBodyBytes: 64 << 10, MaxTimeout: time.Hour}, nil)
}

// newAPI builds an API on js as cmd/rdev does (its buckets, the access
// store and a signer on its token secret), with showKey (may be nil) as
// Deps.ShowKey; it is shut down at cleanup.
func newAPI(t *testing.T, cfg api.Config, js jetstream.JetStream, log *slog.Logger, showKey ...func(string)) *api.Service {
	t.Helper()
	return newAPIWith(t, cfg, js, log, func(d *api.Deps) {
		for _, f := range showKey {
			d.ShowKey = f
		}
	})
}

// newAPIWith is newAPI with edit changing the dependencies first.
func newAPIWith(t *testing.T, cfg api.Config, js jetstream.JetStream, log *slog.Logger, edit func(*api.Deps)) *api.Service {
	t.Helper()
	deps := apiDeps(t, cfg, js, log)
	edit(&deps)
	a, err := api.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Shutdown(context.Background()) })
	return a
}

// apiDeps are the dependencies newAPI gives the API.
func apiDeps(t *testing.T, cfg api.Config, js jetstream.JetStream, log *slog.Logger) api.Deps {
	t.Helper()
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, contracts.BucketState)
	if err != nil {
		t.Fatal(err)
	}
	akv, err := js.KeyValue(ctx, contracts.BucketAccess)
	if err != nil {
		t.Fatal(err)
	}
	store, err := natskv.Open(ctx, akv)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := store.TokenSecret(ctx)
	if err != nil {
		t.Fatal(err)
	}
	deps := api.Deps{JS: js, State: kv, Access: store, Signer: access.NewSigner(secret), Log: log}
	if cfg.SecretsKey != nil {
		if deps.Secrets, err = js.KeyValue(ctx, contracts.BucketSecrets); err != nil {
			t.Fatal(err)
		}
		if deps.Webhooks, err = js.KeyValue(ctx, contracts.BucketWebhooks); err != nil {
			t.Fatal(err)
		}
		if deps.WebhookDeliveries, err = js.KeyValue(ctx, contracts.BucketWebhookDeliveries); err != nil {
			t.Fatal(err)
		}
	}
	return deps
}

func setupWith(t *testing.T, cfg api.Config, js jetstream.JetStream) bundle {
	t.Helper()
	return setupWithDeps(t, cfg, js, func(*api.Deps) {})
}

// setupWithDeps is setupWith with edit changing the API's dependencies.
func setupWithDeps(t *testing.T, cfg api.Config, js jetstream.JetStream, edit func(*api.Deps)) bundle {
	t.Helper()
	if js == nil {
		_, _, js = natstest.Provisioned(t)
	}
	if cfg.BootstrapKey == "" {
		cfg.BootstrapKey = adminKey
	}
	a := newAPIWith(t, cfg, js, slog.New(slog.DiscardHandler), edit)
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), contracts.BucketState)
	if err != nil {
		t.Fatal(err)
	}
	e := echo.New()
	a.Register(e)
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	b := bundle{url: srv.URL, js: js, kv: kv, admin: adminKey, http: &http.Client{Transport: openapitest.Transport(t, nil)}}
	for _, p := range []string{"demo", "other"} {
		if resp, body := b.post(t, "/v1/projects", "application/json", []byte(`{"id":"`+p+`"}`)); resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusConflict {
			t.Fatalf("create project %s: %d %s", p, resp.StatusCode, body)
		}
	}
	return b
}

// post sends a POST with the admin key unless header sets Authorization
// ("" sends none).
func (b bundle) post(t *testing.T, path, contentType string, body []byte, header ...string) (*http.Response, []byte) {
	t.Helper()
	return b.do(t, http.MethodPost, path, contentType, body, header...)
}

// get sends a GET like post.
func (b bundle) get(t *testing.T, path string, header ...string) (*http.Response, []byte) {
	t.Helper()
	return b.do(t, http.MethodGet, path, "", nil, header...)
}

func (b bundle) do(t *testing.T, method, path, contentType string, body []byte, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, b.url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Authorization", "Bearer "+b.admin)
	for i := 0; i+1 < len(header); i += 2 {
		if header[i+1] == "" {
			req.Header.Del(header[i])
			continue
		}
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := b.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	return resp, rb
}

func TestSubmitQueuesDurablyOnThePrioritySubject(t *testing.T) {
	t.Parallel()
	b := setup(t)
	resp, body := b.post(t, "/v1/projects/demo/commands", "application/json",
		[]byte(`{"command":["sh","-c","echo hi"],"priority":"high","env":{"A_B":"1"},"timeout_seconds":30}`))
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	var sr struct {
		JobID, StreamID, Status, EventsURL, JobURL string
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var raw map[string]string
	if err := dec.Decode(&raw); err != nil {
		t.Fatal(err)
	}
	sr.JobID, sr.StreamID, sr.Status, sr.EventsURL, sr.JobURL = raw["job_id"], raw["stream_id"], raw["status"], raw["events_url"], raw["job_url"]
	if sr.Status != "queued" || !strings.HasPrefix(sr.EventsURL, "/v1/streams/"+sr.StreamID+"/events?token=") || sr.JobURL != "/v1/jobs/"+sr.JobID {
		t.Fatalf("unexpected reply %s", body)
	}
	// The 202 came after JetStream stored the job: it is in the stream now.
	s, _ := b.js.Stream(context.Background(), contracts.StreamJobs)
	m, err := s.GetLastMsgForSubject(context.Background(), contracts.SubjectJob(contracts.PriorityHigh, "demo"))
	if err != nil {
		t.Fatalf("job not on the high subject: %v", err)
	}
	var job contracts.Job
	if err := json.Unmarshal(m.Data, &job); err != nil {
		t.Fatal(err)
	}
	// The worker claims with this revision in one compare-and-set.
	entry, err := b.kv.Get(context.Background(), contracts.JobKey(sr.JobID))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get(contracts.HeaderStateRevision); got != fmt.Sprint(entry.Revision()) {
		t.Fatalf("state revision header %q, want %d", got, entry.Revision())
	}
	if job.ID != sr.JobID || job.StreamID != sr.StreamID || job.TimeoutSeconds != 30 || job.Env["A_B"] != "1" ||
		job.Attempt != 1 || job.Kind != contracts.KindExec || strings.Join(job.Command, " ") != "sh -c echo hi" {
		t.Fatalf("stored job %+v does not match the request", job)
	}

	jr, jb := b.get(t, "/v1/jobs/"+sr.JobID)
	var st contracts.JobState
	if err := json.Unmarshal(jb, &st); err != nil {
		t.Fatal(err)
	}
	if jr.StatusCode != http.StatusOK || st.Status != contracts.StatusQueued || st.StreamID != sr.StreamID || st.Priority != contracts.PriorityHigh {
		t.Fatalf("GET job: %d %+v", jr.StatusCode, st)
	}
}

func TestIdempotencyKeyReturnsTheOriginalJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	body := []byte(`{"command":["true"],"idempotency_key":"deploy-42"}`)
	r1, b1 := b.post(t, "/v1/projects/demo/commands", "application/json", body)
	r2, b2 := b.post(t, "/v1/projects/demo/commands", "application/json", body)
	if r1.StatusCode != http.StatusAccepted || r2.StatusCode != http.StatusAccepted {
		t.Fatalf("statuses %d, %d", r1.StatusCode, r2.StatusCode)
	}
	var j1, j2 map[string]any
	_ = json.Unmarshal(b1, &j1)
	_ = json.Unmarshal(b2, &j2)
	if j1["job_id"] != j2["job_id"] || r2.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("second submit made a new job: %s vs %s", b1, b2)
	}
	// The same key in another project is another job.
	_, b3 := b.post(t, "/v1/projects/other/commands", "application/json", body)
	var j3 map[string]any
	_ = json.Unmarshal(b3, &j3)
	if j3["job_id"] == j1["job_id"] {
		t.Fatal("idempotency keys leak across projects")
	}
	if n := natstest.Msgs(t, b.js, contracts.StreamJobs); n != 2 {
		t.Fatalf("%d jobs queued, want 2", n)
	}
}

func TestClaudePromptIsOneArgvElement(t *testing.T) {
	t.Parallel()
	b := setup(t)
	prompt := "fix the bug; rm -rf / $(whoami) \x1b[31m`id`"
	body, _ := json.Marshal(map[string]string{"prompt": prompt})
	resp, rb := b.post(t, "/v1/projects/demo/claude", "application/json", body)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d: %s", resp.StatusCode, rb)
	}
	s, _ := b.js.Stream(context.Background(), contracts.StreamJobs)
	m, err := s.GetLastMsgForSubject(context.Background(), contracts.SubjectJob(contracts.PriorityNormal, "demo"))
	if err != nil {
		t.Fatal(err)
	}
	var job contracts.Job
	_ = json.Unmarshal(m.Data, &job)
	want := []string{"claude", "-p", "--verbose", "--output-format=stream-json", "--", "fix the bug; rm -rf / $(whoami) [31m`id`"}
	if job.Kind != contracts.KindClaude || strings.Join(job.Command, "\x00") != strings.Join(want, "\x00") {
		t.Fatalf("argv %q, want %q", job.Command, want)
	}
}

// Every malformed request gets its status and machine-readable code, and
// nothing is queued.
func TestBadInputIsRefusedAndQueuesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cmd := "/v1/projects/demo/commands"
	big := `{"command":["echo","` + strings.Repeat("x", 70<<10) + `"]}`
	manyArgs := `{"command":[` + strings.TrimSuffix(strings.Repeat(`"a",`, 1100), ",") + `]}`
	for _, tc := range []struct {
		name, path, ctype, body string
		status                  int
		code                    string
	}{
		{"bad project", "/v1/projects/Bad_Project/commands", "application/json", `{"command":["true"]}`, 400, "invalid_project"},
		{"project too long", "/v1/projects/" + strings.Repeat("a", 64) + "/commands", "application/json", `{"command":["true"]}`, 400, "invalid_project"},
		{"not json", cmd, "application/json", `{"command":`, 400, "invalid_json"},
		{"empty body", cmd, "application/json", ``, 400, "invalid_json"},
		{"array body", cmd, "application/json", `[1]`, 400, "invalid_json"},
		{"two objects", cmd, "application/json", `{"command":["true"]}{}`, 400, "invalid_json"},
		{"unknown field", cmd, "application/json", `{"command":["true"],"comand":1}`, 400, "unknown_field"},
		{"wrong type", cmd, "application/json", `{"command":"echo hi"}`, 400, "invalid_field"},
		{"missing command", cmd, "application/json", `{}`, 400, "invalid_command"},
		{"empty argv0", cmd, "application/json", `{"command":[""]}`, 400, "invalid_command"},
		{"nul in arg", cmd, "application/json", `{"command":["echo","a\u0000b"]}`, 400, "invalid_command"},
		{"too many args", cmd, "application/json", manyArgs, 400, "command_too_large"},
		{"body too large", cmd, "application/json", big, 413, "body_too_large"},
		{"invalid utf8", cmd, "application/json", "{\"command\":[\"echo\",\"\xff\xfe\"]}", 400, "invalid_utf8"},
		{"bad env name", cmd, "application/json", `{"command":["true"],"env":{"1X":"a"}}`, 400, "invalid_env"},
		{"env with =", cmd, "application/json", `{"command":["true"],"env":{"A=B":"a"}}`, 400, "invalid_env"},
		{"bad priority", cmd, "application/json", `{"command":["true"],"priority":"urgent"}`, 400, "invalid_priority"},
		{"negative timeout", cmd, "application/json", `{"command":["true"],"timeout_seconds":-1}`, 400, "invalid_timeout"},
		{"timeout over max", cmd, "application/json", `{"command":["true"],"timeout_seconds":7200}`, 400, "invalid_timeout"},
		{"fractional timeout", cmd, "application/json", `{"command":["true"],"timeout_seconds":1.5}`, 400, "invalid_field"},
		{"absolute work dir", cmd, "application/json", `{"command":["true"],"work_dir":"/etc"}`, 400, "invalid_work_dir"},
		{"escaping work dir", cmd, "application/json", `{"command":["true"],"work_dir":"a/../../x"}`, 400, "invalid_work_dir"},
		{"control char key", cmd, "application/json", `{"command":["true"],"idempotency_key":"a\nb"}`, 400, "invalid_idempotency_key"},
		{"form body", cmd, "application/x-www-form-urlencoded", `command=true`, 415, "unsupported_media_type"},
		{"empty prompt", "/v1/projects/demo/claude", "application/json", `{"prompt":"  \u0007 "}`, 400, "invalid_prompt"},
		{"prompt over body limit", "/v1/projects/demo/claude", "application/json", `{"prompt":"` + strings.Repeat("p", 70<<10) + `"}`, 413, "body_too_large"},
		{"command on claude", "/v1/projects/demo/claude", "application/json", `{"prompt":"x","command":["true"]}`, 400, "unknown_field"},
		{"unknown claude option", "/v1/projects/demo/claude", "application/json", `{"prompt":"x","temperature":"0.2"}`, 400, "unknown_field"},
		{"bad permission mode", "/v1/projects/demo/claude", "application/json", `{"prompt":"x","permission_mode":"all"}`, 400, "invalid_permission_mode"},
		{"flag as model", "/v1/projects/demo/claude", "application/json", `{"prompt":"x","model":"--dangerously-skip-permissions"}`, 400, "invalid_model"},
		{"max_turns as string", "/v1/projects/demo/claude", "application/json", `{"prompt":"x","max_turns":"3"}`, 400, "invalid_field"},
		{"bad stderr", cmd, "application/json", `{"command":["true"],"stderr":"both"}`, 400, "invalid_stderr"},
		{"continue unknown job", "/v1/projects/demo/claude", "application/json", `{"prompt":"x","continue_job":"nope"}`, 404, "job_not_found"},
		{"resume and continue", "/v1/projects/demo/claude", "application/json", `{"prompt":"x","continue_job":"a","resume":"b"}`, 400, "invalid_continue_job"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := b.post(t, tc.path, tc.ctype, []byte(tc.body))
			var eb contracts.ErrorBody
			if err := json.Unmarshal(body, &eb); err != nil {
				t.Fatalf("body is not an error body: %s", body)
			}
			if resp.StatusCode != tc.status || eb.Error.Code != tc.code || eb.Error.Message == "" {
				t.Fatalf("got %d %s %q, want %d %s", resp.StatusCode, eb.Error.Code, eb.Error.Message, tc.status, tc.code)
			}
		})
	}
	for _, tc := range []struct {
		id     string
		status int
		code   string
	}{{"nope", 404, "job_not_found"}, {"a.b", 400, "invalid_job_id"}, {strings.Repeat("x", 65), 400, "invalid_job_id"}} {
		resp, body := b.get(t, "/v1/jobs/"+tc.id)
		var eb contracts.ErrorBody
		_ = json.Unmarshal(body, &eb)
		if resp.StatusCode != tc.status || eb.Error.Code != tc.code {
			t.Errorf("GET job %q: %d %s, want %d %s", tc.id, resp.StatusCode, eb.Error.Code, tc.status, tc.code)
		}
	}
	if n := natstest.Msgs(t, b.js, contracts.StreamJobs); n != 0 {
		t.Fatalf("bad input queued %d jobs", n)
	}
}
