// Package propagate carries W3C trace context across rdev's hops: the
// trace maps stored in jobs and stream refs (the one carrier across NATS;
// see contracts.TraceID) and HTTP headers. It is light (the OpenTelemetry
// API only), for every service to import.
package propagate

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// ExtractMap returns ctx with the remote span context that m, a map of W3C
// fields (traceparent, tracestate) as contracts.Job.Trace and
// contracts.StreamRef.Trace hold them, carries, if any. Those bodies are
// the only carrier of trace context across NATS (see contracts.TraceID).
func ExtractMap(ctx context.Context, m map[string]string) context.Context {
	if len(m) == 0 {
		return ctx
	}
	return Propagator().Extract(ctx, propagation.MapCarrier(m))
}

// InjectMap returns ctx's W3C trace context as a map, or nil without a
// valid span context.
func InjectMap(ctx context.Context) map[string]string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	m := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, m)
	return m
}

// Propagator is the W3C trace-context and baggage propagator rdev uses on
// HTTP headers and to read trace maps.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}
