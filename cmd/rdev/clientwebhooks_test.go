package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// signedReceiver is a real HTTP endpoint that checks every delivery's
// signature against the secret the test gives it.
type signedReceiver struct {
	*httptest.Server
	mu     sync.Mutex
	secret string
	ids    []string
	bad    []string // why deliveries failed verification
}

func newSignedReceiver(t *testing.T) *signedReceiver {
	t.Helper()
	r := &signedReceiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		wh, err := standardwebhooks.NewWebhook(r.secret)
		if err == nil {
			err = wh.Verify(body, req.Header)
		}
		if err != nil {
			r.bad = append(r.bad, err.Error())
		}
		r.ids = append(r.ids, req.Header.Get("webhook-id"))
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *signedReceiver) setSecret(s string) { r.mu.Lock(); r.secret = s; r.mu.Unlock() }

// count returns how many deliveries with webhook-id id arrived.
func (r *signedReceiver) count(id string) int {
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

// The webhooks commands against `rdev up` and a receiver that verifies
// signatures: a bad event is refused with the API's code and creates
// nothing; create prints the secret once (ls never); test waits for the
// ping's outcome and fails on an inactive endpoint; update turns it off
// and on; rotate-secret's secret signs what follows; deliveries,
// delivery and redeliver read and resend; delete.
func TestWebhooksCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	t.Parallel()
	rc := newSignedReceiver(t)
	n := startInProcess(t, "--webhook-allow-cidrs", "127.0.0.0/8")
	createProject(t, n, "hookc")
	env := append(serverEnv(n), "RDEV_PROJECT=hookc")
	cli := func(args ...string) string {
		t.Helper()
		out, stderr, code := runCLI(t, env, args...)
		if code != 0 {
			t.Fatalf("rdev %v: exit %d, %s", args, code, stderr)
		}
		return out
	}
	fails := func(want string, args ...string) {
		t.Helper()
		out, stderr, code := runCLI(t, env, args...)
		if code != 1 || !strings.Contains(stderr, want) {
			t.Fatalf("rdev %v: exit %d, stdout %q, stderr %q; want exit 1 and %q", args, code, out, stderr, want)
		}
	}

	fails("invalid_events", "webhooks", "create", "--event", "job.nope", rc.URL)
	if l := mustJSON[contracts.WebhookList](t, cli("webhooks", "ls", "-o", "json")); len(l.Webhooks) != 0 {
		t.Fatalf("a refused create left %+v", l.Webhooks)
	}
	created := mustJSON[contracts.WebhookCreated](t, cli("webhooks", "create", "-o", "json", "--event", "job.succeeded,job.failed",
		"--description", "ci", rc.URL))
	if !strings.HasPrefix(created.Secret, "whsec_") || len(created.Events) != 2 || created.Description != "ci" {
		t.Fatalf("created %+v", created)
	}
	rc.setSecret(created.Secret)
	if out := cli("webhooks", "ls"); !strings.Contains(out, created.ID) || strings.Contains(out, created.Secret) {
		t.Fatalf("ls (the endpoint, never its secret):\n%s", out)
	}

	ping := mustJSON[contracts.WebhookDeliveryRecord](t, cli("webhooks", "test", "-o", "json", created.ID))
	if ping.Status != contracts.DeliverySucceeded || rc.count(ping.ID) != 1 {
		t.Fatalf("test: %+v, received %d times", ping, rc.count(ping.ID))
	}

	if off := mustJSON[contracts.Webhook](t, cli("webhooks", "update", "-o", "json", "--no-active", created.ID)); off.Active {
		t.Fatalf("update --no-active: %+v", off)
	}
	fails("nothing to change", "webhooks", "update", created.ID)
	fails("no attempt within", "webhooks", "test", "--wait", "1s", created.ID)
	if on := mustJSON[contracts.Webhook](t, cli("webhooks", "update", "-o", "json", "--active", created.ID)); !on.Active {
		t.Fatalf("update --active: %+v", on)
	}

	rot := mustJSON[contracts.WebhookRotated](t, cli("webhooks", "rotate-secret", "-o", "json", created.ID))
	if rot.Secret == created.Secret || !strings.HasPrefix(rot.Secret, "whsec_") {
		t.Fatalf("rotate: %+v", rot)
	}
	rc.setSecret(rot.Secret)
	second := mustJSON[contracts.WebhookDeliveryRecord](t, cli("webhooks", "test", "-o", "json", created.ID))
	if second.Status != contracts.DeliverySucceeded {
		t.Fatalf("test after rotation: %+v", second)
	}

	out := cli("webhooks", "deliveries", "--status", "succeeded", created.ID)
	if !strings.Contains(out, ping.ID) || !strings.Contains(out, second.ID) {
		t.Fatalf("deliveries:\n%s", out)
	}
	if out := cli("webhooks", "delivery", created.ID, ping.ID); !strings.Contains(out, "succeeded") || !strings.Contains(out, "200") {
		t.Fatalf("delivery:\n%s", out)
	}
	cli("webhooks", "redeliver", created.ID, ping.ID)
	await.Within(t, 30*time.Second, "the redelivered ping, same webhook-id", func() bool { return rc.count(ping.ID) == 2 })

	// The ping queued while the endpoint was off went out once it was on.
	await.Within(t, 30*time.Second, "three pings, all accepted", func() bool {
		var pg contracts.WebhookDeliveryPage
		if err := json.Unmarshal([]byte(cli("webhooks", "deliveries", "-o", "json", created.ID)), &pg); err != nil {
			t.Fatal(err)
		}
		ok := 0
		for _, d := range pg.Deliveries {
			if d.Type == contracts.WebhookPing && d.Status == contracts.DeliverySucceeded {
				ok++
			}
		}
		return len(pg.Deliveries) == 3 && ok == 3
	})

	cli("webhooks", "delete", created.ID)
	fails("webhook_not_found", "webhooks", "get", created.ID)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.bad) > 0 {
		t.Errorf("deliveries that failed verification: %v", rc.bad)
	}
}
