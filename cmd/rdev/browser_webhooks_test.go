package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// The webhooks views against `rdev up`, a receiver that verifies every
// signature and one that answers 410 Gone: a refused URL shows the API's
// code; a created endpoint's secret is shown once and signs what the
// receiver gets; a test ping, its attempts, a redelivery under the same
// webhook-id; off and on; a rotated secret that signs what follows; an
// endpoint rdev disables after a 410; delete; and a key without admin is
// offered none of it.
func TestBrowserWebhooks(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	rc := newSignedReceiver(t)
	gone := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusGone) }))
	t.Cleanup(gone.Close)
	n := startInProcess(t, "--webhook-allow-cidrs", "127.0.0.0/8")
	ui := n.http + "/ui/"
	createProject(t, n, "hooks-ui")
	getWebhook := func(id string) (int, contracts.Webhook) {
		status, rb := call(t, http.MethodGet, n.http+"/v1/projects/hooks-ui/webhooks/"+id, nil)
		var w contracts.Webhook
		if status == http.StatusOK {
			w = mustJSON[contracts.Webhook](t, rb)
		}
		return status, w
	}

	ctx := b.tab(t)
	signIn(t, ctx, ui, adminKey)
	do(t, ctx, "the webhooks view", chromedp.Click(chromedp.CSS(`#nav a[data-view=webhooks]`)),
		until(`location.hash === '#/webhooks' && document.querySelector('#webhooks .empty') !== null`))
	offered := eval[[]string](t, ctx, `[...document.querySelectorAll('#create-webhook fieldset input')].map(i => i.value)`)
	var types []string
	for _, e := range contracts.WebhookEventTypes() {
		types = append(types, string(e))
	}
	if !slices.Equal(offered, types) {
		t.Errorf("the form offers %q, the contract lists %q", offered, types)
	}

	do(t, ctx, "a URL the API refuses", chromedp.SetValue(chromedp.ID("w-url"), "ftp://example.com/hook"), chromedp.Click(chromedp.ID("create")),
		until(`document.querySelector('#create-error [data-code=invalid_url]') !== null`))
	do(t, ctx, "create", chromedp.SetValue(chromedp.ID("w-url"), rc.URL), chromedp.SetValue(chromedp.ID("w-description"), "ci alerts"),
		chromedp.Click(chromedp.ID("w-ev-job-succeeded")), chromedp.Click(chromedp.ID("create")),
		until(`document.querySelector('#webhook-secret') !== null && document.querySelectorAll('#webhooks tr[data-webhook]').length === 1`))
	secret := eval[string](t, ctx, `document.querySelector('#webhook-secret').textContent`)
	id := eval[string](t, ctx, `document.querySelector('#webhooks tr[data-webhook]').dataset.webhook`)
	if status, w := getWebhook(id); status != http.StatusOK || w.URL != rc.URL || w.Description != "ci alerts" ||
		!slices.Equal(w.Events, []contracts.WebhookEventType{contracts.WebhookJobSucceeded, contracts.WebhookJobFailed}) {
		t.Fatalf("created %d %+v", status, w)
	}
	if !strings.HasPrefix(secret, "whsec_") {
		t.Fatalf("the secret shown is %q", secret)
	}
	rc.setSecret(secret)
	b.shot(t, ctx, "webhooks")

	// The endpoint's page: a ping that the receiver verifies, its
	// attempts, and a redelivery under the same webhook-id.
	do(t, ctx, "the endpoint", chromedp.Click(chromedp.CSS(`#webhooks tr[data-webhook] a`)),
		until(fmt.Sprintf(`location.hash === '#/webhooks/hooks-ui/%s' && document.querySelector('#webhook-state [data-state=active]') !== null`, id)),
		until(`document.querySelector('#deliveries .empty') !== null`))
	if eval[bool](t, ctx, `document.querySelector('#webhook-secret') !== null`) {
		t.Error("the endpoint's page shows a secret")
	}
	do(t, ctx, "a test ping", chromedp.Click(chromedp.ID("test")),
		until(`document.querySelector('#deliveries tr[data-status=succeeded]') !== null`))
	ping := eval[string](t, ctx, `document.querySelector('#deliveries tr[data-status=succeeded]').dataset.delivery`)
	if rc.count(ping) != 1 {
		t.Fatalf("the receiver got ping %s %d times", ping, rc.count(ping))
	}
	do(t, ctx, "its attempts", chromedp.Click(chromedp.CSS(`#deliveries tr[data-delivery] button.attempts`)),
		until(`document.querySelector('#deliveries tr.attempt-log tr[data-code="200"]') !== null`))
	do(t, ctx, "redeliver", chromedp.Click(chromedp.CSS(`#deliveries tr[data-delivery] button.redeliver`)))
	await.Within(t, 30*time.Second, "the redelivery, same webhook-id", func() bool { return rc.count(ping) == 2 })

	do(t, ctx, "turn it off", chromedp.Click(chromedp.ID("toggle")), until(`document.querySelector('#webhook-state [data-state=off]') !== null`))
	if _, w := getWebhook(id); w.Active {
		t.Fatal("off on the page, active in the API")
	}
	do(t, ctx, "turn it on", chromedp.Click(chromedp.ID("toggle")), until(`document.querySelector('#webhook-state [data-state=active]') !== null`))

	// A rotated secret is shown once, and what follows verifies with it.
	do(t, ctx, "rotate", chromedp.Click(chromedp.ID("rotate")), chromedp.WaitVisible(chromedp.ID("confirm-ok")), chromedp.Click(chromedp.ID("confirm-ok")),
		until(`document.querySelector('#webhook-secret') !== null`))
	rotated := eval[string](t, ctx, `document.querySelector('#webhook-secret').textContent`)
	if rotated == secret || !strings.HasPrefix(rotated, "whsec_") {
		t.Fatalf("the rotated secret shown is %q", rotated)
	}
	rc.setSecret(rotated)
	if facts := eval[string](t, ctx, `document.querySelector('#facts').textContent`); !strings.Contains(facts, "Previous secret signs untilin 23h") {
		t.Errorf("the facts after a rotation read %q, want the previous secret's end a day ahead", facts)
	}
	do(t, ctx, "a ping signed with it", chromedp.Click(chromedp.ID("test")),
		until(`document.querySelectorAll('#deliveries tr[data-status=succeeded]').length === 2`))
	b.shot(t, ctx, "webhook")
	rc.mu.Lock()
	if len(rc.bad) > 0 {
		t.Errorf("deliveries that failed verification: %v", rc.bad)
	}
	rc.mu.Unlock()

	// An endpoint answering 410 Gone: the delivery fails, and rdev turns
	// the endpoint off, which its page shows by itself.
	status, rb := call(t, http.MethodPost, n.http+"/v1/projects/hooks-ui/webhooks", map[string]any{"url": gone.URL, "events": []string{"job.failed"}})
	if status != http.StatusCreated {
		t.Fatalf("create the gone endpoint: %d %s", status, rb)
	}
	goneID := mustJSON[contracts.WebhookCreated](t, rb).ID
	do(t, ctx, "the gone endpoint", chromedp.Navigate(ui+"#/webhooks/hooks-ui/"+goneID), chromedp.WaitVisible(chromedp.ID("test")),
		chromedp.Click(chromedp.ID("test")),
		until(`document.querySelector('#deliveries tr[data-status=failed]') !== null`),
		until(`document.querySelector('#webhook-state [data-state=disabled]') !== null`))
	if last := eval[string](t, ctx, `document.querySelector('#deliveries tr[data-status=failed] .last').textContent`); !strings.HasPrefix(last, "410") {
		t.Errorf("the failed delivery's last answer reads %q", last)
	}

	do(t, ctx, "delete", chromedp.Navigate(ui+"#/webhooks/hooks-ui/"+id), chromedp.WaitVisible(chromedp.ID("delete")),
		chromedp.Click(chromedp.ID("delete")), chromedp.WaitVisible(chromedp.ID("confirm-ok")), chromedp.Click(chromedp.ID("confirm-ok")),
		until(`location.hash === '#/webhooks/hooks-ui' && document.querySelectorAll('#webhooks tr[data-webhook]').length === 1`))
	if status, _ := getWebhook(id); status != http.StatusNotFound {
		t.Fatalf("the deleted endpoint: %d", status)
	}

	// A key that is not admin sees no Webhooks link, and the view says why.
	status, rb = call(t, http.MethodPost, n.http+"/v1/keys", map[string]any{"name": "hooks-reader", "scopes": []string{"project:hooks-ui:read"}})
	if status != http.StatusCreated {
		t.Fatalf("create key: %d %s", status, rb)
	}
	ro := b.tab(t)
	signIn(t, ro, ui, mustJSON[contracts.Key](t, rb).Key)
	if eval[bool](t, ro, `!document.querySelector('#nav a[data-view=webhooks]').hidden`) {
		t.Error("a reader is offered the Webhooks link")
	}
	do(t, ro, "the view, not admin", chromedp.Navigate(ui+"#/webhooks/hooks-ui"),
		until(`document.querySelector('main').textContent.includes('needs an admin key')`))
}
