package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// Separate api and streamer processes on one NATS accept the same keys:
// they all read the access bucket. The first `rdev up` without a
// configured key prints a generated admin key once; a revoke through one
// API process reaches another within a second.
func TestProcessesShareKeys(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	t.Parallel()
	dataDir := t.TempDir()
	noKey := []string{"RDEV_BOOTSTRAP_API_KEY="}
	up := startProcessEnv(t, noKey, upArgs(dataDir, "--without", "streamer")...)
	if !strings.HasPrefix(up.adminKey, "rdev_bootstrap_") {
		t.Fatalf("first start printed admin key %q", up.adminKey)
	}
	api := startProcessEnv(t, noKey, "api", "--nats-url", up.nats, "--nats-nkey", up.seed("api"), "--http-addr", "127.0.0.1:0")
	streamer := startProcess(t, "streamer", "--nats-url", up.nats, "--nats-nkey", up.seed("streamer"), "--http-addr", "127.0.0.1:0")
	if api.adminKey != "" {
		t.Fatal("a second API process printed another admin key")
	}

	as := func(key, method, url string, body any) (int, []byte) {
		t.Helper()
		var b []byte
		if body != nil {
			b, _ = json.Marshal(body)
		}
		req, _ := http.NewRequest(method, url, bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		must(t, err, "%s %s", method, url)
		defer resp.Body.Close()
		rb, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, rb
	}
	if code, b := as(up.adminKey, http.MethodPost, up.http+"/v1/projects", map[string]string{"id": "shared"}); code != http.StatusCreated {
		t.Fatalf("create project: %d %s", code, b)
	}
	code, b := as(up.adminKey, http.MethodPost, up.http+"/v1/keys", map[string]any{"name": "ci", "scopes": []string{"project:shared:submit", "project:shared:read"}})
	if code != http.StatusCreated {
		t.Fatalf("create key: %d %s", code, b)
	}
	key := mustJSON[contracts.Key](t, b)

	// Submit through the other API process, watch on the streamer process
	// by token and by key.
	code, b = as(key.Key, http.MethodPost, api.http+"/v1/projects/shared/commands", map[string]any{"command": []string{"echo", "shared"}})
	if code != http.StatusAccepted {
		t.Fatalf("submit on the second API: %d %s", code, b)
	}
	r := mustJSON[contracts.SubmitResponse](t, string(b))
	lines, complete := readToComplete(t, openStream(t, streamer.http, r.EventsURL, ""))
	if len(lines) != 1 || lines[0].Text != "shared" || complete.Status != contracts.StatusSucceeded {
		t.Fatalf("watched by token: %+v %+v", lines, complete)
	}
	req, _ := http.NewRequest(http.MethodGet, streamer.http+"/v1/streams/"+r.StreamID+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+key.Key)
	resp, err := http.DefaultClient.Do(req)
	must(t, err, "watch by key")
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("watch by key on the streamer process: %d", resp.StatusCode)
	}

	// Revoke through `up`; the other API process refuses within a second.
	if code, b := as(up.adminKey, http.MethodDelete, up.http+"/v1/keys/"+key.ID, nil); code != http.StatusOK {
		t.Fatalf("revoke: %d %s", code, b)
	}
	revoked := time.Now()
	for {
		code, _ := as(key.Key, http.MethodGet, api.http+"/v1/projects/shared", nil)
		if code == http.StatusUnauthorized {
			break
		}
		if time.Since(revoked) > time.Second {
			t.Fatalf("second API process accepts a revoked key after 1s: %d", code)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// A restart does not print a key again.
	api.stop()
	streamer.stop()
	up.stop()
	again := startProcessEnv(t, noKey, upArgs(dataDir, "--without", "streamer")...)
	if again.adminKey != "" {
		t.Fatalf("restart printed a new admin key")
	}
	if code, b := as(up.adminKey, http.MethodGet, again.http+"/v1/keys", nil); code != http.StatusOK {
		t.Fatalf("the printed key after restart: %d %s", code, b)
	}
}
