package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/contracts/openapi/openapitest"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
	"github.com/rdev-dev/rdev/services/api"
)

// syncBuffer collects log output written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// setupSecrets is setup with a secrets key (nil: none) and the API's log
// kept in logs; it returns the store directory of its NATS server and a
// func that shuts the server down (so every file is written).
func setupSecrets(t *testing.T, key []byte, logs *syncBuffer) (b bundle, storeDir string, stop func()) {
	t.Helper()
	srv, _, js := natstest.Provisioned(t)
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a := newAPI(t, api.Config{MaxBodyBytes: 64 << 10, SecretsKey: key, BootstrapKey: adminKey}, js, log)
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	e := echo.New()
	a.Register(e)
	hs := httptest.NewServer(e)
	t.Cleanup(hs.Close)
	kv, err := js.KeyValue(context.Background(), contracts.BucketState)
	if err != nil {
		t.Fatal(err)
	}
	b = bundle{url: hs.URL, js: js, kv: kv, admin: adminKey, http: &http.Client{Transport: openapitest.Transport(t, nil)}}
	if resp, body := b.post(t, "/v1/projects", "application/json", []byte(`{"id":"demo"}`)); resp.StatusCode != http.StatusCreated {
		t.Fatalf("create project: %d %s", resp.StatusCode, body)
	}
	return b, srv.StoreDir(), func() { hs.Close(); _ = a.Shutdown(context.Background()); srv.Shutdown(); srv.WaitForShutdown() }
}

// recorder returns a request function that sends a JSON body (if any)
// with the admin key and keeps every answer's body in answers, for tests
// that check no answer shows a secret.
func (b bundle) recorder(t *testing.T, answers *[]string) func(method, path, body string, header ...string) (int, []byte) {
	return func(method, path, body string, header ...string) (int, []byte) {
		t.Helper()
		ctype := ""
		if body != "" {
			ctype = "application/json"
		}
		resp, rb := b.do(t, method, path, ctype, []byte(body), header...)
		*answers = append(*answers, string(rb))
		return resp.StatusCode, rb
	}
}

