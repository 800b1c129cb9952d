// Package notifier sends webhooks: it turns the lifecycle events of jobs
// (rdev.events.> in RDEV_OUTPUT), dead letters (rdev.dead.>) and the
// completion of batches into deliveries to the endpoints that subscribe
// to them, signed per the Standard Webhooks specification, retried on
// its schedule, and recorded in JetStream (contracts.BucketWebhookDeliveries).
//
// Every replica reads the events through the same durable consumers, so
// each event is taken up once, and deliveries outlive restarts. Sending
// is split by endpoint: a replica sends an endpoint's deliveries only
// while it holds the endpoint's lease, so two replicas never send the
// same delivery, and one that dies hands its endpoints over when its
// leases expire. Each endpoint has its own queue: deliveries about one
// job (or batch) go out one after the other in lifecycle order, retries
// included, while a slow or failing endpoint delays no other.
package notifier

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/contracts/seal"
	"github.com/rdev-dev/rdev/pkg/state"
	"github.com/rdev-dev/rdev/pkg/state/webhookstore"
	"github.com/rdev-dev/rdev/services/notifier/internal/retry"
	"github.com/rdev-dev/rdev/services/notifier/internal/send"
)

// priorityGroup is the notifiers' group of the pinned intake consumers.
const priorityGroup = "notifiers"

// Deps are what the process builds once and the notifier uses.
type Deps struct {
	// JS is the notifier's own connection's JetStream (the topology is
	// provisioned).
	JS jetstream.JetStream
	// State is contracts.BucketState: stream references and batches.
	State jetstream.KeyValue
	// Webhooks and WebhookDeliveries are the webhook buckets.
	Webhooks          jetstream.KeyValue
	WebhookDeliveries jetstream.KeyValue
	// SecretsKey opens the endpoints' signing secrets (package seal).
	SecretsKey []byte
	// Log defaults to discarding.
	Log *slog.Logger
	// Telemetry says where spans and metrics go; default nowhere.
	Telemetry Telemetry
}

// Service is the notifier. Create it with New; it is a lifecycle
// Component.
type Service struct {
	cfg      Config
	log      *slog.Logger
	js       jetstream.JetStream
	store    *webhookstore.Store
	state    *state.Store
	leases   jetstream.KeyValue
	progress state.Records[batchProgress]
	sender   *send.Sender
	policy   retry.Policy
	in       *instruments

	startMu   sync.Mutex // serializes Start
	mu        sync.Mutex
	started   bool
	closed    bool
	endpoints map[string]contracts.WebhookRecord // by id, from the bucket's watch
	owned     map[string]*runner                 // endpoints whose lease this replica holds
	leaseTill map[string]time.Time               // until when each is held
	life      context.Context
	stop      context.CancelFunc
	consumers []jetstream.ConsumeContext

	bg       sync.WaitGroup // watches and the lease loop
	attempts sync.WaitGroup // attempts in flight
	inflight atomic.Int64
}

// New returns a notifier; Start starts it.
func New(cfg Config, deps Deps) (*Service, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("notifier config: %w", err)
	}
	if deps.JS == nil || deps.State == nil || deps.Webhooks == nil || deps.WebhookDeliveries == nil {
		return nil, errors.New("notifier: JetStream, the state bucket and the webhook buckets are required")
	}
	box, err := seal.New(deps.SecretsKey)
	if err != nil {
		return nil, fmt.Errorf("notifier: the secrets key opens the webhooks' signing secrets: %w", err)
	}
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.ID == "" {
		b := make([]byte, 6)
		_, _ = rand.Read(b)
		cfg.ID = "notifier-" + hex.EncodeToString(b)
	}
	jitter := defaultJitter
	if cfg.NoJitter {
		jitter = 0
	}
	life, stop := context.WithCancel(context.Background())
	s := &Service{
		cfg:       cfg,
		log:       log.With("notifier", cfg.ID),
		js:        deps.JS,
		store:     webhookstore.New(deps.Webhooks, deps.WebhookDeliveries, box),
		state:     state.New(deps.State),
		leases:    deps.WebhookDeliveries,
		progress:  state.NewRecords[batchProgress](deps.WebhookDeliveries, "batch progress", func(id string) string { return "batchend." + id }),
		sender:    send.New(send.Config{Allow: cfg.AllowCIDRs, Timeout: cfg.Timeout, Resolve: cfg.Resolve}),
		policy:    retry.Policy{Schedule: cfg.RetrySchedule, Bound: cfg.RetryFor, Jitter: jitter},
		endpoints: map[string]contracts.WebhookRecord{},
		owned:     map[string]*runner{},
		leaseTill: map[string]time.Time{},
		life:      life,
		stop:      stop,
	}
	if s.in, err = newInstruments(deps.Telemetry, s); err != nil {
		stop()
		return nil, fmt.Errorf("notifier metrics: %w", err)
	}
	return s, nil
}

