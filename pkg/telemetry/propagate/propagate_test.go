package propagate_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/rdev-dev/rdev/pkg/telemetry/propagate"
)

func TestTraceMapCarriesTheSpan(t *testing.T) {
	t.Parallel()
	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("test").Start(context.Background(), "publish")
	defer span.End()
	m := propagate.InjectMap(ctx)
	got := trace.SpanContextFromContext(propagate.ExtractMap(context.Background(), m))
	if !got.IsRemote() || got.TraceID() != span.SpanContext().TraceID() || got.SpanID() != span.SpanContext().SpanID() {
		t.Errorf("extracted %v from %v, want the remote %v", got, m, span.SpanContext())
	}
	// Without a span nothing is written.
	if propagate.InjectMap(context.Background()) != nil {
		t.Error("injected without a span")
	}
}

func TestLogHandlerAddsTraceIDs(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := slog.New(propagate.LogHandler(slog.NewJSONHandler(&buf, nil))).With("job_id", "j1")
	ctx, span := sdktrace.NewTracerProvider().Tracer("test").Start(context.Background(), "x")
	defer span.End()
	log.InfoContext(ctx, "with span")
	log.Info("without span")
	lines := bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n"))
	var with, without map[string]any
	if len(lines) != 2 || json.Unmarshal(lines[0], &with) != nil || json.Unmarshal(lines[1], &without) != nil {
		t.Fatalf("log output %q", buf.String())
	}
	if with["trace_id"] != span.SpanContext().TraceID().String() || with["span_id"] != span.SpanContext().SpanID().String() || with["job_id"] != "j1" {
		t.Errorf("record with a span: %v", with)
	}
	if _, ok := without["trace_id"]; ok {
		t.Errorf("record without a span has a trace id: %v", without)
	}
}
