package streamer

import (
	"context"
	"iter"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/rdev-dev/rdev/pkg/telemetry/propagate"
	"github.com/rdev-dev/rdev/services/streamer/internal/entry"
	"github.com/rdev-dev/rdev/services/streamer/internal/follow"
)

const instrumentationName = "github.com/rdev-dev/rdev/services/streamer"

// Telemetry is where the streamer's spans and metrics go. Zero values
// record nothing.
type Telemetry struct {
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
}

// instruments observe deliveries. Each client's delivery is a span
// "rdev.stream.deliver" in the job's trace (a child of the submit request's
// span, whose context the stream reference carries), linked to the HTTP
// request's own span; each catch-up from storage is a child
// "rdev.stream.replay".
type instruments struct {
	tracer trace.Tracer
	events metric.Int64Counter
	opts   map[entry.Kind][2]metric.AddOption // by kind: [live, replay]
}

func newInstruments(t Telemetry, s *Service) (*instruments, error) {
	if t.TracerProvider == nil {
		t.TracerProvider = tracenoop.NewTracerProvider()
	}
	if t.MeterProvider == nil {
		t.MeterProvider = metricnoop.NewMeterProvider()
	}
	m := t.MeterProvider.Meter(instrumentationName)
	in := &instruments{tracer: t.TracerProvider.Tracer(instrumentationName), opts: map[entry.Kind][2]metric.AddOption{}}
	for kind, name := range map[entry.Kind]string{entry.Line: "output", entry.Status: "status", entry.Complete: "complete", entry.Gap: "gap"} {
		var o [2]metric.AddOption
		for i, src := range []string{"live", "replay"} {
			o[i] = metric.WithAttributeSet(attribute.NewSet(attribute.String("kind", name), attribute.String("source", src)))
		}
		in.opts[kind] = o
	}
	var err error
	if in.events, err = m.Int64Counter("rdev.sse.events", metric.WithUnit("{event}"),
		metric.WithDescription("SSE events delivered to clients, by kind (output, status, complete, gap) and source (live from the hub, or replay from storage).")); err != nil {
		return nil, err
	}
	conns, err := m.Int64ObservableGauge("rdev.sse.connections", metric.WithUnit("{connection}"),
		metric.WithDescription("Open SSE event streams."))
	if err != nil {
		return nil, err
	}
	hubs, err := m.Int64ObservableGauge("rdev.sse.streams", metric.WithUnit("{stream}"),
		metric.WithDescription("Streams with live clients (one hub and live feed each); connections / streams is clients per stream."))
	if err != nil {
		return nil, err
	}
	dropped, err := m.Int64ObservableCounter("rdev.sse.clients.dropped", metric.WithUnit("{connection}"),
		metric.WithDescription("Clients dropped because a write blocked past the write timeout."))
	if err != nil {
		return nil, err
	}
	overflows, err := m.Int64ObservableCounter("rdev.sse.clients.lagged", metric.WithUnit("{event}"),
		metric.WithDescription("Times a slow client was cut loose from its stream's hub and sent back to storage."))
	if err != nil {
		return nil, err
	}
	replays, err := m.Int64ObservableCounter("rdev.nats_replay.requests", metric.WithUnit("{request}"),
		metric.WithDescription("Replay requests over NATS answered (direct subscribers), refusals included."))
	if err != nil {
		return nil, err
	}
	ignored, err := m.Int64ObservableCounter("rdev.nats_replay.ignored", metric.WithUnit("{request}"),
		metric.WithDescription("Replay requests over NATS left unanswered because their reply subject was not an inbox of the project's readers."))
	if err != nil {
		return nil, err
	}
	feeds, err := m.Int64ObservableGauge("rdev.sse.feeds", metric.WithUnit("{feed}"),
		metric.WithDescription("Live feeds of watched streams, by consumer: own (a JetStream consumer each) or shared (one consumer for all of them)."))
	if err != nil {
		return nil, err
	}
	feedOverflows, err := m.Int64ObservableCounter("rdev.sse.feeds.overflowed", metric.WithUnit("{feed}"),
		metric.WithDescription("Live feeds on the shared feed failed because their hub lagged past their buffer; their clients rejoined from storage."))
	if err != nil {
		return nil, err
	}
	own := metric.WithAttributeSet(attribute.NewSet(attribute.String("consumer", "own")))
	shared := metric.WithAttributeSet(attribute.NewSet(attribute.String("consumer", "shared")))
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		st := s.Stats()
		o.ObserveInt64(feeds, st.FeedsOwn, own)
		o.ObserveInt64(feeds, st.FeedsShared, shared)
		o.ObserveInt64(feedOverflows, int64(st.FeedOverflows))
		o.ObserveInt64(conns, st.Clients)
		o.ObserveInt64(hubs, int64(st.Hubs))
		o.ObserveInt64(dropped, int64(st.Dropped))
		o.ObserveInt64(overflows, int64(st.Overflows))
		o.ObserveInt64(replays, int64(st.ReplayRequests))
		o.ObserveInt64(ignored, int64(st.ReplayIgnored))
		return nil
	}, conns, hubs, dropped, overflows, replays, ignored, feeds, feedOverflows)
	return in, err
}

