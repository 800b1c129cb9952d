package notifier_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/lifecycle"
	"github.com/rdev-dev/rdev/pkg/lifecycle/lifecycletest"
	"github.com/rdev-dev/rdev/pkg/state"
	"github.com/rdev-dev/rdev/services/notifier"
)

// A notifier stopped abruptly while a delivery waits for its retry (its
// NATS connection cut, then a forced shutdown: no lease released, nothing
// more written, as after kill -9) hands the delivery to the next one once
// its lease expires: accepted exactly once, after one more attempt.
func TestCrashMidRetryResumes(t *testing.T) {
	t.Parallel()
	f := setup(t)
	var accepted atomic.Int64
	rc := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 0 {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		accepted.Add(1)
		w.WriteHeader(http.StatusOK)
	})
	ep, _ := f.endpoint(t, "demo", rc.URL, contracts.WebhookJobSucceeded)
	cfg := fastConfig()
	cfg.RetrySchedule = []time.Duration{2 * time.Second} // the first notifier is gone before this
	first := f.start(t, cfg)
	f.publish(t, contracts.Event{Type: contracts.EventSucceeded, JobID: "job1", Project: "demo", Status: contracts.StatusSucceeded, Attempt: 1})
	await.Within(t, bound, "the first, failed attempt recorded", func() bool {
		all, _ := f.store.ListDeliveries(context.Background(), ep.ID)
		return len(all) == 1 && all[0].Attempts == 1 && all[0].Status == contracts.DeliveryPending
	})
	first.nc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = first.svc.Shutdown(ctx)

	f.start(t, fastConfig())
	d := f.finalDelivery(t, ep.ID)
	if d.Status != contracts.DeliverySucceeded || d.Attempts != 2 || accepted.Load() != 1 || len(rc.requests()) != 2 {
		t.Fatalf("after the crash: %+v, %d accepted, %d requests", d.WebhookDelivery, accepted.Load(), len(rc.requests()))
	}
	if a, b := rc.requests()[0].header.Get("webhook-id"), rc.requests()[1].header.Get("webhook-id"); a != b {
		t.Errorf("webhook-id changed across the crash: %s, %s", a, b)
	}
}

