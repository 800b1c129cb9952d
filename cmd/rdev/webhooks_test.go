package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// rdev up runs the notifier: a webhook created through the API is told
// of a job's start and end, signed with the secret the API showed, and
// the deliveries read back through the API; a ping and a redelivery go
// out too.
func TestWebhookThroughRdevUp(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got []contracts.WebhookPayload
	var ids []string
	var verifyErr error
	var secret string
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		wh, err := standardwebhooks.NewWebhook(secret)
		if err == nil {
			err = wh.Verify(body, r.Header)
		}
		verifyErr = err
		var p contracts.WebhookPayload
		_ = json.Unmarshal(body, &p)
		got = append(got, p)
		ids = append(ids, r.Header.Get("webhook-id"))
	}))
	t.Cleanup(rc.Close)
	n := startInProcess(t, "--webhook-allow-cidrs", "127.0.0.0/8")
	if status, rb := call(t, http.MethodPost, n.http+"/v1/projects", map[string]string{"id": "hooks"}); status != http.StatusCreated {
		t.Fatalf("create project: %d %s", status, rb)
	}
	status, rb := call(t, http.MethodPost, n.http+"/v1/projects/hooks/webhooks", map[string]any{
		"url": rc.URL, "events": []string{"job.started", "job.failed"}})
	if status != http.StatusCreated {
		t.Fatalf("create webhook: %d %s", status, rb)
	}
	created := mustJSON[contracts.WebhookCreated](t, rb)
	mu.Lock()
	secret = created.Secret
	mu.Unlock()
	r := submit(t, n.http, "hooks", map[string]any{"command": []string{"sh", "-c", "exit 3"}})
	waitFinal(t, n.http, r.JobID, 30*time.Second)
	await.Within(t, 30*time.Second, "two deliveries", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) >= 2 })
	mu.Lock()
	if verifyErr != nil || len(got) != 2 || got[0].Type != contracts.WebhookJobStarted || got[1].Type != contracts.WebhookJobFailed ||
		got[1].Data.ExitCode == nil || *got[1].Data.ExitCode != 3 || got[1].Data.JobID != r.JobID {
		t.Errorf("deliveries %+v (verify: %v)", got, verifyErr)
	}
	mu.Unlock()
	base := n.http + "/v1/projects/hooks/webhooks/" + created.ID
	await.Within(t, 30*time.Second, "the deliveries recorded as succeeded", func() bool {
		status, rb := call(t, http.MethodGet, base+"/deliveries?status=succeeded", nil)
		return status == http.StatusOK && len(mustJSON[contracts.WebhookDeliveryPage](t, rb).Deliveries) == 2
	})
	if status, rb := call(t, http.MethodPost, base+"/test", nil); status != http.StatusAccepted {
		t.Fatalf("test: %d %s", status, rb)
	}
	await.Within(t, 30*time.Second, "the ping", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 3 && got[2].Type == contracts.WebhookPing && verifyErr == nil
	})
	mu.Lock()
	failedID := ids[1]
	mu.Unlock()
	if status, rb := call(t, http.MethodPost, base+"/deliveries/"+failedID+"/redeliver", nil); status != http.StatusAccepted {
		t.Fatalf("redeliver: %d %s", status, rb)
	}
	await.Within(t, 30*time.Second, "the redelivery, same webhook-id", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 4 && ids[3] == failedID && got[3].Type == contracts.WebhookJobFailed && verifyErr == nil
	})
	var d contracts.WebhookDeliveryRecord
	await.Within(t, 30*time.Second, "the redelivery recorded", func() bool {
		status, rb := call(t, http.MethodGet, base+"/deliveries/"+failedID, nil)
		d = mustJSON[contracts.WebhookDeliveryRecord](t, rb)
		return status == http.StatusOK && d.Status == contracts.DeliverySucceeded && d.Attempts == 2
	})
	if len(d.AttemptLog) != 2 || d.AttemptLog[1].RequestHeaders["Webhook-Id"] != failedID {
		t.Errorf("attempts %+v", d.AttemptLog)
	}
}

// A notifier process killed with SIGKILL while a delivery waits for its
// retry: another notifier process takes the endpoint over once the lease
// expires, and the delivery is accepted once, with the same webhook-id.
func TestWebhookSurvivesNotifierKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts rdev processes")
	}
	t.Parallel()
	var mu sync.Mutex
	var ids []string
	accepted := 0
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		ids = append(ids, r.Header.Get("webhook-id"))
		if len(ids) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable) // retried after 5 s
			return
		}
		accepted++
	}))
	t.Cleanup(rc.Close)
	n := startInProcess(t, "--without", "notifier")
	notifier := func() *node {
		return startProcess(t, "notifier", "--nats-url", n.nats, "--nats-nkey", n.seed("notifier"),
			"--secrets-key-file", filepath.Join(n.dataDir, "secrets.key"), "--webhook-allow-cidrs", "127.0.0.0/8",
			"--webhook-lease-ttl", "1s")
	}
	first := notifier()
	if status, rb := call(t, http.MethodPost, n.http+"/v1/projects", map[string]string{"id": "hooks"}); status != http.StatusCreated {
		t.Fatalf("create project: %d %s", status, rb)
	}
	status, rb := call(t, http.MethodPost, n.http+"/v1/projects/hooks/webhooks", map[string]any{"url": rc.URL, "events": []string{"job.succeeded"}})
	if status != http.StatusCreated {
		t.Fatalf("create webhook: %d %s", status, rb)
	}
	base := n.http + "/v1/projects/hooks/webhooks/" + mustJSON[contracts.WebhookCreated](t, rb).ID
	r := submit(t, n.http, "hooks", map[string]any{"command": []string{"true"}})
	waitFinal(t, n.http, r.JobID, 30*time.Second)
	var d contracts.WebhookDelivery
	await.Within(t, 30*time.Second, "the first attempt recorded", func() bool {
		_, rb := call(t, http.MethodGet, base+"/deliveries", nil)
		p := mustJSON[contracts.WebhookDeliveryPage](t, rb)
		if len(p.Deliveries) == 1 {
			d = p.Deliveries[0]
		}
		return d.Attempts == 1 && d.Status == contracts.DeliveryPending
	})
	first.kill()
	notifier()
	await.Within(t, 60*time.Second, "the delivery accepted", func() bool {
		_, rb := call(t, http.MethodGet, base+"/deliveries/"+d.ID, nil)
		got := mustJSON[contracts.WebhookDeliveryRecord](t, rb)
		return got.Status == contracts.DeliverySucceeded && got.Attempts == 2
	})
	mu.Lock()
	defer mu.Unlock()
	if accepted != 1 || len(ids) != 2 || ids[0] != d.ID || ids[1] != d.ID {
		t.Errorf("%d accepted, webhook-ids %v, want 1 accepted and %s twice", accepted, ids, d.ID)
	}
}
