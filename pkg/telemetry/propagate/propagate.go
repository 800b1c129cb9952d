// Package propagate carries W3C trace context across rdev's hops: NATS
// message headers, and the trace maps stored in jobs and stream refs. It
// is light (the OpenTelemetry API only), for every service to import.
package propagate

import (
	"context"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// HeaderCarrier carries trace context in NATS message headers (W3C
// traceparent and tracestate, as on HTTP).
type HeaderCarrier nats.Header

var _ propagation.TextMapCarrier = HeaderCarrier{}

// Get returns the first value of key.
func (c HeaderCarrier) Get(key string) string { return nats.Header(c).Get(key) }

// Set replaces key's values with value.
func (c HeaderCarrier) Set(key, value string) { nats.Header(c).Set(key, value) }

// Keys lists the header names.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes ctx's span context into h, when ctx has a valid one.
func Inject(ctx context.Context, h nats.Header) {
	if h == nil || !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	Propagator().Inject(ctx, HeaderCarrier(h))
}

// Extract returns ctx with the remote span context that h carries, if any.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if h == nil {
		return ctx
	}
	return Propagator().Extract(ctx, HeaderCarrier(h))
}

// ExtractMap is Extract for a map of W3C fields (traceparent, tracestate),
// as contracts.Job.Trace and contracts.StreamRef.Trace hold them.
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
// HTTP and NATS headers.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// TraceID returns the trace id (32 hex digits) of a W3C traceparent, or "".
func TraceID(traceparent string) string {
	if len(traceparent) != 55 || traceparent[2] != '-' || traceparent[35] != '-' {
		return ""
	}
	return traceparent[3:35]
}
