package natsjs

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/telemetry/propagate"
)

const tracerName = "github.com/rdev-dev/rdev/services/api/internal/natsjs"

// startPublish starts the producer span of a job's publish, a child of
// the request's span (with the request's tracer provider; none, no span),
// and makes its context the job's trace context (contracts.Job.Trace, the
// one carrier), so the worker's spans continue the trace under it.
func startPublish(ctx context.Context, job *contracts.Job) (context.Context, trace.Span) {
	tracer := trace.SpanFromContext(ctx).TracerProvider().Tracer(tracerName)
	ctx, span := tracer.Start(ctx, "publish "+contracts.StreamJobs, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.destination.name", contracts.SubjectJob(job.Priority, "*")),
			attribute.String("messaging.message.id", job.ID),
			attribute.String("rdev.job_id", job.ID),
			attribute.String("rdev.project", job.Project),
			attribute.String("rdev.priority", string(job.Priority)),
		))
	if tc := propagate.InjectMap(ctx); tc != nil {
		job.Trace = tc
	}
	return ctx, span
}
