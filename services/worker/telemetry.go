package worker

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/telemetry/propagate"
	"github.com/rdev-dev/rdev/services/worker/internal/dispatch"
	"github.com/rdev-dev/rdev/services/worker/internal/executor"
	"github.com/rdev-dev/rdev/services/worker/internal/runner"
)

const instrumentationName = "github.com/rdev-dev/rdev/services/worker"

// Telemetry is where the worker's spans and metrics go. Zero values record
// nothing.
type Telemetry struct {
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
}

// instruments observe the worker: they wrap the dispatcher's handler and
// the runner's ports, so the runner itself only logs.
//
// Spans, per delivery of a job: "rdev.job.queued" (from the message's
// store time to its dispatch: the dequeue wait) and "process RDEV_JOBS"
// (the whole handling), both children of the API's publish span whose
// context the job message carries (contracts.Job.Trace); under the
// latter "rdev.exec" (the command, including the Kubernetes pod lookup)
// and "rdev.output" (publishing the attempt's lines).
type instruments struct {
	tracer trace.Tracer

	dispatches, started, finished, retries, dead metric.Int64Counter
	lines, bytes, publishErrors                  metric.Int64Counter
	active                                       metric.Int64UpDownCounter
	duration, latency                            metric.Float64Histogram
	fds                                          map[contracts.FD]metric.AddOption
}

