package notifier_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/state/webhookstore"
)

const bound = 20 * time.Second

// A job's lifecycle produces exactly the subscribed deliveries, in
// order, each verified by the specification's library; a tampered body,
// a wrong secret and an old timestamp do not verify.
func TestLifecycleDeliveriesAreSignedAndInOrder(t *testing.T) {
	t.Parallel()
	f := setup(t)
	rc := newReceiver(t, nil)
	_, secret := f.endpoint(t, "demo", rc.URL, contracts.WebhookJobStarted, contracts.WebhookJobSucceeded, contracts.WebhookJobFailed)
	other := newReceiver(t, nil)
	f.endpoint(t, "other", other.URL, contracts.WebhookJobStarted)
	f.start(t, fastConfig())

	exit := 0
	for _, ev := range []contracts.Event{
		{Type: contracts.EventQueued, Status: contracts.StatusQueued, Attempt: 1},
		{Type: contracts.EventStarted, Status: contracts.StatusRunning, Attempt: 1},
		{Type: contracts.EventRetrying, Status: contracts.StatusQueued, Attempt: 1, Reason: contracts.ReasonWorkerLost},
		{Type: contracts.EventStarted, Status: contracts.StatusRunning, Attempt: 2},
		{Type: contracts.EventSucceeded, Status: contracts.StatusSucceeded, Attempt: 2, ExitCode: &exit, DurationMS: 12, Lines: 3},
	} {
		ev.JobID, ev.Project = "job1", "demo"
		f.publish(t, ev)
	}
	await.Within(t, bound, "three deliveries", func() bool { return len(rc.requests()) >= 3 })
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	reqs := rc.requests()
	var types []contracts.WebhookEventType
	ids := map[string]bool{}
	for _, r := range reqs {
		if err := wh.Verify(r.body, r.header); err != nil {
			t.Errorf("delivery does not verify: %v", err)
		}
		p := payload(t, r)
		types = append(types, p.Type)
		ids[r.header.Get("webhook-id")] = true
		if p.V != contracts.WebhookPayloadVersion || p.Data.JobID != "job1" || p.Data.Links.Job != "/v1/jobs/job1" {
			t.Errorf("payload %+v", p)
		}
	}
	want := []contracts.WebhookEventType{contracts.WebhookJobStarted, contracts.WebhookJobStarted, contracts.WebhookJobSucceeded}
	if !slices.Equal(types, want) || len(ids) != 3 {
		t.Fatalf("delivered %v (%d ids), want %v with 3 ids", types, len(ids), want)
	}
	if last := payload(t, reqs[2]); last.Data.ExitCode == nil || *last.Data.ExitCode != 0 || last.Data.Attempt != 2 || last.Data.Lines != 3 {
		t.Errorf("terminal payload %+v", last.Data)
	}
	if n := len(other.requests()); n != 0 {
		t.Errorf("another project's endpoint got %d deliveries", n)
	}

	r := reqs[0]
	tampered := append([]byte(nil), r.body...)
	tampered[len(tampered)-2] ^= 1
	if err := wh.Verify(tampered, r.header); !errors.Is(err, standardwebhooks.ErrNoMatchingSignature) {
		t.Errorf("tampered body: %v", err)
	}
	wrong, _ := standardwebhooks.NewWebhook("whsec_" + strings.Repeat("QUJD", 8))
	if err := wrong.Verify(r.body, r.header); !errors.Is(err, standardwebhooks.ErrNoMatchingSignature) {
		t.Errorf("wrong secret: %v", err)
	}
	old := r.header.Clone()
	stale := time.Now().Add(-time.Hour)
	sig, _ := wh.Sign(old.Get("webhook-id"), stale, r.body)
	old.Set("webhook-timestamp", itoa(int(stale.Unix())))
	old.Set("webhook-signature", sig)
	if err := wh.Verify(r.body, old); !errors.Is(err, standardwebhooks.ErrMessageTooOld) {
		t.Errorf("old timestamp: %v", err)
	}
}

// During a rotation both secrets verify every delivery.
func TestRotationSignsWithBothSecrets(t *testing.T) {
	t.Parallel()
	f := setup(t)
	rc := newReceiver(t, nil)
	ep, oldSecret := f.endpoint(t, "demo", rc.URL, contracts.WebhookJobStarted)
	var newSecret string
	if _, err := f.store.Endpoints.Modify(context.Background(), webhookstore.Ref("demo", ep.ID), func(r *contracts.WebhookRecord) (bool, error) {
		newSecret = f.store.Rotate(r, time.Now(), time.Hour)
		return true, nil
	}); err != nil {
		t.Fatal(err)
	}
	f.start(t, fastConfig())
	f.publish(t, contracts.Event{Type: contracts.EventStarted, JobID: "job1", Project: "demo", Status: contracts.StatusRunning, Attempt: 1})
	await.Within(t, bound, "the delivery", func() bool { return len(rc.requests()) == 1 })
	r := rc.requests()[0]
	if n := len(strings.Fields(r.header.Get("webhook-signature"))); n != 2 {
		t.Errorf("%d signatures, want 2", n)
	}
	for _, s := range []string{oldSecret, newSecret} {
		wh, _ := standardwebhooks.NewWebhook(s)
		if err := wh.Verify(r.body, r.header); err != nil {
			t.Errorf("does not verify with one of the secrets: %v", err)
		}
	}
}

