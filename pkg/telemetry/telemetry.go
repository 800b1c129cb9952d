// Package telemetry sets up rdev's OpenTelemetry providers: one tracer
// provider per service (service.name rdev-api, rdev-worker, rdev-streamer)
// and one meter provider per process, read by a Prometheus exporter on its
// own registry (served at /metrics) and, when an OTLP endpoint is
// configured, pushed over OTLP too. Nothing here is global: services get
// the providers they use passed in, so tests can give them an in-memory
// span exporter and a manual metric reader.
//
// Without an OTLP endpoint (and without a test exporter) spans are not
// sampled: trace and span ids are still made and propagated, so logs and
// job state carry a trace id, but nothing is recorded or exported.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// The service names, as service.name of each service's spans.
const (
	ServiceAPI      = "rdev-api"
	ServiceWorker   = "rdev-worker"
	ServiceStreamer = "rdev-streamer"
	ServiceNotifier = "rdev-notifier"
)

// Config says where telemetry goes. The zero value exports nothing and
// serves metrics at Handler only.
type Config struct {
	// OTLPEndpoint (OTEL_EXPORTER_OTLP_ENDPOINT) turns on OTLP export of
	// spans and metrics; the exporters read the other standard
	// OTEL_EXPORTER_OTLP_* variables (headers, timeouts, per-signal
	// endpoints) themselves, and the sampler honours OTEL_TRACES_SAMPLER
	// (default: parent-based, always on).
	OTLPEndpoint string
	// OTLPProtocol (OTEL_EXPORTER_OTLP_PROTOCOL) is "grpc" or
	// "http/protobuf" (default).
	OTLPProtocol string
	// OTLPTracesEndpoint and OTLPMetricsEndpoint
	// (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, …_METRICS_ENDPOINT) override
	// OTLPEndpoint per signal; they are full URLs.
	OTLPTracesEndpoint, OTLPMetricsEndpoint string
	// SpanExporter, when set, receives every span synchronously, all
	// sampled (tests and benchmarks). It is shut down with the Telemetry.
	SpanExporter sdktrace.SpanExporter
	// MetricReaders are added to the meter provider (tests: a
	// sdkmetric.ManualReader).
	MetricReaders []sdkmetric.Reader
	// Version is the service.version resource attribute.
	Version string
}

// Telemetry holds a process's providers. Create it with New and call
// Shutdown at exit to flush what is buffered.
type Telemetry struct {
	cfg      Config
	meter    *sdkmetric.MeterProvider
	registry *prometheus.Registry

	mu      sync.Mutex
	tracers map[string]*sdktrace.TracerProvider
}

// New builds the meter provider for a process named process (its
// service.name on metrics: "rdev" for `rdev up`, else the service's).
func New(ctx context.Context, cfg Config, process string) (*Telemetry, error) {
	t := &Telemetry{cfg: cfg, registry: prometheus.NewRegistry(), tracers: map[string]*sdktrace.TracerProvider{}}
	t.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	prom, err := otelprom.New(otelprom.WithRegisterer(t.registry))
	if err != nil {
		return nil, fmt.Errorf("telemetry: prometheus exporter: %w", err)
	}
	opts := []sdkmetric.Option{sdkmetric.WithResource(t.resource(ctx, process)), sdkmetric.WithReader(prom)}
	for _, r := range cfg.MetricReaders {
		opts = append(opts, sdkmetric.WithReader(r))
	}
	if cfg.OTLPEndpoint != "" || cfg.OTLPMetricsEndpoint != "" {
		exp, err := t.metricExporter(ctx)
		if err != nil {
			return nil, err
		}
		opts = append(opts, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp)))
	}
	t.meter = sdkmetric.NewMeterProvider(opts...)
	return t, nil
}

// Exporting reports whether spans are sampled and exported.
func (t *Telemetry) Exporting() bool {
	return t.cfg.OTLPEndpoint != "" || t.cfg.OTLPTracesEndpoint != "" || t.cfg.SpanExporter != nil
}

// MeterProvider is the process's meter provider.
func (t *Telemetry) MeterProvider() metric.MeterProvider { return t.meter }

// Handler serves the process's metrics in the Prometheus text format.
func (t *Telemetry) Handler() http.Handler {
	return promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{})
}