func newInstruments(t Telemetry) (*instruments, error) {
	if t.TracerProvider == nil {
		t.TracerProvider = tracenoop.NewTracerProvider()
	}
	if t.MeterProvider == nil {
		t.MeterProvider = metricnoop.NewMeterProvider()
	}
	m := t.MeterProvider.Meter(instrumentationName)
	in := &instruments{tracer: t.TracerProvider.Tracer(instrumentationName), fds: map[contracts.FD]metric.AddOption{}}
	for _, fd := range []contracts.FD{contracts.Stdout, contracts.Stderr} {
		in.fds[fd] = metric.WithAttributeSet(attribute.NewSet(attribute.String("fd", string(fd))))
	}
	counters := []struct {
		c          *metric.Int64Counter
		name, unit string
		desc       string
	}{
		{&in.dispatches, "rdev.queue.dispatches", "{job}", "Job messages handed to a run slot, by priority (redeliveries included)."},
		{&in.started, "rdev.jobs.started", "{job}", "Attempts started (claimed as running), by priority."},
		{&in.finished, "rdev.jobs.finished", "{job}", "Jobs ended, by final status and priority."},
		{&in.retries, "rdev.jobs.retries", "{job}", "Failed attempts sent back to the queue for another, by priority and reason."},
		{&in.dead, "rdev.jobs.dead_letters", "{job}", "Jobs dead-lettered (will not run again by themselves), by reason."},
		{&in.lines, "rdev.output.lines", "{line}", "Output lines published, by fd."},
		{&in.bytes, "rdev.output.bytes", "By", "Output bytes published (line content), by fd."},
		{&in.publishErrors, "rdev.output.publish_errors", "{error}", "Output publishes that failed for good (the attempt's output is incomplete)."},
	}
	var err error
	for _, c := range counters {
		if *c.c, err = m.Int64Counter(c.name, metric.WithUnit(c.unit), metric.WithDescription(c.desc)); err != nil {
			return nil, err
		}
	}
	if in.active, err = m.Int64UpDownCounter("rdev.worker.jobs.active", metric.WithUnit("{job}"),
		metric.WithDescription("Job messages being handled by this worker now.")); err != nil {
		return nil, err
	}
	buckets := metric.WithExplicitBucketBoundaries(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
	if in.duration, err = m.Float64Histogram("rdev.job.duration", metric.WithUnit("s"), buckets,
		metric.WithDescription("Run time of ended attempts (started to finished), by status.")); err != nil {
		return nil, err
	}
	if in.latency, err = m.Float64Histogram("rdev.job.dispatch_latency", metric.WithUnit("s"), buckets,
		metric.WithDescription("Time from submit to the first attempt's start, by priority.")); err != nil {
		return nil, err
	}
	return in, nil
}

// zero makes the failure counters' series exist at 0 from the start, so
// increase() and the alerts see the first failure.
func (in *instruments) zero(ctx context.Context) {
	in.publishErrors.Add(ctx, 0)
	for _, reason := range []string{contracts.ReasonExitCode, contracts.ReasonTimeout, contracts.ReasonStartFailed,
		contracts.ReasonWorkerLost, contracts.ReasonExecutorError, contracts.ReasonPodNotReady, contracts.ReasonPodLost,
		contracts.ReasonUndecodable} {
		in.dead.Add(ctx, 0, metric.WithAttributes(attribute.String("reason", reason)))
		for _, p := range contracts.Priorities() {
			in.retries.Add(ctx, 0, metric.WithAttributes(attribute.String("priority", string(p)), attribute.String("reason", reason)))
		}
	}
}

// registerGauges reports the queue from JetStream at every collection, and
// the worker's run slots (present while the worker runs: its absence means
// no worker).
func (in *instruments) registerGauges(mp metric.MeterProvider, js jetstream.JetStream, slots, highSlots int, caps map[contracts.Priority]int) (unregister func(), err error) {
	if mp == nil {
		return func() {}, nil
	}
	m := mp.Meter(instrumentationName)
	depth, err := m.Int64ObservableGauge("rdev.queue.depth", metric.WithUnit("{job}"),
		metric.WithDescription("Jobs waiting for a worker (not yet delivered), by priority."))
	if err != nil {
		return nil, err
	}
	age, err := m.Float64ObservableGauge("rdev.queue.oldest_age", metric.WithUnit("s"),
		metric.WithDescription("Age of the oldest job waiting for a worker, by priority (0 when none waits)."))
	if err != nil {
		return nil, err
	}
	slotsGauge, err := m.Int64ObservableGauge("rdev.worker.slots", metric.WithUnit("{job}"),
		metric.WithDescription("Jobs this worker runs at once (reported while it runs), by kind: shared slots any priority uses (--concurrency) and high slots only high priority uses (--high-slots)."))
	if err != nil {
		return nil, err
	}
	capsGauge, err := m.Int64ObservableGauge("rdev.worker.priority_slots", metric.WithUnit("{job}"),
		metric.WithDescription("Most jobs of a priority this worker runs at once (--priority-slots), for the capped priorities only."))
	if err != nil {
		return nil, err
	}
	reg, err := m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		o.ObserveInt64(slotsGauge, int64(slots), metric.WithAttributeSet(attribute.NewSet(attribute.String("kind", "shared"))))
		o.ObserveInt64(slotsGauge, int64(highSlots), metric.WithAttributeSet(attribute.NewSet(attribute.String("kind", "high"))))
		for p, n := range caps {
			o.ObserveInt64(capsGauge, int64(n), metric.WithAttributeSet(attribute.NewSet(attribute.String("priority", string(p)))))
		}
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		var errs []error
		for _, p := range contracts.Priorities() {
			n, oldest, err := queueStat(ctx, js, p)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			set := metric.WithAttributeSet(attribute.NewSet(attribute.String("priority", string(p))))
			o.ObserveInt64(depth, int64(n), set)
			o.ObserveFloat64(age, oldest.Seconds(), set)
		}
		return errors.Join(errs...)
	}, depth, age, slotsGauge, capsGauge)
	if err != nil {
		return nil, err
	}
	return func() { _ = reg.Unregister() }, nil
}

// queueStat reads the waiting jobs of priority p from its consumer and the
// first of them from the stream.
func queueStat(ctx context.Context, js jetstream.JetStream, p contracts.Priority) (uint64, time.Duration, error) {
	c, err := js.Consumer(ctx, contracts.StreamJobs, contracts.ConsumerJobs(p))
	if err != nil {
		return 0, 0, err
	}
	info := c.CachedInfo()
	if info.NumPending == 0 {
		return 0, 0, nil
	}
	s, err := js.Stream(ctx, contracts.StreamJobs)
	if err != nil {
		return info.NumPending, 0, err
	}
	msg, err := s.GetMsg(ctx, info.Delivered.Stream+1, jetstream.WithGetMsgSubject(contracts.SubjectJobsAt(p)))
	if err != nil {
		return info.NumPending, 0, err
	}
	return info.NumPending, max(0, time.Since(msg.Time)), nil
}