// deliveryOf waits for the one delivery of an endpoint to reach a final
// status and returns it.
func (f *fixture) finalDelivery(t *testing.T, endpoint string) contracts.WebhookDeliveryRecord {
	t.Helper()
	var d contracts.WebhookDeliveryRecord
	await.Within(t, bound, "a final delivery", func() bool {
		all, err := f.store.ListDeliveries(context.Background(), endpoint)
		if err != nil || len(all) != 1 {
			return false
		}
		d = all[0]
		return d.Status.Final()
	})
	return d
}

// A receiver that fails three times then succeeds: one accepted delivery
// with four recorded attempts, one webhook-id.
func TestRetriesUntilAccepted(t *testing.T) {
	t.Parallel()
	f := setup(t)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("busy"))
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	ep, _ := f.endpoint(t, "demo", rc.URL, contracts.WebhookJobFailed)
	f.start(t, fastConfig())
	f.publish(t, contracts.Event{Type: contracts.EventFailed, JobID: "job1", Project: "demo", Status: contracts.StatusFailed, Attempt: 1})
	d := f.finalDelivery(t, ep.ID)
	if d.Status != contracts.DeliverySucceeded || d.Attempts != 4 || len(d.AttemptLog) != 4 || d.LastStatusCode != 200 {
		t.Fatalf("delivery %+v", d.WebhookDelivery)
	}
	if d.AttemptLog[0].StatusCode != http.StatusServiceUnavailable || d.AttemptLog[0].ResponseBody != "busy" {
		t.Errorf("first attempt %+v", d.AttemptLog[0])
	}
	ids := map[string]bool{}
	for _, r := range rc.requests() {
		ids[r.header.Get("webhook-id")] = true
	}
	if len(rc.requests()) != 4 || len(ids) != 1 || !ids[d.ID] {
		t.Errorf("%d requests with ids %v, want 4 with %s", len(rc.requests()), ids, d.ID)
	}
}

// 410 disables the endpoint (audited); another 4xx is final; a 3xx is
// not followed.
func TestFinalAnswers(t *testing.T) {
	t.Parallel()
	f := setup(t)
	target := newReceiver(t, nil)
	gone := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusGone) })
	bad := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadRequest) })
	moved := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL, http.StatusTemporaryRedirect)
	})
	audits, err := f.js.OrderedConsumer(context.Background(), contracts.StreamAudit, jetstreamFilter(contracts.SubjectAuditPrefix+".>"))
	if err != nil {
		t.Fatal(err)
	}
	epGone, _ := f.endpoint(t, "demo", gone.URL, contracts.WebhookJobFailed)
	epBad, _ := f.endpoint(t, "demo", bad.URL, contracts.WebhookJobFailed)
	epMoved, _ := f.endpoint(t, "demo", moved.URL, contracts.WebhookJobFailed)
	f.start(t, fastConfig())
	f.publish(t, contracts.Event{Type: contracts.EventFailed, JobID: "job1", Project: "demo", Status: contracts.StatusFailed, Attempt: 1})
	for _, c := range []struct {
		id   string
		code int
	}{{epGone.ID, 410}, {epBad.ID, 400}, {epMoved.ID, 307}} {
		d := f.finalDelivery(t, c.id)
		if d.Status != contracts.DeliveryFailed || d.Attempts != 1 || d.LastStatusCode != c.code {
			t.Errorf("delivery to the %d receiver: %+v", c.code, d.WebhookDelivery)
		}
	}
	if n := len(target.requests()); n != 0 {
		t.Errorf("the redirect was followed: %d requests", n)
	}
	await.Within(t, bound, "the endpoint disabled", func() bool {
		rec, _, err := f.store.Endpoints.Get(context.Background(), webhookstore.Ref("demo", epGone.ID))
		return err == nil && !rec.Active && rec.DisabledReason == contracts.WebhookDisabledGone && rec.DisabledAt != nil
	})
	for _, id := range []string{epBad.ID, epMoved.ID} {
		if rec, _, _ := f.store.Endpoints.Get(context.Background(), webhookstore.Ref("demo", id)); !rec.Active {
			t.Errorf("endpoint %s disabled by a final answer other than 410", id)
		}
	}
	msg, err := audits.Next(jetstreamWait(bound))
	if err != nil || !strings.HasSuffix(msg.Subject(), "."+string(contracts.AuditWebhookDisabled)) || !strings.Contains(string(msg.Data()), epGone.ID) {
		t.Errorf("audit: %v %v", msg, err)
	}
}

