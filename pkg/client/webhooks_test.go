package client_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/client"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// receiver is a real HTTP endpoint that records each delivery's
// webhook-id and type.
type receiver struct {
	*httptest.Server
	mu   sync.Mutex
	ids  []string
	typs []contracts.WebhookEventType
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	r := &receiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		var p contracts.WebhookPayload
		_ = json.Unmarshal(body, &p)
		r.mu.Lock()
		defer r.mu.Unlock()
		r.ids = append(r.ids, req.Header.Get("webhook-id"))
		r.typs = append(r.typs, p.Type)
	}))
	t.Cleanup(r.Close)
	return r
}

// got returns how many times a delivery with id arrived.
func (r *receiver) got(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, x := range r.ids {
		if x == id {
			n++
		}
	}
	return n
}

// Every webhook call against a real API (each request and reply checked
// against the OpenAPI description): create, list, get, update, a ping
// that reaches a real receiver, its delivery listed and read, a
// redelivery under the same webhook-id, a rotation, a delete; and the
// API's refusals arrive as typed errors.
func TestWebhooks(t *testing.T) {
	t.Parallel()
	c := newClient(t, adminKey)
	project(t, c, "client-hooks")
	rc := newReceiver(t)

	if _, err := c.CreateWebhook(ctx(t), "client-hooks", contracts.WebhookRequest{URL: rc.URL, Events: []contracts.WebhookEventType{"job.nope"}}); !client.IsCode(err, "invalid_events") {
		t.Fatalf("create with an unknown event: %v, want invalid_events", err)
	}
	created, err := c.CreateWebhook(ctx(t), "client-hooks", contracts.WebhookRequest{URL: rc.URL, Events: []contracts.WebhookEventType{contracts.WebhookJobFailed}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(created.Secret, "whsec_") || !created.Active || created.URL != rc.URL {
		t.Fatalf("created %+v", created)
	}
	l, err := c.Webhooks(ctx(t), "client-hooks")
	if err != nil || len(l.Webhooks) != 1 || l.Webhooks[0].ID != created.ID {
		t.Fatalf("list: %+v, %v", l, err)
	}
	desc := "ci alerts"
	events := []contracts.WebhookEventType{contracts.WebhookJobFailed, contracts.WebhookJobSucceeded}
	wh, err := c.UpdateWebhook(ctx(t), "client-hooks", created.ID, contracts.WebhookPatch{Description: &desc, Events: &events})
	if err != nil || wh.Description != desc || !slices.Equal(wh.Events, events) {
		t.Fatalf("update: %+v, %v", wh, err)
	}
	if got, err := c.Webhook(ctx(t), "client-hooks", created.ID); err != nil || got.Description != desc || got.URL != rc.URL {
		t.Fatalf("get: %+v, %v", got, err)
	}

	ping, err := c.TestWebhook(ctx(t), "client-hooks", created.ID)
	if err != nil || ping.Type != contracts.WebhookPing || ping.ID == "" {
		t.Fatalf("test: %+v, %v", ping, err)
	}
	await.Within(t, 30*time.Second, "the ping's delivery recorded as succeeded", func() bool {
		p, err := c.WebhookDeliveries(ctx(t), "client-hooks", created.ID, contracts.DeliverySucceeded, client.Page{Limit: 10})
		return err == nil && len(p.Deliveries) == 1 && p.Deliveries[0].ID == ping.ID
	})
	if rc.got(ping.ID) != 1 {
		t.Fatalf("the receiver got the ping %d times, want 1", rc.got(ping.ID))
	}
	d, err := c.WebhookDelivery(ctx(t), "client-hooks", created.ID, ping.ID)
	if err != nil || d.Attempts != 1 || len(d.AttemptLog) != 1 || d.AttemptLog[0].StatusCode != http.StatusOK {
		t.Fatalf("delivery: %+v, %v", d, err)
	}
	if _, err := c.RedeliverWebhook(ctx(t), "client-hooks", created.ID, ping.ID); err != nil {
		t.Fatal(err)
	}
	await.Within(t, 30*time.Second, "the redelivery, under the same webhook-id", func() bool { return rc.got(ping.ID) == 2 })

	rot, err := c.RotateWebhookSecret(ctx(t), "client-hooks", created.ID)
	if err != nil || !strings.HasPrefix(rot.Secret, "whsec_") || rot.Secret == created.Secret || !rot.PreviousSecretExpiresAt.After(time.Now()) {
		t.Fatalf("rotate: %+v, %v", rot, err)
	}
	if _, err := c.WebhookDeliveries(ctx(t), "client-hooks", created.ID, "bogus", client.Page{}); !client.IsCode(err, "invalid_status") {
		t.Fatalf("deliveries of an unknown status: %v, want invalid_status", err)
	}
	if err := c.DeleteWebhook(ctx(t), "client-hooks", created.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Webhook(ctx(t), "client-hooks", created.ID); !client.IsCode(err, "webhook_not_found") {
		t.Fatalf("get after delete: %v, want webhook_not_found", err)
	}
}
