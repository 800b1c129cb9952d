package notifier_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/contracts/seal"
	"github.com/rdev-dev/rdev/pkg/state/webhookstore"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
	"github.com/rdev-dev/rdev/services/notifier"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var testKey = bytes.Repeat([]byte{7}, seal.KeySize)

// loopback allow-lists the httptest receivers.
var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

// fixture is a provisioned NATS server, the webhook store as the API
// keeps it, and a way to start notifiers on it.
type fixture struct {
	srv   *server.Server
	js    jetstream.JetStream
	store *webhookstore.Store
	kv    struct{ state, hooks, deliveries jetstream.KeyValue }
}

func setup(t *testing.T) *fixture {
	t.Helper()
	srv, _, js := natstest.Provisioned(t)
	f := &fixture{srv: srv, js: js}
	ctx := context.Background()
	var err error
	for name, kv := range map[string]*jetstream.KeyValue{contracts.BucketState: &f.kv.state,
		contracts.BucketWebhooks: &f.kv.hooks, contracts.BucketWebhookDeliveries: &f.kv.deliveries} {
		if *kv, err = js.KeyValue(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	box, err := seal.New(testKey)
	if err != nil {
		t.Fatal(err)
	}
	f.store = webhookstore.New(f.kv.hooks, f.kv.deliveries, box)
	return f
}

// fastConfig retries at once-ish and hands endpoints over quickly.
func fastConfig() notifier.Config {
	return notifier.Config{AllowCIDRs: loopback, RetrySchedule: []time.Duration{20 * time.Millisecond}, NoJitter: true,
		LeaseTTL: 900 * time.Millisecond, Timeout: 10 * time.Second}
}

// running is a started notifier on its own NATS connection.
type running struct {
	svc *notifier.Service
	nc  *nats.Conn
}

// start starts a notifier; it is shut down at cleanup.
func (f *fixture) start(t *testing.T, cfg notifier.Config) running {
	t.Helper()
	r := f.newNotifier(t, cfg)
	if err := r.svc.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	return r
}

func (f *fixture) newNotifier(t *testing.T, cfg notifier.Config) running {
	t.Helper()
	nc := natstest.Connect(t, f.srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	kvs := make([]jetstream.KeyValue, 3)
	for i, name := range []string{contracts.BucketState, contracts.BucketWebhooks, contracts.BucketWebhookDeliveries} {
		if kvs[i], err = js.KeyValue(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	svc, err := notifier.New(cfg, notifier.Deps{JS: js, State: kvs[0], Webhooks: kvs[1], WebhookDeliveries: kvs[2],
		SecretsKey: testKey, Log: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = svc.Shutdown(ctx)
	})
	return running{svc: svc, nc: nc}
}

// testWriter sends logs to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// endpoint stores an endpoint as the API does and returns it with its
// secret.
func (f *fixture) endpoint(t *testing.T, project, url string, events ...contracts.WebhookEventType) (contracts.WebhookRecord, string) {
	t.Helper()
	now := time.Now().UTC()
	id := "wh_" + randomID()
	rec := contracts.WebhookRecord{V: contracts.Version, Webhook: contracts.Webhook{ID: id, Project: project, URL: url,
		Events: events, Active: true, CreatedAt: now, UpdatedAt: now}}
	sec, text := f.store.NewSecret(project, id)
	rec.Secrets = []contracts.WebhookSecret{sec}
	if _, err := f.store.Endpoints.Create(context.Background(), webhookstore.Ref(project, id), rec); err != nil {
		t.Fatal(err)
	}
	return rec, text
}

var idMu sync.Mutex
var idN int

func randomID() string {
	idMu.Lock()
	defer idMu.Unlock()
	idN++
	return "T" + time.Now().Format("150405") + string(rune('A'+idN%26)) + itoa(idN)
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// publish stores a lifecycle event as a worker does.
func (f *fixture) publish(t *testing.T, ev contracts.Event) {
	t.Helper()
	ev.V = contracts.Version
	if ev.StreamID == "" {
		ev.StreamID = "s" + ev.JobID
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	b, _ := json.Marshal(ev)
	if _, err := f.js.Publish(context.Background(), contracts.SubjectEvent(ev.Project, ev.StreamID, ev.Type), b); err != nil {
		t.Fatal(err)
	}
}

// received is one request a receiver got.
type received struct {
	header http.Header
	body   []byte
	at     time.Time
}

// receiver is an httptest server answering with answer(n) to its n-th
// request (from 0), recording every request.
type receiver struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []received
	got  chan struct{} // a request arrived
}

func newReceiver(t *testing.T, answer func(n int, w http.ResponseWriter, r *http.Request)) *receiver {
	t.Helper()
	rc := &receiver{got: make(chan struct{}, 1<<16)}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		n := len(rc.reqs)
		rc.reqs = append(rc.reqs, received{header: r.Header.Clone(), body: body, at: time.Now()})
		rc.mu.Unlock()
		rc.got <- struct{}{}
		if answer != nil {
			answer(n, w, r)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) requests() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.reqs...)
}

// payload decodes a request's body.
func payload(t *testing.T, r received) contracts.WebhookPayload {
	t.Helper()
	var p contracts.WebhookPayload
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("body %s: %v", r.body, err)
	}
	return p
}

func jetstreamFilter(subject string) jetstream.OrderedConsumerConfig {
	return jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}}
}

func jetstreamWait(d time.Duration) jetstream.FetchOpt { return jetstream.FetchMaxWait(d) }

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
