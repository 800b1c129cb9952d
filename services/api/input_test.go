package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
)

// Input the API used to accept (issue 11, section 4): each is refused
// with a 4xx status and a code, and queues or stores nothing.
func TestInputStillAcceptedIsRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cmd := "/v1/projects/demo/commands"
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"case-variant key", "POST", cmd, `{"command":["true"],"COMMAND":["false"]}`, 400, "unknown_field"},
		{"non-exact name alone", "POST", cmd, `{"Command":["false"]}`, 400, "unknown_field"},
		{"duplicate key", "POST", cmd, `{"command":["true"],"command":["false"]}`, 400, "invalid_json"},
		{"duplicate nested key", "POST", cmd, `{"command":["true"],"env":{"A":"1","A":"2"}}`, 400, "invalid_json"},
		{"case-variant in claude options", "POST", "/v1/projects/demo/claude", `{"prompt":"x","Model":"opus"}`, 400, "unknown_field"},
		{"duplicate in batch item", "POST", "/v1/projects/demo/batches?atomic=true", `[{"command":["true"],"command":["false"]}]`, 400, "batch_refused"},
		{"timeout overflow", "POST", cmd, `{"command":["true"],"timeout_seconds":9223372037}`, 400, "invalid_timeout"},
		{"timeout beyond int64", "POST", cmd, `{"command":["true"],"timeout_seconds":92233720368547758070}`, 400, "invalid_field"},
		{"huge max_attempts", "POST", cmd, `{"command":["true"],"max_attempts":9223372036854775807}`, 400, "invalid_max_attempts"},
		{"lone high surrogate", "POST", cmd, `{"command":["echo","\ud800"]}`, 400, "invalid_json"},
		{"lone low surrogate", "POST", cmd, `{"command":["echo","\udc00x"]}`, 400, "invalid_json"},
		{"surrogate in key", "POST", cmd, `{"command":["true"],"env":{"\ud800":"x"}}`, 400, "invalid_json"},
		{"pod memory", "POST", "/v1/projects", `{"id":"podmem","pod":{"memory":"lots"}}`, 400, "invalid_pod"},
		{"pod cpu", "POST", "/v1/projects", `{"id":"podcpu","pod":{"cpu":"-1"}}`, 400, "invalid_pod"},
		{"pod image", "POST", "/v1/projects", `{"id":"podimg","pod":{"image":"../../\u0000"}}`, 400, "invalid_pod"},
		{"pod image patch", "PATCH", "/v1/projects/demo", `{"pod":{"image":"acme/UPPER:tag"}}`, 400, "invalid_pod"},
		{"project name with ESC", "POST", "/v1/projects", `{"id":"esc","name":"a\u001b[31mred"}`, 400, "invalid_name"},
		{"project name with newline", "PATCH", "/v1/projects/demo", `{"name":"a\nb"}`, 400, "invalid_name"},
		{"key name with newline", "POST", "/v1/keys", `{"name":"a\nb","scopes":["read"]}`, 400, "invalid_name"},
		{"key for a project that does not exist", "POST", "/v1/keys", `{"name":"k","scopes":["project:nonexist:read"]}`, 404, "project_not_found"},
		{"revoke wildcard key *", "DELETE", "/v1/keys/*", ``, 404, "key_not_found"},
		{"revoke wildcard key >", "DELETE", "/v1/keys/>", ``, 404, "key_not_found"},
		{"get wildcard key", "GET", "/v1/keys/*", ``, 404, "key_not_found"},
		{"delete wildcard project", "DELETE", "/v1/projects/*", ``, 400, "invalid_project"},
		{"patch wildcard project", "PATCH", "/v1/projects/>", `{"name":"x"}`, 400, "invalid_project"},
		{"retry wildcard dead letter", "POST", "/v1/dead-letters/*/retry", ``, 404, "dead_letter_not_found"},
		{"wildcard batch", "GET", "/v1/batches/*", ``, 400, "invalid_batch_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctype := ""
			if tc.body != "" {
				ctype = "application/json"
			}
			resp, body := b.do(t, tc.method, tc.path, ctype, []byte(tc.body))
			var eb contracts.ErrorBody
			if err := json.Unmarshal(body, &eb); err != nil {
				t.Fatalf("body is not an error body: %d %s", resp.StatusCode, body)
			}
			if resp.StatusCode != tc.status || eb.Error.Code != tc.code || eb.Error.Message == "" {
				t.Fatalf("got %d %s %q, want %d %s", resp.StatusCode, eb.Error.Code, eb.Error.Message, tc.status, tc.code)
			}
		})
	}
	if n := natstest.Msgs(t, b.js, contracts.StreamJobs); n != 0 {
		t.Fatalf("bad input queued %d jobs", n)
	}
	// Nothing was stored: the refused projects do not exist, demo is unchanged.
	for _, id := range []string{"podmem", "podcpu", "podimg", "esc"} {
		if resp, _ := b.get(t, "/v1/projects/"+id); resp.StatusCode != http.StatusNotFound {
			t.Errorf("refused project %s exists: %d", id, resp.StatusCode)
		}
	}
	_, pb := b.get(t, "/v1/projects/demo")
	if strings.Contains(string(pb), "UPPER") || strings.Contains(string(pb), `a\nb`) {
		t.Errorf("a refused patch changed demo: %s", pb)
	}
}

// What is legal stays accepted: names beginning with "..", valid pod
// settings, surrogate pairs, and env names differing only in case.
func TestLegalInputStillAccepted(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, tc := range []struct{ name, method, path, body string }{
		{"work_dir ..foo", "POST", "/v1/projects/demo/commands", `{"command":["true"],"work_dir":"..foo"}`},
		{"work_dir a/..b", "POST", "/v1/projects/demo/commands", `{"command":["true"],"work_dir":"a/..b/c"}`},
		{"surrogate pair", "POST", "/v1/projects/demo/commands", `{"command":["echo","\ud83d\ude00"]}`},
		{"env case variants", "POST", "/v1/projects/demo/commands", `{"command":["true"],"env":{"Path":"a","PATH":"b"}}`},
		{"pod settings", "POST", "/v1/projects", `{"id":"podok","pod":{"image":"ghcr.io/acme/ws:1.2@sha256:` + strings.Repeat("a", 64) + `","cpu":"500m","memory":"1Gi"}}`},
		{"pod short image", "PATCH", "/v1/projects/demo", `{"pod":{"image":"ubuntu"}}`},
	} {
		resp, body := b.do(t, tc.method, tc.path, "application/json", []byte(tc.body))
		if resp.StatusCode >= 300 {
			t.Errorf("%s: %d %s", tc.name, resp.StatusCode, body)
		}
	}
}