// TracerProvider returns the tracer provider of service (ServiceAPI, …),
// made on first use.
func (t *Telemetry) TracerProvider(ctx context.Context, service string) (trace.TracerProvider, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if tp, ok := t.tracers[service]; ok {
		return tp, nil
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(t.resource(ctx, service))}
	switch {
	case t.cfg.SpanExporter != nil:
		opts = append(opts, sdktrace.WithSyncer(nopShutdown{t.cfg.SpanExporter}), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	case t.Exporting():
		exp, err := t.spanExporter(ctx)
		if err != nil {
			return nil, err
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	default:
		// Ids are made and propagated; nothing is recorded.
		opts = append(opts, sdktrace.WithSampler(sdktrace.NeverSample()))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	t.tracers[service] = tp
	return tp, nil
}

// Shutdown flushes and stops every provider.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var errs []error
	for _, tp := range t.tracers {
		errs = append(errs, tp.Shutdown(ctx))
	}
	clear(t.tracers)
	if t.cfg.SpanExporter != nil {
		errs = append(errs, t.cfg.SpanExporter.Shutdown(ctx))
	}
	errs = append(errs, t.meter.Shutdown(ctx))
	return errors.Join(errs...)
}

func (t *Telemetry) resource(ctx context.Context, service string) *resource.Resource {
	attrs := []resource.Option{resource.WithFromEnv(), resource.WithTelemetrySDK(), resource.WithHost()}
	kv := []resource.Option{resource.WithAttributes(semconv.ServiceName(service))}
	if t.cfg.Version != "" {
		kv = append(kv, resource.WithAttributes(semconv.ServiceVersion(t.cfg.Version)))
	}
	// OTEL_RESOURCE_ATTRIBUTES may add attributes; the service name is ours.
	r, err := resource.New(ctx, append(attrs, kv...)...)
	if err != nil {
		// Partial resources (a detector failed) are still usable.
		if r == nil {
			return resource.NewSchemaless(semconv.ServiceName(service))
		}
	}
	return r
}

func (t *Telemetry) grpc() bool { return strings.EqualFold(t.cfg.OTLPProtocol, "grpc") }

func (t *Telemetry) spanExporter(ctx context.Context) (sdktrace.SpanExporter, error) {
	var (
		exp sdktrace.SpanExporter
		err error
	)
	if t.grpc() {
		exp, err = otlptracegrpc.New(ctx, otlptracegrpc.WithEndpointURL(t.endpoint(t.cfg.OTLPTracesEndpoint, "")))
	} else {
		exp, err = otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(t.endpoint(t.cfg.OTLPTracesEndpoint, "/v1/traces")))
	}
	if err != nil {
		return nil, fmt.Errorf("telemetry: OTLP span exporter: %w", err)
	}
	return exp, nil
}

func (t *Telemetry) metricExporter(ctx context.Context) (sdkmetric.Exporter, error) {
	var (
		exp sdkmetric.Exporter
		err error
	)
	if t.grpc() {
		exp, err = otlpmetricgrpc.New(ctx, otlpmetricgrpc.WithEndpointURL(t.endpoint(t.cfg.OTLPMetricsEndpoint, "")))
	} else {
		exp, err = otlpmetrichttp.New(ctx, otlpmetrichttp.WithEndpointURL(t.endpoint(t.cfg.OTLPMetricsEndpoint, "/v1/metrics")))
	}
	if err != nil {
		return nil, fmt.Errorf("telemetry: OTLP metric exporter: %w", err)
	}
	return exp, nil
}

// endpoint is the URL of one signal: its own, or the base endpoint with
// the signal's path (OTLP/HTTP; gRPC uses the base as is), as the OTLP
// specification resolves the environment variables.
func (t *Telemetry) endpoint(signal, path string) string {
	if signal != "" {
		return signal
	}
	base := t.cfg.OTLPEndpoint
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return strings.TrimSuffix(base, "/") + path
}

// nopShutdown keeps a shared test exporter open until the Telemetry, not
// one of its tracer providers, shuts down.
type nopShutdown struct{ sdktrace.SpanExporter }

func (nopShutdown) Shutdown(context.Context) error { return nil }