// handler wraps the runner's handler: it counts the dispatch and runs the
// job under a span continuing the trace the job message carries.
func (in *instruments) handler(next dispatch.Handler) dispatch.Handler {
	return func(runCtx context.Context, msg jetstream.Msg) {
		prio, project := jobSubject(msg.Subject())
		attrs := []attribute.KeyValue{attribute.String("priority", prio)}
		in.dispatches.Add(runCtx, 1, metric.WithAttributes(attrs...))
		in.active.Add(runCtx, 1)
		defer in.active.Add(runCtx, -1)

		parent := propagate.ExtractMap(runCtx, jobTrace(msg.Data()))
		spanAttrs := []attribute.KeyValue{
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.destination.name", msg.Subject()),
			attribute.String("rdev.job_id", msg.Headers().Get(contracts.HeaderJobID)),
			attribute.String("rdev.project", project),
			attribute.String("rdev.priority", prio),
		}
		if md, err := msg.Metadata(); err == nil {
			spanAttrs = append(spanAttrs, attribute.Int64("messaging.nats.delivered", int64(md.NumDelivered)))
			_, wait := in.tracer.Start(parent, "rdev.job.queued", trace.WithTimestamp(md.Timestamp), trace.WithAttributes(spanAttrs...))
			wait.End()
		}
		ctx, span := in.tracer.Start(parent, "process "+contracts.StreamJobs, trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(spanAttrs...))
		defer span.End()
		next(ctx, msg)
	}
}

// jobTrace reads the trace context a job message carries
// (contracts.Job.Trace), nil when there is none or the body is not a job
// (the runner deals with that).
func jobTrace(body []byte) map[string]string {
	var job struct {
		Trace map[string]string `json:"trace"`
	}
	_ = json.Unmarshal(body, &job)
	return job.Trace
}

// jobSubject splits rdev.jobs.<priority>.<project>.
func jobSubject(subject string) (priority, project string) {
	parts := strings.SplitN(subject, ".", 4)
	if len(parts) != 4 {
		return "", ""
	}
	return parts[2], parts[3]
}

// Retried implements runner.Observer.
func (in *instruments) Retried(ctx context.Context, job contracts.Job, reason string) {
	in.retries.Add(ctx, 1, metric.WithAttributes(attribute.String("priority", string(job.Priority)), attribute.String("reason", reason)))
}

// DeadLettered implements runner.Observer.
func (in *instruments) DeadLettered(ctx context.Context, _ contracts.Job, reason string) {
	in.dead.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", reason)))
}

// states counts starts and ends from the state transitions the runner
// stores: a compare-and-set succeeds once per transition, whichever worker
// makes it, so nothing is counted twice.
type states struct {
	runner.States
	in *instruments
}

func (s states) Update(ctx context.Context, jobID string, st contracts.JobState, rev uint64) (uint64, error) {
	n, err := s.States.Update(ctx, jobID, st, rev)
	if err != nil {
		return n, err
	}
	prio := attribute.String("priority", string(st.Priority))
	switch {
	case st.Status == contracts.StatusRunning:
		s.in.started.Add(ctx, 1, metric.WithAttributes(prio))
		if st.Attempt == 1 && st.StartedAt != nil {
			s.in.latency.Record(ctx, max(0, st.StartedAt.Sub(st.SubmittedAt).Seconds()), metric.WithAttributes(prio))
		}
		trace.SpanFromContext(ctx).AddEvent("claimed", trace.WithAttributes(attribute.Int("rdev.attempt", st.Attempt)))
	case st.Status.Final():
		status := attribute.String("status", string(st.Status))
		s.in.finished.Add(ctx, 1, metric.WithAttributes(status, prio))
		if st.StartedAt != nil && st.FinishedAt != nil {
			s.in.duration.Record(ctx, max(0, st.FinishedAt.Sub(*st.StartedAt).Seconds()), metric.WithAttributes(status))
		}
		span := trace.SpanFromContext(ctx)
		span.SetAttributes(attribute.String("rdev.status", string(st.Status)), attribute.Int("rdev.attempt", st.Attempt))
		if st.Status != contracts.StatusSucceeded {
			span.SetStatus(codes.Error, st.Reason)
		}
	}
	return n, nil
}