// An endpoint failing for longer than DisableAfter is disabled.
func TestFailingEndpointIsDisabled(t *testing.T) {
	t.Parallel()
	f := setup(t)
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
	ep, _ := f.endpoint(t, "demo", rc.URL, contracts.WebhookJobFailed)
	cfg := fastConfig()
	cfg.DisableAfter = 200 * time.Millisecond
	cfg.BreakerThreshold = 1000
	f.start(t, cfg)
	f.publish(t, contracts.Event{Type: contracts.EventFailed, JobID: "job1", Project: "demo", Status: contracts.StatusFailed, Attempt: 1})
	await.Within(t, bound, "the endpoint disabled as failing", func() bool {
		rec, _, err := f.store.Endpoints.Get(context.Background(), webhookstore.Ref("demo", ep.ID))
		return err == nil && !rec.Active && rec.DisabledReason == contracts.WebhookDisabledFailing && rec.FailingSince != nil
	})
	// The delivery waits, pending, for the endpoint to come back.
	all, err := f.store.ListDeliveries(context.Background(), ep.ID)
	if err != nil || len(all) != 1 || all[0].Status != contracts.DeliveryPending {
		t.Errorf("deliveries %+v, %v", all, err)
	}
}

// After BreakerThreshold failures in a row the endpoint's breaker opens:
// no more attempts while it is, and the deliveries wait, pending.
func TestBreakerStopsHammering(t *testing.T) {
	t.Parallel()
	f := setup(t)
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	ep, _ := f.endpoint(t, "demo", rc.URL, contracts.WebhookJobFailed)
	cfg := fastConfig()
	cfg.BreakerThreshold, cfg.BreakerCooldown, cfg.Concurrency = 3, time.Hour, 1
	n := f.start(t, cfg)
	const jobs = 10
	for j := range jobs {
		f.publish(t, contracts.Event{Type: contracts.EventFailed, JobID: "job" + itoa(j), Project: "demo", Status: contracts.StatusFailed, Attempt: 1})
	}
	await.Within(t, bound, "the breaker open with every delivery queued", func() bool {
		st := n.svc.Stats()
		return st.BreakersOpen == 1 && st.Pending == jobs && st.InFlight == 0
	})
	if got := len(rc.requests()); got != 3 {
		t.Errorf("%d attempts reached the receiver, want the 3 that opened the breaker", got)
	}
	all, err := f.store.ListDeliveries(context.Background(), ep.ID)
	if err != nil || len(all) != jobs {
		t.Fatalf("deliveries %d, %v", len(all), err)
	}
	for _, d := range all {
		if d.Status != contracts.DeliveryPending {
			t.Errorf("delivery %s %s, want pending", d.ID, d.Status)
		}
	}
}

// The notifiers' consumer is offered only the events a webhook is sent for
// or a batch's completion counts, not the queued and scheduled ones that
// are a third of every job's events; a consumer left by a release that
// took every event is narrowed when a notifier starts.
func TestNotifierTakesOnlyTheEventsItUses(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	first := f.start(t, fastConfig())
	if err := first.svc.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	cons, err := f.js.Consumer(ctx, contracts.StreamOutput, contracts.ConsumerNotifierEvents)
	if err != nil {
		t.Fatal(err)
	}
	old := cons.CachedInfo().Config
	old.FilterSubjects, old.FilterSubject = nil, contracts.SubjectEventsPrefix+".>"
	if _, err := f.js.UpdateConsumer(ctx, contracts.StreamOutput, old); err != nil {
		t.Fatal(err)
	}

	rc := newReceiver(t, nil)
	f.endpoint(t, "demo", rc.URL, contracts.WebhookJobStarted)
	f.start(t, fastConfig())
	for _, et := range []contracts.EventType{contracts.EventScheduled, contracts.EventQueued, contracts.EventStarted} {
		f.publish(t, contracts.Event{Type: et, JobID: "job1", Project: "demo", Attempt: 1})
	}
	await.Within(t, bound, "the started delivery", func() bool { return len(rc.requests()) == 1 })
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Delivered.Consumer != 1 || info.NumPending != 0 {
		t.Fatalf("the consumer was offered %d events (%d pending), want only the started one", info.Delivered.Consumer, info.NumPending)
	}
}
