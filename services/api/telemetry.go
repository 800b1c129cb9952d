package api

import (
	"context"

	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

const instrumentationName = "github.com/rdev-dev/rdev/services/api"

// Telemetry is where the API's spans and metrics go. Zero values record
// nothing.
type Telemetry struct {
	// TracerProvider makes the Redis client's spans (the request and
	// publish spans come from the HTTP server's instrumentation).
	TracerProvider trace.TracerProvider
	// MeterProvider makes the API's counters and the Redis client's
	// metrics.
	MeterProvider metric.MeterProvider
	// OnBreakerChange, if set, is told each state change of the breakers
	// in front of Redis; dependency is "redis_ratelimit" or "redis_cache".
	OnBreakerChange func(dependency, from, to string)
}

func (t *Telemetry) setDefaults() {
	if t.TracerProvider == nil {
		t.TracerProvider = tracenoop.NewTracerProvider()
	}
	if t.MeterProvider == nil {
		t.MeterProvider = metricnoop.NewMeterProvider()
	}
}

// breakerHook returns the guards' OnBreakerChange for dependency.
func (t *Telemetry) breakerHook(dependency string) func(from, to string) {
	if t.OnBreakerChange == nil {
		return nil
	}
	t.OnBreakerChange(dependency, "", "closed")
	return func(from, to string) { t.OnBreakerChange(dependency, from, to) }
}

// instrumentRedis adds spans and connection-pool and latency metrics to
// the Redis client.
func (t *Telemetry) instrumentRedis(client *redis.Client) error {
	// No statement (it may carry secrets) and no caller: the span's name
	// says the command, and finding the caller walks the stack on every
	// command, sampled or not.
	if err := redisotel.InstrumentTracing(client, redisotel.WithTracerProvider(t.TracerProvider),
		redisotel.WithDBStatement(false), redisotel.WithCallerEnabled(false)); err != nil {
		return err
	}
	return redisotel.InstrumentMetrics(client, redisotel.WithMeterProvider(t.MeterProvider))
}

// metrics counts submits, refusals and degraded dependencies. It is the
// handlers' httpapi.Observer.
type metrics struct {
	// ctx records what hooks without a context of their own report.
	ctx       context.Context
	submitted metric.Int64Counter
	rejected  metric.Int64Counter
	authFails metric.Int64Counter
	degraded  metric.Int64Counter
	kicks     metric.Int64Counter
}

func newMetrics(ctx context.Context, mp metric.MeterProvider) (*metrics, error) {
	m := mp.Meter(instrumentationName)
	s := metrics{ctx: context.WithoutCancel(ctx)}
	var err error
	if s.submitted, err = m.Int64Counter("rdev.api.jobs.submitted", metric.WithUnit("{job}"),
		metric.WithDescription("Jobs accepted (202), by priority and kind; idempotent replays are not counted.")); err != nil {
		return nil, err
	}
	if s.rejected, err = m.Int64Counter("rdev.api.ratelimit.rejections", metric.WithUnit("{request}"),
		metric.WithDescription("Requests refused by a rate limit (429).")); err != nil {
		return nil, err
	}
	if s.authFails, err = m.Int64Counter("rdev.api.auth.failures", metric.WithUnit("{request}"),
		metric.WithDescription("Requests refused for their credentials or scope (401, 403), by error code.")); err != nil {
		return nil, err
	}
	if s.degraded, err = m.Int64Counter("rdev.dependency.degraded", metric.WithUnit("{decision}"),
		metric.WithDescription("Decisions made without a failed or open dependency, by dependency.")); err != nil {
		return nil, err
	}
	if s.kicks, err = m.Int64Counter("rdev.api.nats.kicks", metric.WithUnit("{connection}"),
		metric.WithDescription("Direct subscribers' NATS connections closed because their credential's key was revoked, deleted or expired or its project deleted.")); err != nil {
		return nil, err
	}
	s.rejected.Add(ctx, 0)
	s.kicks.Add(ctx, 0)
	return &s, nil
}

// Kicked counts a direct subscriber's connection closed (natsauth.Sweeper).
func (m *metrics) Kicked() { m.kicks.Add(m.ctx, 1) }

func (m *metrics) Submitted(ctx context.Context, st contracts.JobState, replayed bool) {
	if replayed {
		return
	}
	m.submitted.Add(ctx, 1, metric.WithAttributes(attribute.String("priority", string(st.Priority)),
		attribute.String("kind", string(st.Kind))))
}

func (m *metrics) Denied(ctx context.Context, status int, code string) {
	if code == "rate_limited" {
		m.rejected.Add(ctx, 1)
		return
	}
	m.authFails.Add(ctx, 1, metric.WithAttributes(attribute.String("code", code), attribute.Int("status", status)))
}

func (m *metrics) degradedHook(dependency string) func() {
	set := metric.WithAttributeSet(attribute.NewSet(attribute.String("dependency", dependency)))
	m.degraded.Add(m.ctx, 0, set) // the series exists before the first outage
	return func() { m.degraded.Add(m.ctx, 1, set) }
}

// pinger is the Redis client, when one is configured.
type pinger interface {
	Ping(ctx context.Context) *redis.StatusCmd
}
