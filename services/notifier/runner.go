package notifier

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/state"
	"github.com/rdev-dev/rdev/pkg/state/webhookstore"
	"github.com/rdev-dev/rdev/services/notifier/internal/retry"
	"github.com/rdev-dev/rdev/services/notifier/internal/send"
)

// maxAttemptLog bounds the attempts a delivery record keeps.
const maxAttemptLog = 50

// runner sends the pending deliveries of one endpoint while this replica
// holds its lease: one queue per order key (a job, a batch), whose head
// alone may be in flight, so a job's deliveries keep their order through
// retries, and at most Concurrency attempts at once. A circuit breaker
// stops attempts after BreakerThreshold failures in a row, for a cooldown
// that doubles while the probe after it fails.
type runner struct {
	s    *Service
	id   string
	ctx  context.Context
	halt context.CancelFunc
	done chan struct{}
	wake chan struct{}

	mu       sync.Mutex
	queues   map[string][]*item // by order key, ordered by source
	known    map[string]bool    // delivery ids queued
	busy     map[string]bool    // order keys with an attempt in flight
	inflight int
	failures int
	openTill time.Time
	cooldown time.Duration
}

type item struct {
	id     string
	source uint64
	next   time.Time
}

func (s *Service) newRunner(id string) *runner {
	ctx, halt := context.WithCancel(s.life)
	r := &runner{s: s, id: id, ctx: ctx, halt: halt, done: make(chan struct{}), wake: make(chan struct{}, 1),
		queues: map[string][]*item{}, known: map[string]bool{}, busy: map[string]bool{}, cooldown: s.cfg.BreakerCooldown}
	return r
}

func (r *runner) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// add queues a pending delivery unless queued already.
func (r *runner) add(d contracts.WebhookDeliveryRecord) {
	r.mu.Lock()
	if r.known[d.ID] {
		r.mu.Unlock()
		return
	}
	r.known[d.ID] = true
	it := &item{id: d.ID, source: d.Source}
	if d.NextAttemptAt != nil {
		it.next = *d.NextAttemptAt
	}
	q := r.queues[d.OrderKey]
	q = append(q, it)
	slices.SortStableFunc(q, func(a, b *item) int {
		switch {
		case a.source < b.source:
			return -1
		case a.source > b.source:
			return 1
		}
		return 0
	})
	// The head in flight stays the head: a later event sorts after it.
	r.queues[d.OrderKey] = q
	r.mu.Unlock()
	r.poke()
}

// load queues every pending delivery of the endpoint (on taking its
// lease), before run starts: dispatching while the listing, in no order,
// is still being queued would send a job's later event first.
func (r *runner) load() error {
	all, err := r.s.store.ListDeliveries(r.ctx, r.id)
	if err != nil {
		return err
	}
	for _, d := range all {
		if d.Status == contracts.DeliveryPending {
			r.add(d)
		}
	}
	return nil
}

// pending counts queued deliveries.
func (r *runner) pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.known)
}

// breakerOpen reports whether the breaker holds attempts back.
func (r *runner) breakerOpen(now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failures >= r.s.cfg.BreakerThreshold && now.Before(r.openTill)
}

func (r *runner) run() {
	defer close(r.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wait := r.dispatch()
		timer.Reset(wait)
		select {
		case <-r.ctx.Done():
			return
		case <-r.wake:
		case <-timer.C:
		}
	}
}