func TestProjectSecrets(t *testing.T) {
	t.Parallel()
	const value = "sk-test-9f8e7d6c5b4a-never-shown"
	logs := &syncBuffer{}
	b, storeDir, stop := setupSecrets(t, bytes.Repeat([]byte{0x42}, 32), logs)
	var answers []string // every response body, checked for the value at the end
	do := b.recorder(t, &answers)
	put := `{"value":"` + value + `"}`

	if st, rb := do("PUT", "/v1/projects/demo/secrets/anthropic", put); st != http.StatusCreated {
		t.Fatalf("PUT new secret: %d %s", st, rb)
	}
	if st, rb := do("PUT", "/v1/projects/demo/secrets/anthropic", put); st != http.StatusNoContent {
		t.Fatalf("PUT again: %d %s", st, rb)
	}
	st, rb := do("GET", "/v1/projects/demo/secrets", "")
	var list contracts.SecretList
	if err := json.Unmarshal(rb, &list); st != http.StatusOK || err != nil || len(list.Secrets) != 1 ||
		list.Secrets[0].Name != "anthropic" || list.Secrets[0].UpdatedAt.IsZero() {
		t.Fatalf("GET secrets: %d %s", st, rb)
	}

	// Refusals, each with its code.
	submit := b.newKey(t, `{"name":"s","scopes":["project:demo:submit","project:demo:read"]}`)
	reader := b.newKey(t, `{"name":"r","scopes":["read"]}`)
	for _, tc := range []struct {
		name, method, path, body string
		header                   []string
		status                   int
		code                     string
	}{
		{"submit key sets", "PUT", "/v1/projects/demo/secrets/x", put, bearer(submit.Key), 403, "forbidden"},
		{"submit key lists", "GET", "/v1/projects/demo/secrets", "", bearer(submit.Key), 403, "forbidden"},
		{"submit key deletes", "DELETE", "/v1/projects/demo/secrets/anthropic", "", bearer(submit.Key), 403, "forbidden"},
		{"read-all key lists", "GET", "/v1/projects/demo/secrets", "", bearer(reader.Key), 403, "forbidden"},
		{"bad name", "PUT", "/v1/projects/demo/secrets/a.b", put, nil, 400, "invalid_secret_name"},
		{"empty value", "PUT", "/v1/projects/demo/secrets/x", `{"value":""}`, nil, 400, "invalid_secret_value"},
		{"no value", "PUT", "/v1/projects/demo/secrets/x", `{}`, nil, 400, "invalid_secret_value"},
		{"value case variant", "PUT", "/v1/projects/demo/secrets/x", `{"Value":"v"}`, nil, 400, "unknown_field"},
		{"unknown project", "PUT", "/v1/projects/nope/secrets/x", put, nil, 404, "project_not_found"},
		{"delete unknown", "DELETE", "/v1/projects/demo/secrets/nope", "", nil, 404, "secret_not_found"},
		{"unknown secret", "POST", "/v1/projects/demo/commands", `{"command":["true"],"env":{"T":{"secret":"nope"}}}`, nil, 400, "unknown_secret"},
		{"bad secret ref key", "POST", "/v1/projects/demo/commands", `{"command":["true"],"env":{"T":{"Secret":"anthropic"}}}`, nil, 400, "invalid_env"},
		{"extra secret ref key", "POST", "/v1/projects/demo/commands", `{"command":["true"],"env":{"T":{"secret":"anthropic","x":1}}}`, nil, 400, "invalid_env"},
		{"secret ref not a string", "POST", "/v1/projects/demo/commands", `{"command":["true"],"env":{"T":{"secret":1}}}`, nil, 400, "invalid_env"},
		{"env value a number", "POST", "/v1/projects/demo/commands", `{"command":["true"],"env":{"T":1}}`, nil, 400, "invalid_env"},
		{"bad secret name in ref", "POST", "/v1/projects/demo/commands", `{"command":["true"],"env":{"T":{"secret":"a.b"}}}`, nil, 400, "invalid_env"},
	} {
		st, rb := do(tc.method, tc.path, tc.body, tc.header...)
		if st != tc.status || errCode(t, rb) != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.name, st, rb, tc.status, tc.code)
		}
	}

	// A job referencing the secret carries its name only.
	st, rb = do("POST", "/v1/projects/demo/commands", `{"command":["sh","-c","echo ok"],"env":{"TOKEN":{"secret":"anthropic"},"PLAIN":"plain-value-7"}}`)
	if st != http.StatusAccepted {
		t.Fatalf("submit with a secret: %d %s", st, rb)
	}
	job := lastJob(t, b.js)
	if job.SecretEnv["TOKEN"] != "anthropic" || job.Env["PLAIN"] != "plain-value-7" || job.Env["TOKEN"] != "" {
		t.Fatalf("queued job env %v, secret_env %v", job.Env, job.SecretEnv)
	}

	// The audit log names the secret and the variables, never values.
	page := b.audit(t, "project=demo")
	for _, r := range page.Records {
		if r.Kind == contracts.AuditJobSubmitted {
			d, _ := json.Marshal(r.Detail)
			if !strings.Contains(string(d), `"PLAIN":"***"`) || !strings.Contains(string(d), `"TOKEN":"anthropic"`) || strings.Contains(string(d), "plain-value-7") {
				t.Errorf("job_submitted detail %s: want env redacted and the secret by name", d)
			}
		}
	}
	// Secret writes are recorded without making the request wait.
	await.Within(t, 5*time.Second, "two secret_set audit records", func() bool { return len(b.audit(t, "project=demo&kind=secret_set").Records) == 2 })
	if st, rb := do("DELETE", "/v1/projects/demo/secrets/anthropic", ""); st != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", st, rb)
	}
	if st, rb := do("POST", "/v1/projects/demo/commands", `{"command":["true"],"env":{"T":{"secret":"anthropic"}}}`); st != 400 || errCode(t, rb) != "unknown_secret" {
		t.Fatalf("submit after delete: %d %s", st, rb)
	}
	await.Within(t, 5*time.Second, "a secret_deleted audit record for anthropic", func() bool {
		for _, r := range b.audit(t, "project=demo&kind=secret_deleted").Records {
			if r.Detail["secret"] == "anthropic" {
				return true
			}
		}
		return false
	})

	for _, a := range answers {
		if strings.Contains(a, value) {
			t.Fatalf("a response holds the secret: %s", a)
		}
	}
	// Nothing on disk holds it: not the bucket (sealed), not the audit
	// log, not the queued job. The server is stopped first so every block
	// is written.
	stop()
	if strings.Contains(logs.String(), value) {
		t.Fatal("the API logged the secret")
	}
	found := false
	err := filepath.WalkDir(storeDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(raw, []byte(value)) {
			t.Errorf("%s holds the secret", path)
		}
		found = found || bytes.Contains(raw, []byte("plain-value-7"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !found {
		t.Fatal("the plain env value is in no file: the search reads nothing")
	}
}

func TestSecretsDisabledWithoutAKey(t *testing.T) {
	t.Parallel()
	b, _, _ := setupSecrets(t, nil, &syncBuffer{})
	for _, tc := range []struct{ method, path, body string }{
		{"PUT", "/v1/projects/demo/secrets/a", `{"value":"v"}`},
		{"GET", "/v1/projects/demo/secrets", ""},
		{"DELETE", "/v1/projects/demo/secrets/a", ""},
		{"POST", "/v1/projects/demo/commands", `{"command":["true"],"env":{"T":{"secret":"a"}}}`},
	} {
		resp, rb := b.do(t, tc.method, tc.path, "application/json", []byte(tc.body))
		if resp.StatusCode != http.StatusConflict || errCode(t, rb) != "secrets_disabled" {
			t.Errorf("%s %s: %d %s, want 409 secrets_disabled", tc.method, tc.path, resp.StatusCode, rb)
		}
	}
}

// lastJob reads the last job message queued.
func lastJob(t *testing.T, js jetstream.JetStream) contracts.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, contracts.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMsg(ctx, info.State.LastSeq)
	if err != nil {
		t.Fatal(err)
	}
	var j contracts.Job
	if err := json.Unmarshal(m.Data, &j); err != nil {
		t.Fatal(err)
	}
	return j
}