// notifiedEvents are the subjects of the events the notifier takes up:
// those a webhook is sent for, and the terminal ones (a batch completes
// when each of its jobs has ended). Queued and scheduled events are
// neither; taking them would deliver and acknowledge a third of every
// job's events for nothing.
func notifiedEvents() []string {
	var types []contracts.EventType
	for _, t := range contracts.EventTypes() {
		if _, ok := contracts.WebhookEventFor(t); ok || t.Terminal() {
			types = append(types, t)
		}
	}
	return contracts.SubjectEventsOf(types...)
}

// Start loads the endpoints, then takes up events and starts sending.
// It returns once the endpoints are loaded and the consumers run.
func (s *Service) Start(ctx context.Context) error {
	s.startMu.Lock()
	defer s.startMu.Unlock()
	s.mu.Lock()
	skip := s.started || s.closed
	s.mu.Unlock()
	if skip {
		return nil
	}
	if err := s.watchEndpoints(ctx); err != nil {
		return err
	}
	if err := s.watchDeliveries(ctx); err != nil {
		return err
	}
	for _, c := range []struct {
		stream, durable, from string
		filters               []string
		handle                func(jetstream.Msg)
	}{
		{contracts.StreamOutput, contracts.ConsumerNotifierEvents, "lifecycle events", notifiedEvents(), s.onEvent},
		{contracts.StreamDead, contracts.ConsumerNotifierDead, "dead letters", []string{contracts.SubjectDeadPrefix + ".>"}, s.onDeadLetter},
	} {
		cons, err := s.js.CreateOrUpdateConsumer(ctx, c.stream, jetstream.ConsumerConfig{
			Durable:        c.durable,
			Description:    "rdev notifiers: webhook deliveries from " + c.from,
			FilterSubjects: c.filters,
			// A fresh notifier tells of what happens from now on, not of
			// the stream's past.
			DeliverPolicy: jetstream.DeliverNewPolicy,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       30 * time.Second,
			MaxAckPending: 1000,
			// One replica at a time takes events up, in stream order, so
			// a job's deliveries are created in lifecycle order; another
			// takes over when it stops pulling.
			PriorityPolicy: jetstream.PriorityPolicyPinned,
			PriorityGroups: []string{priorityGroup},
			PinnedTTL:      s.cfg.LeaseTTL,
		})
		if err != nil {
			return fmt.Errorf("notifier consumer %s: %w", c.durable, err)
		}
		cc, err := cons.Consume(c.handle, jetstream.PullPriorityGroup(priorityGroup), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			s.log.Debug("consume", "consumer", c.durable, "err", err)
		}))
		if err != nil {
			return fmt.Errorf("notifier consume %s: %w", c.durable, err)
		}
		s.mu.Lock()
		s.consumers = append(s.consumers, cc)
		s.mu.Unlock()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed { // Shutdown came while starting; it stopped the consumers it saw
		for _, cc := range s.consumers {
			cc.Stop()
		}
		return errors.New("notifier: shut down while starting")
	}
	s.bg.Add(1)
	go s.leaseLoop()
	s.started = true
	return nil
}

// Ready reports whether the notifier runs: started and not shutting down.
func (s *Service) Ready(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return errors.New("shutting down")
	case !s.started:
		return errors.New("not started")
	}
	return nil
}

// Waiting says how many attempts Shutdown waits for.
func (s *Service) Waiting() string {
	if n := s.inflight.Load(); n > 0 {
		return fmt.Sprintf("%d webhook attempts", n)
	}
	return ""
}