// dispatch starts the attempts that are due and returns how long until
// the next one may be.
func (r *runner) dispatch() time.Duration {
	const idle = time.Minute
	ep, ok := r.s.endpoint(r.id)
	if !ok || !ep.Active || r.s.closing() {
		return idle
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	limit := r.s.cfg.Concurrency
	if r.failures >= r.s.cfg.BreakerThreshold {
		if now.Before(r.openTill) {
			return r.openTill.Sub(now)
		}
		limit = 1 // half open: one probe
	}
	wait := idle
	for key, q := range r.queues {
		if r.busy[key] || len(q) == 0 {
			continue
		}
		head := q[0]
		if d := head.next.Sub(now); d > 0 {
			wait = min(wait, d)
			continue
		}
		if r.inflight >= limit {
			break
		}
		r.busy[key] = true
		r.inflight++
		r.s.attempts.Add(1)
		r.s.inflight.Add(1)
		go r.attempt(key, head)
	}
	return wait
}

// finished records an attempt's end for the queue: final drops the
// delivery, else it waits until next.
func (r *runner) finished(key string, it *item, final bool, next time.Time, verdict retry.Verdict, counted bool) {
	r.mu.Lock()
	r.busy[key] = false
	r.inflight--
	if final {
		q := r.queues[key]
		if i := slices.Index(q, it); i >= 0 {
			q = slices.Delete(q, i, i+1)
		}
		if len(q) == 0 {
			delete(r.queues, key)
		} else {
			r.queues[key] = q
		}
		delete(r.known, it.id)
	} else {
		it.next = next
	}
	if counted {
		switch verdict {
		case retry.Success:
			r.failures, r.cooldown = 0, r.s.cfg.BreakerCooldown
		case retry.Retry:
			r.failures++
			if r.failures == r.s.cfg.BreakerThreshold {
				r.openTill = time.Now().Add(r.cooldown)
			} else if r.failures > r.s.cfg.BreakerThreshold { // the probe failed
				r.cooldown = min(2*r.cooldown, maxBreakerCooldown)
				r.openTill = time.Now().Add(r.cooldown)
			}
		}
	}
	r.mu.Unlock()
	r.poke()
}

// attempt tries the head delivery it of queue key once and records the
// outcome in its delivery record and in the endpoint's health.
func (r *runner) attempt(key string, it *item) {
	defer r.s.attempts.Done()
	defer r.s.inflight.Add(-1)
	ctx := r.ctx
	ref := webhookstore.Ref(r.id, it.id)
	d, rev, err := r.s.store.Deliveries.Get(ctx, ref)
	if errors.Is(err, state.ErrNotFound) || (err == nil && d.Status != contracts.DeliveryPending) {
		r.finished(key, it, true, time.Time{}, 0, false)
		return
	}
	ep, ok := r.s.endpoint(r.id)
	if err != nil || !ok || !ep.Active || !r.s.holds(r.id) {
		if err != nil && ctx.Err() == nil {
			r.s.log.Warn("read webhook delivery", "webhook", r.id, "delivery", it.id, "err", err)
		}
		r.finished(key, it, false, time.Now().Add(time.Second), 0, false)
		return
	}
	now := time.Now().UTC()
	secrets, err := r.s.store.Signing(ep, now)
	if err != nil {
		r.s.log.Error("webhook secret does not open; check the secrets key (--secrets-key-file or --secrets-key): it must be the API's", "webhook", r.id, "err", err)
		r.finished(key, it, false, now.Add(time.Minute), 0, false)
		return
	}
	actx, span := r.s.in.startAttempt(ctx, d)
	res := r.s.sender.Send(actx, send.Request{URL: ep.URL, ID: d.ID, Body: []byte(d.Body), Secrets: secrets, Now: now})
	if ctx.Err() != nil {
		// Cancelled by Shutdown or a lost lease: not the receiver's fault,
		// and not recorded; the delivery is tried again by whoever sends.
		span.End()
		r.finished(key, it, false, time.Now(), 0, false)
		return
	}
	verdict := retry.Classify(res.Status, errors.Is(res.Err, send.ErrRefused))
	d.Attempts++
	d.LastStatusCode, d.LastLatencyMS, d.LastError = res.Status, res.Latency.Milliseconds(), ""
	if res.Err != nil {
		d.LastError = res.Err.Error()
	}
	d.AttemptLog = append(d.AttemptLog, attemptOf(now, res))
	if len(d.AttemptLog) > maxAttemptLog {
		d.AttemptLog = d.AttemptLog[len(d.AttemptLog)-maxAttemptLog:]
	}
	d.UpdatedAt = time.Now().UTC()
	d.NextAttemptAt = nil
	switch verdict {
	case retry.Success:
		d.Status = contracts.DeliverySucceeded
	case retry.Fail, retry.Gone:
		d.Status = contracts.DeliveryFailed
	case retry.Retry:
		if next, ok := r.s.policy.Next(d.QueuedAt, now, d.Attempts, res.RetryAfter); ok {
			d.Status, d.NextAttemptAt = contracts.DeliveryPending, &next
		} else {
			d.Status = contracts.DeliveryExhausted
		}
	}
	r.s.in.attempted(actx, span, d, res, verdict)
	if _, err := r.s.store.Deliveries.Update(context.WithoutCancel(ctx), ref, d, rev); err != nil {
		r.s.log.Warn("record webhook attempt", "webhook", r.id, "delivery", d.ID, "err", err)
	}
	r.s.health(context.WithoutCancel(ctx), r.id, verdict, res)
	next := time.Time{}
	if d.NextAttemptAt != nil {
		next = *d.NextAttemptAt
	}
	r.finished(key, it, d.Status.Final(), next, verdict, verdict == retry.Success || verdict == retry.Retry)
}

func attemptOf(at time.Time, res send.Result) contracts.WebhookAttempt {
	a := contracts.WebhookAttempt{At: at, RequestHeaders: flatten(res.Sent), StatusCode: res.Status,
		LatencyMS: res.Latency.Milliseconds(), ResponseBody: string(res.Body)}
	if res.Header != nil {
		a.ResponseHeaders = flatten(res.Header)
	}
	if res.Err != nil {
		a.Error = res.Err.Error()
	}
	return a
}

func flatten(h map[string][]string) map[string]string {
	out := make(map[string]string, len(h))
	for k, v := range h {
		if len(v) > 0 {
			out[k] = v[0]
		}
	}
	return out
}