// delivery is one client's: it knows whether entries come from a replay.
type delivery struct{ replaying bool }

type deliveryKey struct{}

// startDelivery starts the client's delivery span in the job's trace.
func (in *instruments) startDelivery(ctx context.Context, st *opened) (context.Context, func(error)) {
	d := &delivery{}
	ctx = context.WithValue(ctx, deliveryKey{}, d)
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
		attribute.String("rdev.stream_id", st.ref.StreamID), attribute.String("rdev.job_id", st.ref.JobID),
		attribute.String("rdev.project", st.ref.Project), attribute.Int64("rdev.resume_after", int64(st.cur.StreamSeq)))}
	if req := trace.SpanContextFromContext(ctx); req.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: req}))
	}
	parent := ctx // keeps the request's cancellation
	if len(st.ref.Trace) > 0 {
		parent = propagate.ExtractMap(ctx, st.ref.Trace)
	}
	ctx, span := in.tracer.Start(parent, "rdev.stream.deliver", opts...)
	return ctx, func(err error) {
		// A client leaving is no error of the streamer's.
		span.SetAttributes(attribute.Bool("rdev.stream.complete", err == nil))
		span.End()
	}
}

// countingSink counts what it sends. A delivery costs well under a
// microsecond, and adding to an OpenTelemetry counter (attributes
// resolved, exemplars offered) about as much again, so it counts in the
// sink and adds to the counter once per flush: a burst of lines to a
// thousand clients is a thousand additions, not a thousand per line.
type countingSink struct {
	follow.Sink
	in  *instruments
	ctx context.Context
	d   *delivery
	n   [entry.Gap + 1][2]int64 // sent since the last flush, by kind and source
}

func (in *instruments) sink(ctx context.Context, next follow.Sink) follow.Sink {
	d, _ := ctx.Value(deliveryKey{}).(*delivery)
	if d == nil {
		d = &delivery{}
	}
	return &countingSink{Sink: next, in: in, ctx: ctx, d: d}
}

func (k *countingSink) Send(e entry.Entry) error {
	if err := k.Sink.Send(e); err != nil {
		return err
	}
	if e.Kind > entry.Invalid && e.Kind < entry.Kind(len(k.n)) {
		i := 0
		if k.d.replaying {
			i = 1
		}
		k.n[e.Kind][i]++
	}
	return nil
}

func (k *countingSink) Flush() error {
	err := k.Sink.Flush()
	if err == nil {
		k.count()
	}
	return err
}

func (k *countingSink) Ping() error {
	err := k.Sink.Ping() // flushes what was sent before it too
	if err == nil {
		k.count()
	}
	return err
}

// count adds what was sent since the last flush to the counter.
func (k *countingSink) count() {
	for kind := range k.n {
		for src, n := range k.n[kind] {
			if n == 0 {
				continue
			}
			if o, ok := k.in.opts[entry.Kind(kind)]; ok {
				k.in.events.Add(k.ctx, n, o[src])
			}
			k.n[kind][src] = 0
		}
	}
}

// replays runs each catch-up from storage under a span and marks its
// entries as replayed.
type replays struct {
	follow.History
	in *instruments
}

func (r replays) Replay(ctx context.Context, streamID string, after, until uint64) iter.Seq2[entry.Entry, error] {
	return func(yield func(entry.Entry, error) bool) {
		d, _ := ctx.Value(deliveryKey{}).(*delivery)
		if d != nil {
			d.replaying = true
			defer func() { d.replaying = false }()
		}
		ctx, span := r.in.tracer.Start(ctx, "rdev.stream.replay", trace.WithAttributes(
			attribute.Int64("rdev.replay.after", int64(after)), attribute.Int64("rdev.replay.until", int64(until))))
		defer span.End()
		n := 0
		for e, err := range r.History.Replay(ctx, streamID, after, until) {
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, "replay failed")
			} else {
				n++
			}
			if !yield(e, err) {
				break
			}
		}
		span.SetAttributes(attribute.Int("rdev.replay.entries", n))
	}
}
