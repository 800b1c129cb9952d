package api

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// scheduleMetrics counts what the scheduler does: the schedules.Observer.
type scheduleMetrics struct {
	schedules metric.Int64Gauge
	fires     metric.Int64Counter
	skips     metric.Int64Counter
	lag       metric.Float64Histogram
}

func newScheduleMetrics(mp metric.MeterProvider) (*scheduleMetrics, error) {
	m := mp.Meter(instrumentationName)
	var s scheduleMetrics
	var err error
	if s.schedules, err = m.Int64Gauge("rdev.api.schedules", metric.WithUnit("{schedule}"),
		metric.WithDescription("Cron schedules of every project, as the last sweep saw them.")); err != nil {
		return nil, err
	}
	if s.fires, err = m.Int64Counter("rdev.api.schedule.fires", metric.WithUnit("{run}"),
		metric.WithDescription("Scheduled runs whose job this replica queued (once per scheduled time across replicas).")); err != nil {
		return nil, err
	}
	if s.skips, err = m.Int64Counter("rdev.api.schedule.skips", metric.WithUnit("{run}"),
		metric.WithDescription("Scheduled runs not queued, by outcome: skipped (overlap) or missed (catch_up).")); err != nil {
		return nil, err
	}
	if s.lag, err = m.Float64Histogram("rdev.api.schedule.lag", metric.WithUnit("s"),
		metric.WithDescription("Time from a run's scheduled time to its job being queued.")); err != nil {
		return nil, err
	}
	return &s, nil
}

func (s *scheduleMetrics) Swept(ctx context.Context, schedules int) {
	s.schedules.Record(ctx, int64(schedules))
}

func (s *scheduleMetrics) Fired(ctx context.Context, lag time.Duration) {
	s.fires.Add(ctx, 1)
	s.lag.Record(ctx, lag.Seconds())
}

func (s *scheduleMetrics) Skipped(ctx context.Context, outcome string) {
	s.skips.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", outcome)))
}
