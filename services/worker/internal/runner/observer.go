package runner

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// Observer is told of lifecycle moments that metrics count and that the
// state store does not show by itself (job starts and ends are counted
// from the state the runner stores). Implementations must be fast and
// safe for concurrent use.
type Observer interface {
	// Retried: an attempt of job failed with reason and the job goes back
	// to the queue for another. Call it once per retrying event published.
	Retried(ctx context.Context, job contracts.Job, reason string)
	// DeadLettered: job will not run again by itself (its attempts are
	// spent, or its message cannot be decoded); reason is the last
	// failure's. Call it once the dead letter is stored.
	DeadLettered(ctx context.Context, job contracts.Job, reason string)
}

// NopObserver observes nothing.
type NopObserver struct{}

// Retried implements Observer.
func (NopObserver) Retried(context.Context, contracts.Job, string) {}

// DeadLettered implements Observer.
func (NopObserver) DeadLettered(context.Context, contracts.Job, string) {}

// withTrace adds the trace and span ids of ctx's span, if any, to log, so
// a job's log lines lead to its trace.
func withTrace(ctx context.Context, log *slog.Logger) *slog.Logger {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return log
	}
	return log.With("trace_id", sc.TraceID().String(), "span_id", sc.SpanID().String())
}