// Shutdown stops taking up events and starting attempts, lets the
// attempts in flight finish while ctx lasts, then cancels the rest and
// releases the endpoint leases so another replica takes over at once.
// It may be called more than once, and before Start.
func (s *Service) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	consumers := s.consumers
	runners := s.owned
	s.owned = map[string]*runner{}
	s.mu.Unlock()
	for _, cc := range consumers {
		cc.Stop()
	}
	// Runners start nothing more (closing); what is in flight may end.
	done := make(chan struct{})
	go func() {
		s.attempts.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("notifier shutdown: %w", ctx.Err())
	}
	s.stop()
	s.attempts.Wait() // cancelled: they end at once
	for _, r := range runners {
		<-r.done
	}
	s.bg.Wait()
	if err == nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		for id := range runners {
			s.release(rctx, id)
		}
		cancel()
	}
	// A consumer whose connection is gone may never say it closed.
	for _, cc := range consumers {
		select {
		case <-cc.Closed():
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
		}
	}
	s.sender.Close()
	return err
}

// closing reports whether Shutdown began.
func (s *Service) closing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// endpoint returns the cached record of an endpoint.
func (s *Service) endpoint(id string) (contracts.WebhookRecord, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ep, ok := s.endpoints[id]
	return ep, ok
}

// watchEndpoints keeps s.endpoints, and returns once it holds every
// endpoint stored.
func (s *Service) watchEndpoints(ctx context.Context) error {
	w, err := s.store.WatchEndpoints(s.life) //nolint:contextcheck // lives until Shutdown
	if err != nil {
		return fmt.Errorf("watch webhooks: %w", err)
	}
	loaded := make(chan struct{})
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		defer func() { _ = w.Stop() }()
		first := true
		for e := range w.Updates() {
			if e == nil {
				if first {
					close(loaded)
					first = false
				}
				continue
			}
			s.endpointChanged(e)
		}
		if first {
			close(loaded)
		}
	}()
	select {
	case <-loaded:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Service) endpointChanged(e jetstream.KeyValueEntry) {
	id, rec, deleted, err := webhookstore.DecodeEndpoint(e)
	if err != nil {
		s.log.Warn("undecodable webhook record", "key", e.Key(), "err", err)
		return
	}
	s.mu.Lock()
	if deleted {
		delete(s.endpoints, id)
	} else {
		s.endpoints[id] = rec
	}
	r := s.owned[id]
	s.mu.Unlock()
	if r != nil {
		r.poke() // active changed, or a new secret: the runner looks again
	}
}

// watchDeliveries hands new pending deliveries (taken up by any replica,
// a ping or a redelivery from the API) to the runner of their endpoint,
// if this replica holds it.
func (s *Service) watchDeliveries(context.Context) error {
	w, err := s.store.WatchDeliveries(s.life) //nolint:contextcheck // lives until Shutdown
	if err != nil {
		return fmt.Errorf("watch webhook deliveries: %w", err)
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		defer func() { _ = w.Stop() }()
		for e := range w.Updates() {
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			d, err := webhookstore.DecodeDelivery(e)
			if err != nil || d.Status != contracts.DeliveryPending {
				continue
			}
			s.mu.Lock()
			r := s.owned[d.Webhook]
			s.mu.Unlock()
			if r != nil {
				r.add(d)
			}
		}
	}()
	return nil
}

// Stats is a snapshot of what this replica sends.
type Stats struct {
	// Endpoints is how many endpoints' leases it holds.
	Endpoints int
	// BreakersOpen is how many of them have their circuit breaker open.
	BreakersOpen int
	// Pending is how many deliveries of theirs are queued.
	Pending int
	// InFlight is how many attempts are under way.
	InFlight int64
}

// Stats returns the current snapshot.
func (s *Service) Stats() Stats {
	s.mu.Lock()
	runners := make([]*runner, 0, len(s.owned))
	for _, r := range s.owned {
		runners = append(runners, r)
	}
	s.mu.Unlock()
	st := Stats{Endpoints: len(runners), InFlight: s.inflight.Load()}
	now := time.Now()
	for _, r := range runners {
		if r.breakerOpen(now) {
			st.BreakersOpen++
		}
		st.Pending += r.pending()
	}
	return st
}