// Two replicas share the endpoints: every delivery sent once.
func TestTwoReplicasShareWithoutDoubleSends(t *testing.T) {
	t.Parallel()
	f := setup(t)
	const endpoints, jobs = 6, 20
	var receivers []*receiver
	for range endpoints {
		rc := newReceiver(t, nil)
		receivers = append(receivers, rc)
		f.endpoint(t, "demo", rc.URL, contracts.WebhookJobStarted, contracts.WebhookJobSucceeded)
	}
	// Leases long enough that no renewal, however late under load, hands
	// an endpoint over while these replicas live: handing over is the
	// crash tests' business.
	cfg := fastConfig()
	cfg.LeaseTTL = 10 * time.Second
	a, b := f.newNotifier(t, cfg), f.newNotifier(t, cfg)
	var wg sync.WaitGroup
	for _, r := range []running{a, b} {
		wg.Go(func() {
			if err := r.svc.Start(t.Context()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for j := range jobs {
		id := fmt.Sprintf("job%d", j)
		f.publish(t, contracts.Event{Type: contracts.EventStarted, JobID: id, Project: "demo", Status: contracts.StatusRunning, Attempt: 1})
		f.publish(t, contracts.Event{Type: contracts.EventSucceeded, JobID: id, Project: "demo", Status: contracts.StatusSucceeded, Attempt: 1})
	}
	await.Within(t, bound, "every delivery", func() bool {
		for _, rc := range receivers {
			if len(rc.requests()) < 2*jobs {
				return false
			}
		}
		return true
	})
	// Once every record is final no replica sends it again: count then.
	await.Within(t, bound, "every delivery recorded as succeeded", func() bool {
		recs, err := f.store.List(context.Background(), "demo")
		if err != nil {
			return false
		}
		for _, ep := range recs {
			all, err := f.store.ListDeliveries(context.Background(), ep.ID)
			if err != nil || len(all) != 2*jobs {
				return false
			}
			for _, d := range all {
				if d.Status != contracts.DeliverySucceeded {
					return false
				}
			}
		}
		return true
	})
	for i, rc := range receivers {
		ids := map[string]int{}
		order := map[string][]contracts.WebhookEventType{}
		for _, r := range rc.requests() {
			ids[r.header.Get("webhook-id")]++
			p := payload(t, r)
			order[p.Data.JobID] = append(order[p.Data.JobID], p.Type)
		}
		if len(rc.requests()) != 2*jobs || len(ids) != 2*jobs {
			t.Errorf("receiver %d: %d requests, %d ids; want %d each", i, len(rc.requests()), len(ids), 2*jobs)
		}
		for job, types := range order {
			if len(types) != 2 || types[0] != contracts.WebhookJobStarted {
				t.Errorf("receiver %d, %s: %v", i, job, types)
			}
		}
	}
}

// A slow receiver (5 s a request) does not delay a fast one: 1,000 jobs
// finishing at once, and the fast one has every delivery while the slow
// one is still at its first round.
func TestSlowEndpointDelaysNoOther(t *testing.T) {
	t.Parallel()
	f := setup(t)
	const jobs = 1000
	release := make(chan struct{})
	slow := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-release:
		}
		w.WriteHeader(http.StatusOK)
	})
	fast := newReceiver(t, nil)
	f.endpoint(t, "demo", slow.URL, contracts.WebhookJobSucceeded)
	f.endpoint(t, "demo", fast.URL, contracts.WebhookJobSucceeded)
	f.start(t, fastConfig())
	t.Cleanup(func() { close(release) }) // before the notifier's shutdown waits for the slow attempts
	start := time.Now()
	for j := range jobs {
		f.publish(t, contracts.Event{Type: contracts.EventSucceeded, JobID: fmt.Sprintf("job%d", j), Project: "demo", Status: contracts.StatusSucceeded, Attempt: 1})
	}
	await.Within(t, 60*time.Second, "every fast delivery", func() bool { return len(fast.requests()) >= jobs })
	took := time.Since(start)
	// Sent one after the other behind the slow one, the fast deliveries
	// would wait for all of the slow ones (1,000 × 5 s / 16 at a time).
	if n := len(slow.requests()); n >= jobs {
		t.Errorf("the slow receiver had all %d deliveries before the fast one: no isolation", n)
	}
	t.Logf("fast receiver: %d deliveries in %s; slow receiver meanwhile %d", jobs, took, len(slow.requests()))
}

// Batch completion and dead letters are delivered too.
func TestBatchCompletedAndDeadLettered(t *testing.T) {
	t.Parallel()
	f := setup(t)
	rc := newReceiver(t, nil)
	f.endpoint(t, "demo", rc.URL, contracts.WebhookBatchCompleted, contracts.WebhookJobDeadLettered)
	st := state.New(f.kv.state)
	if _, err := st.Batches.Create(context.Background(), "b1", contracts.Batch{V: contracts.Version, ID: "b1", Project: "demo",
		JobIDs: []string{"j1", "j2"}, State: contracts.BatchCommitted, SubmittedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	f.start(t, fastConfig())
	f.publish(t, contracts.Event{Type: contracts.EventSucceeded, JobID: "j1", BatchID: "b1", Project: "demo", Status: contracts.StatusSucceeded, Attempt: 1})
	f.publish(t, contracts.Event{Type: contracts.EventFailed, JobID: "j2", BatchID: "b1", Project: "demo", Status: contracts.StatusFailed, Attempt: 1})
	dl := contracts.DeadLetter{V: contracts.Version, ID: "j2", Job: &contracts.Job{ID: "j2", StreamID: "sj2", Project: "demo", BatchID: "b1"},
		Reason: contracts.ReasonWorkerLost, Attempts: 3, Time: time.Now()}
	b, _ := jsonMarshal(dl)
	if _, err := f.js.Publish(context.Background(), contracts.SubjectDead("demo"), b); err != nil {
		t.Fatal(err)
	}
	await.Within(t, bound, "two deliveries", func() bool { return len(rc.requests()) >= 2 })
	got := map[contracts.WebhookEventType]contracts.WebhookData{}
	for _, r := range rc.requests() {
		p := payload(t, r)
		got[p.Type] = p.Data
	}
	if c := got[contracts.WebhookBatchCompleted]; c.BatchID != "b1" || c.Jobs != 2 || c.Counts[contracts.StatusSucceeded] != 1 || c.Counts[contracts.StatusFailed] != 1 {
		t.Errorf("batch.completed %+v", c)
	}
	if d := got[contracts.WebhookJobDeadLettered]; d.JobID != "j2" || d.Reason != contracts.ReasonWorkerLost || d.Attempt != 3 {
		t.Errorf("job.dead_lettered %+v", d)
	}
	if len(rc.requests()) != 2 {
		t.Errorf("%d deliveries, want 2", len(rc.requests()))
	}
}

// The notifier is a lifecycle component: Shutdown lets an attempt in
// flight finish.
func TestLifecycle(t *testing.T) {
	t.Parallel()
	type fixtureOf struct {
		f        *fixture
		release  func()
		answered chan error
		rc       *receiver
	}
	var fixtures sync.Map
	lifecycletest.Run(t, lifecycletest.Harness{
		New: func(t *testing.T) lifecycle.Component {
			f := setup(t)
			gate := make(chan struct{})
			var once sync.Once
			fx := &fixtureOf{f: f, release: func() { once.Do(func() { close(gate) }) }, answered: make(chan error, 1)}
			t.Cleanup(fx.release)
			fx.rc = newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
				<-gate
				w.WriteHeader(http.StatusOK)
				fx.answered <- nil
			})
			f.endpoint(t, "demo", fx.rc.URL, contracts.WebhookJobSucceeded)
			r := f.newNotifier(t, fastConfig())
			fixtures.Store(r.svc, fx)
			return r.svc
		},
		Busy: func(t *testing.T, c lifecycle.Component) (func(), <-chan error) {
			v, _ := fixtures.Load(c.(*notifier.Service))
			fx := v.(*fixtureOf)
			fx.f.publish(t, contracts.Event{Type: contracts.EventSucceeded, JobID: "job1", Project: "demo", Status: contracts.StatusSucceeded, Attempt: 1})
			<-fx.rc.got
			return fx.release, fx.answered
		},
		Waits: true,
	})
}
