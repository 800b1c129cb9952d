package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// The webhook endpoints: CRUD with clear refusals, the secret shown at
// creation and rotation only and stored sealed, pings and redeliveries
// queued as pending deliveries, every change audited.
func TestWebhookEndpoints(t *testing.T) {
	t.Parallel()
	b, _, stop := setupSecrets(t, bytes.Repeat([]byte{0x42}, 32), &syncBuffer{})
	t.Cleanup(stop)
	var answers []string
	do := b.recorder(t, &answers)
	code := func(rb []byte) string {
		var eb contracts.ErrorBody
		_ = json.Unmarshal(rb, &eb)
		return eb.Error.Code
	}
	base := "/v1/projects/demo/webhooks"

	for _, c := range []struct{ body, code string }{
		{`{"url":"ftp://example.com/x","events":["job.failed"]}`, "invalid_url"},
		{`{"url":"https://user:pw@example.com/x","events":["job.failed"]}`, "invalid_url"},
		{`{"url":"/relative","events":["job.failed"]}`, "invalid_url"},
		{`{"url":"https://example.com/x","events":[]}`, "invalid_events"},
		{`{"url":"https://example.com/x","events":["job.exploded"]}`, "invalid_events"},
		{`{"url":"https://example.com/x","events":["job.failed"],"colour":"red"}`, "unknown_field"},
	} {
		if st, rb := do(http.MethodPost, base, c.body); st != http.StatusBadRequest || code(rb) != c.code {
			t.Errorf("create %s: %d %s, want 400 %s", c.body, st, rb, c.code)
		}
	}
	st, rb := do(http.MethodPost, base, `{"url":"https://example.com/hook","events":["job.succeeded","job.failed","job.failed"],"description":"ci"}`)
	if st != http.StatusCreated {
		t.Fatalf("create: %d %s", st, rb)
	}
	createdAt := len(answers)
	var created contracts.WebhookCreated
	if err := json.Unmarshal(rb, &created); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(created.Secret, contracts.WebhookSecretPrefix) || !created.Active || len(created.Events) != 2 || !contracts.ValidWebhookID(created.ID) {
		t.Fatalf("created %+v", created)
	}
	if _, err := standardwebhooks.NewWebhook(created.Secret); err != nil {
		t.Fatalf("the secret is not one the specification's library reads: %v", err)
	}
	one := base + "/" + created.ID

	if st, rb := do(http.MethodGet, one, ""); st != http.StatusOK || bytes.Contains(rb, []byte("secret\"")) {
		t.Errorf("get: %d %s", st, rb)
	}
	if st, rb := do(http.MethodGet, base+"/wh_nosuch", ""); st != http.StatusNotFound || code(rb) != "webhook_not_found" {
		t.Errorf("get unknown: %d %s", st, rb)
	}
	if st, rb := do(http.MethodPatch, one, `{}`); st != http.StatusBadRequest || code(rb) != "empty_patch" {
		t.Errorf("empty patch: %d %s", st, rb)
	}
	st, rb = do(http.MethodPatch, one, `{"events":["job.started"],"active":false}`)
	var patched contracts.Webhook
	if err := json.Unmarshal(rb, &patched); st != http.StatusOK || err != nil || patched.Active || len(patched.Events) != 1 {
		t.Errorf("patch: %d %s", st, rb)
	}
	st, rb = do(http.MethodPost, one+"/rotate-secret", "")
	var rotated contracts.WebhookRotated
	if err := json.Unmarshal(rb, &rotated); st != http.StatusOK || err != nil || rotated.Secret == created.Secret ||
		time.Until(rotated.PreviousSecretExpiresAt) < 23*time.Hour {
		t.Errorf("rotate: %d %s", st, rb)
	}

	st, rb = do(http.MethodPost, one+"/test", "")
	var ping contracts.WebhookDelivery
	if err := json.Unmarshal(rb, &ping); st != http.StatusAccepted || err != nil || ping.Type != contracts.WebhookPing || ping.Status != contracts.DeliveryPending {
		t.Fatalf("test: %d %s", st, rb)
	}
	st, rb = do(http.MethodGet, one+"/deliveries?status=pending&limit=10", "")
	var page contracts.WebhookDeliveryPage
	if err := json.Unmarshal(rb, &page); st != http.StatusOK || err != nil || len(page.Deliveries) != 1 || page.Deliveries[0].ID != ping.ID {
		t.Errorf("deliveries: %d %s", st, rb)
	}
	for _, q := range []string{"status=lost", "limit=0", "limit=x", "cursor=abc"} {
		if st, rb := do(http.MethodGet, one+"/deliveries?"+q, ""); st != http.StatusBadRequest {
			t.Errorf("deliveries?%s: %d %s", q, st, rb)
		}
	}
	st, rb = do(http.MethodGet, one+"/deliveries/"+ping.ID, "")
	var rec contracts.WebhookDeliveryRecord
	if err := json.Unmarshal(rb, &rec); st != http.StatusOK || err != nil || !strings.Contains(rec.Body, `"type":"ping"`) {
		t.Errorf("delivery: %d %s", st, rb)
	}
	if st, rb := do(http.MethodGet, one+"/deliveries/msg_nosuch", ""); st != http.StatusNotFound || code(rb) != "delivery_not_found" {
		t.Errorf("unknown delivery: %d %s", st, rb)
	}
	if st, rb := do(http.MethodPost, one+"/deliveries/"+ping.ID+"/redeliver", ""); st != http.StatusConflict || code(rb) != "delivery_pending" {
		t.Errorf("redeliver pending: %d %s", st, rb)
	}

	// A key that is not admin is refused, whatever its project roles.
	if st, rb := do(http.MethodGet, base, "", "Authorization", ""); st != http.StatusUnauthorized {
		t.Errorf("no key: %d %s", st, rb)
	}
	if st, rb := do(http.MethodDelete, one, ""); st != http.StatusNoContent {
		t.Errorf("delete: %d %s", st, rb)
	}
	if st, rb := do(http.MethodDelete, one, ""); st != http.StatusNotFound {
		t.Errorf("delete again: %d %s", st, rb)
	}

	// Stored sealed: the bucket holds no secret a reader could sign with.
	kv, err := b.js.KeyValue(context.Background(), contracts.BucketWebhooks)
	if err != nil {
		t.Fatal(err)
	}
	await.Within(t, 5*time.Second, "every change audited", func() bool {
		p := b.audit(t, "limit=1000")
		kinds := map[contracts.AuditKind]bool{}
		for _, r := range p.Records {
			kinds[r.Kind] = true
		}
		return kinds[contracts.AuditWebhookCreated] && kinds[contracts.AuditWebhookUpdated] &&
			kinds[contracts.AuditWebhookSecretRotated] && kinds[contracts.AuditWebhookDeleted]
	})
	raw := strings.TrimPrefix(created.Secret, contracts.WebhookSecretPrefix)
	for _, a := range answers[createdAt:] {
		if strings.Contains(a, raw) {
			t.Errorf("an answer after the create shows the secret: %s", a)
		}
	}
	hist, err := kv.History(context.Background(), contracts.WebhookKey("demo", created.ID))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range hist {
		if bytes.Contains(e.Value(), []byte(raw)) {
			t.Error("the bucket holds the secret in the clear")
		}
	}
}