// execSpans runs each command under an "rdev.exec" span.
type execSpans struct {
	executor.Executor
	tracer trace.Tracer
}

func (e execSpans) Exec(ctx context.Context, spec executor.Spec, stdout, stderr io.Writer) (int, error) {
	ctx, span := e.tracer.Start(ctx, "rdev.exec", trace.WithAttributes(
		attribute.String("rdev.job_id", spec.JobID), attribute.String("rdev.project", spec.Project)))
	defer span.End()
	code, err := e.Executor.Exec(ctx, spec, stdout, stderr)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "exec failed")
	} else {
		span.SetAttributes(attribute.Int("process.exit.code", code))
	}
	return code, err
}

// sink counts an attempt's published lines and covers their publishing
// with one "rdev.output" span (a span per line would cost more than the
// line). Counts reach the meters every flushEvery lines per stream and at
// Close: an instrument update per line cost several percent of the
// worker's lines/s.
type sink struct {
	runner.LineSink
	in    *instruments
	once  sync.Once
	span  trace.Span
	count [2]fdCount // stdout, stderr: each written by one goroutine at a time
}

// fdCount is one output stream's tally; flushed is what the meters have.
type fdCount struct {
	lines, bytes               atomic.Int64
	flushedLines, flushedBytes int64
}

const flushEvery = 1024

func fdIndex(fd contracts.FD) int {
	if fd == contracts.Stderr {
		return 1
	}
	return 0
}

func (s *sink) start(ctx context.Context) {
	s.once.Do(func() { _, s.span = s.in.tracer.Start(ctx, "rdev.output") })
}

func (s *sink) Line(ctx context.Context, fd contracts.FD, data []byte, partial bool) error {
	s.start(ctx)
	err := s.LineSink.Line(ctx, fd, data, partial)
	if err != nil {
		s.in.publishErrors.Add(ctx, 1)
		return err
	}
	c := &s.count[fdIndex(fd)]
	c.bytes.Add(int64(len(data)))
	if c.lines.Add(1)%flushEvery == 0 {
		s.flush(ctx, fd)
	}
	return nil
}

// flush hands the meters what fd counted since the last flush; only the
// goroutine writing fd calls it (or Close, after the writers are done).
func (s *sink) flush(ctx context.Context, fd contracts.FD) {
	c := &s.count[fdIndex(fd)]
	lines, bytes := c.lines.Load(), c.bytes.Load()
	opt := s.in.fds[fd]
	if d := lines - c.flushedLines; d > 0 {
		s.in.lines.Add(ctx, d, opt)
	}
	if d := bytes - c.flushedBytes; d > 0 {
		s.in.bytes.Add(ctx, d, opt)
	}
	c.flushedLines, c.flushedBytes = lines, bytes
}

func (s *sink) Close(ctx context.Context) (uint64, error) {
	s.start(ctx)
	last, err := s.LineSink.Close(ctx)
	s.flush(ctx, contracts.Stdout)
	s.flush(ctx, contracts.Stderr)
	lines := s.count[0].lines.Load() + s.count[1].lines.Load()
	bytes := s.count[0].bytes.Load() + s.count[1].bytes.Load()
	s.span.SetAttributes(attribute.Int64("rdev.output.lines", lines), attribute.Int64("rdev.output.bytes", bytes),
		attribute.Int64("rdev.output.last_seq", int64(last)))
	if err != nil {
		s.in.publishErrors.Add(ctx, 1)
		s.span.RecordError(err)
		s.span.SetStatus(codes.Error, "output not stored")
	}
	s.span.End()
	return last, err
}
