package notifier

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/telemetry/propagate"
	"github.com/rdev-dev/rdev/services/notifier/internal/retry"
	"github.com/rdev-dev/rdev/services/notifier/internal/send"
)

const instrumentationName = "github.com/rdev-dev/rdev/services/notifier"

// Telemetry is where the notifier's spans and metrics go. Zero values
// record nothing.
type Telemetry struct {
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
}

// instruments observe deliveries: a span "rdev.webhook.attempt" per
// attempt, in the job's trace (a child of its submission's span, whose
// context the delivery carries); counters of deliveries by outcome,
// attempt latency, queued deliveries by endpoint state, and endpoints
// disabled.
type instruments struct {
	tracer    trace.Tracer
	outcomes  metric.Int64Counter
	latency   metric.Float64Histogram
	queuedCtr metric.Int64Counter
	disables  metric.Int64Counter
}

func newInstruments(t Telemetry, s *Service) (*instruments, error) {
	if t.TracerProvider == nil {
		t.TracerProvider = tracenoop.NewTracerProvider()
	}
	if t.MeterProvider == nil {
		t.MeterProvider = metricnoop.NewMeterProvider()
	}
	m := t.MeterProvider.Meter(instrumentationName)
	in := &instruments{tracer: t.TracerProvider.Tracer(instrumentationName)}
	var err error
	if in.outcomes, err = m.Int64Counter("rdev.webhook.attempts", metric.WithUnit("{attempt}"),
		metric.WithDescription("Webhook attempts, by outcome: succeeded, retry, failed, gone (410), exhausted.")); err != nil {
		return nil, err
	}
	if in.latency, err = m.Float64Histogram("rdev.webhook.attempt.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of webhook attempts, dial to response.")); err != nil {
		return nil, err
	}
	if in.queuedCtr, err = m.Int64Counter("rdev.webhook.deliveries.created", metric.WithUnit("{delivery}"),
		metric.WithDescription("Webhook deliveries created from events, by event type.")); err != nil {
		return nil, err
	}
	if in.disables, err = m.Int64Counter("rdev.webhook.endpoints.disabled", metric.WithUnit("{endpoint}"),
		metric.WithDescription("Webhook endpoints disabled by rdev, by reason (gone, failing).")); err != nil {
		return nil, err
	}
	depth, err := m.Int64ObservableGauge("rdev.webhook.queue", metric.WithUnit("{delivery}"),
		metric.WithDescription("Pending webhook deliveries of the endpoints this replica sends, by endpoint state (active, breaker_open, inactive)."))
	if err != nil {
		return nil, err
	}
	inactive, err := m.Int64ObservableGauge("rdev.webhook.endpoints.inactive", metric.WithUnit("{endpoint}"),
		metric.WithDescription("Webhook endpoints not receiving, by reason (user, gone, failing)."))
	if err != nil {
		return nil, err
	}
	if _, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		byState, byReason := s.gauges()
		for st, n := range byState {
			o.ObserveInt64(depth, n, metric.WithAttributes(attribute.String("state", st)))
		}
		for r, n := range byReason {
			o.ObserveInt64(inactive, n, metric.WithAttributes(attribute.String("reason", r)))
		}
		return nil
	}, depth, inactive); err != nil {
		return nil, err
	}
	return in, nil
}

func (in *instruments) startAttempt(ctx context.Context, d contracts.WebhookDeliveryRecord) (context.Context, trace.Span) {
	parent := propagate.ExtractMap(context.Background(), d.TraceParent)
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String("rdev.webhook.id", d.Webhook), attribute.String("rdev.webhook.delivery", d.ID),
		attribute.String("rdev.webhook.event", string(d.Type)), attribute.Int("rdev.webhook.attempt", d.Attempts+1))}
	if d.JobID != "" {
		opts = append(opts, trace.WithAttributes(attribute.String("rdev.job.id", d.JobID)))
	}
	_, span := in.tracer.Start(parent, "rdev.webhook.attempt", opts...)
	return trace.ContextWithSpan(ctx, span), span
}

func (in *instruments) attempted(ctx context.Context, span trace.Span, d contracts.WebhookDeliveryRecord, res send.Result, v retry.Verdict) {
	outcome := map[retry.Verdict]string{retry.Success: "succeeded", retry.Retry: "retry", retry.Fail: "failed", retry.Gone: "gone"}[v]
	if d.Status == contracts.DeliveryExhausted {
		outcome = "exhausted"
	}
	attrs := metric.WithAttributes(attribute.String("outcome", outcome))
	in.outcomes.Add(ctx, 1, attrs)
	in.latency.Record(ctx, res.Latency.Seconds(), attrs)
	span.SetAttributes(attribute.Int("http.response.status_code", res.Status), attribute.String("rdev.webhook.outcome", outcome))
	if v != retry.Success {
		msg := outcome
		if res.Err != nil {
			msg = res.Err.Error()
		}
		span.SetStatus(codes.Error, msg)
	}
	span.End()
}

func (in *instruments) queued(ctx context.Context, t contracts.WebhookEventType) {
	in.queuedCtr.Add(ctx, 1, metric.WithAttributes(attribute.String("event", string(t))))
}

func (in *instruments) disabled(ctx context.Context, reason string) {
	in.disables.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", reason)))
}

// gauges counts the pending deliveries this replica holds by endpoint
// state, and the inactive endpoints by reason.
func (s *Service) gauges() (byState, byReason map[string]int64) {
	byState, byReason = map[string]int64{"active": 0, "breaker_open": 0, "inactive": 0}, map[string]int64{}
	s.mu.Lock()
	runners := make(map[string]*runner, len(s.owned))
	for id, r := range s.owned {
		runners[id] = r
	}
	for _, ep := range s.endpoints {
		if !ep.Active {
			reason := ep.DisabledReason
			if reason == "" {
				reason = "user"
			}
			byReason[reason]++
		}
	}
	s.mu.Unlock()
	now := time.Now()
	for id, r := range runners {
		ep, _ := s.endpoint(id)
		st := "active"
		switch {
		case !ep.Active:
			st = "inactive"
		case r.breakerOpen(now):
			st = "breaker_open"
		}
		byState[st] += int64(r.pending())
	}
	return byState, byReason
}
