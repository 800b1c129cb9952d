// Package streamer serves a job's output to browsers as Server-Sent Events.
//
// GET /v1/streams/{stream_id}/events sends the lines and lifecycle events
// of a stream, first those already stored, then live ones, and ends after
// the terminal event. Every event's id is the JetStream sequence of the
// message it carries, so a client that reconnects with Last-Event-ID gets
// exactly what it missed. All clients of one stream share one JetStream
// consumer; a client too slow for it catches up from storage instead of
// holding memory or slowing the others.
//
// The same replays answer direct NATS subscribers' requests on
// rdev.replay.<project>.<stream_id> (natsreplay.go), into the asking
// project's reader inboxes only.
package streamer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/services/streamer/internal/follow"
	"github.com/rdev-dev/rdev/services/streamer/internal/hub"
	"github.com/rdev-dev/rdev/services/streamer/internal/natsjs"
	"github.com/rdev-dev/rdev/services/streamer/internal/sse"
)

// EventsPath is the route Register adds.
const EventsPath = "/v1/streams/:stream_id/events"

// Service is the streamer. Create it with New.
type Service struct {
	cfg      Config
	log      *slog.Logger
	store    *natsjs.Store
	hubs     *hub.Hubs
	follower *follow.Follower
	gate     Gate
	hangups  sse.Hangups // of the connections streams took over

	quit context.Context // cancelled by Shutdown: open streams end
	stop context.CancelFunc

	mu      sync.Mutex
	started bool
	closed  bool
	active  sync.WaitGroup // requests being served

	clients atomic.Int64
	dropped atomic.Uint64

	// Replay over NATS (natsreplay.go).
	nc            *nats.Conn
	replaySub     *nats.Subscription
	replaySlots   chan struct{} // one per request being served
	replayServed  atomic.Uint64
	replayIgnored atomic.Uint64

	in *instruments
}

// Deps are what the process builds once and the streamer uses.
type Deps struct {
	// JS reads output and events (the topology is provisioned).
	JS jetstream.JetStream
	// State is the contracts.BucketState bucket: stream references.
	State jetstream.KeyValue
	// Gate admits readers (access.StreamGate on the access store).
	Gate Gate
	// Log defaults to discarding.
	Log *slog.Logger
	// Telemetry says where spans and metrics go; default nowhere.
	Telemetry Telemetry
}

// New returns a streamer reading output from deps.JS and stream
// references from deps.State, admitting readers through deps.Gate.
// Register its routes, then Start it.
func New(cfg Config, deps Deps) (*Service, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("streamer config: %w", err)
	}
	js, state, gate, log := deps.JS, deps.State, deps.Gate, deps.Log
	if js == nil || state == nil || gate == nil {
		return nil, errors.New("streamer: JetStream, the state bucket and an access gate are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	store := natsjs.New(js, state, natsjs.Config{
		// A replay pauses between two fetches while a write blocks.
		Idle: max(5*time.Minute, 2*cfg.WriteTimeout),
		// A replay waiting its turn longer than a heartbeat is retried,
		// so its client is pinged.
		Reads: cfg.ReplayReads, ReadWait: cfg.Heartbeat,
		SharedAfter: cfg.SharedFeedAfter,
		EventLinger: cfg.EventLinger,
	}, log)
	hubs := hub.New(store, hub.Config{Buffer: cfg.ClientBuffer, BufferBytes: cfg.ClientBufferBytes}, log)
	quit, stop := context.WithCancel(context.Background())
	s := &Service{
		cfg:   cfg,
		log:   log,
		store: store,
		hubs:  hubs,
		follower: &follow.Follower{Hubs: hubs, History: store, Heartbeat: cfg.Heartbeat, Quit: quit,
			Retry: follow.Retry{Min: retryMin, Max: retryMax, For: cfg.UnavailableAfter}, Log: log},
		gate: gate,
		quit: quit,
		stop: stop,

		nc:          js.Conn(),
		replaySlots: make(chan struct{}, replayInFlight),
	}
	in, err := newInstruments(deps.Telemetry, s)
	if err != nil {
		stop()
		return nil, fmt.Errorf("streamer metrics: %w", err)
	}
	s.in = in
	s.follower.History = replays{store, in}
	return s, nil
}

// Start watches access changes and answers replay requests over NATS
// (contracts.SubjectReplay); the streams themselves are served per
// request. It returns at once.
func (s *Service) Start(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return nil
	}
	// Replay over NATS for direct subscribers (docs/nats.md).
	if err := s.startReplays(s.nc); err != nil {
		return fmt.Errorf("streamer: subscribe to replay requests: %w", err)
	}
	s.started = true
	// One watch for every open stream: a revoked key's or a deleted
	// project's streams end within seconds, not when the client leaves.
	if err := s.gate.Watch(s.quit); err != nil { //nolint:contextcheck // lives until Shutdown
		s.log.Warn("access changes not watched; polling", "err", err)
	}
	return nil
}

// Ready reports whether the streamer serves streams: started and not
// shutting down.
func (s *Service) Ready(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return errors.New("shutting down")
	case !s.started:
		return errors.New("not started")
	}
	return nil
}

// Waiting says how many streams Shutdown waits for.
func (s *Service) Waiting() string {
	if n := s.clients.Load(); n > 0 {
		return fmt.Sprintf("%d open streams", n)
	}
	return ""
}

// The wait after a storage failure starts at retryMin and doubles with
// each failure in a row up to retryMax: soon enough that a NATS reconnect
// goes unnoticed, slow enough that clients retrying together do not add
// much to an overloaded server's load.
const (
	retryMin = 250 * time.Millisecond
	retryMax = 5 * time.Second
)

// Register adds GET EventsPath, BatchEventsPath and ProjectEventsPath,
// and the CORS preflights for them, to e.
func (s *Service) Register(e *echo.Echo) {
	if e.IPExtractor == nil {
		e.IPExtractor = echo.ExtractIPDirect() // proxy headers are not believed by default
	}
	cors := middleware.CORSWithConfig(middleware.CORSConfig{
		AllowOrigins: s.cfg.AllowOrigins,
		AllowMethods: []string{http.MethodGet, http.MethodOptions},
		AllowHeaders: []string{"Last-Event-ID", "Cache-Control", "Accept", "Authorization"},
	})
	for path, h := range map[string]echo.HandlerFunc{EventsPath: s.events, BatchEventsPath: s.batchEvents, ProjectEventsPath: s.projectEvents} {
		e.GET(path, h, cors)
		e.OPTIONS(path, func(c echo.Context) error { return c.NoContent(http.StatusNoContent) }, cors)
	}
}

// Shutdown ends every open stream with an error event "shutting_down",
// after which clients reconnect with Last-Event-ID (to another instance or
// to this one restarted), waits for their handlers within ctx, and stops
// the hubs. New requests get 503. Call it before shutting the HTTP server
// down, so streams end instead of holding it open. It may be called more
// than once, and before Start.
func (s *Service) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	replays := s.replaySub
	s.replaySub = nil
	s.mu.Unlock()
	s.stop()
	s.stopReplays(replays)

	done := make(chan struct{})
	go func() {
		s.active.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("streamer shutdown: %w", ctx.Err())
	}
	s.hubs.Close()
	s.store.Close() // the shared live feed, its feeds closed with the hubs
	if err == nil {
		s.hangups.Close() // no stream is left to watch
	}
	return err
}

// enter registers a request, unless the service is shutting down.
func (s *Service) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.active.Add(1)
	return true
}

// Stats is a snapshot of the streamer's counters.
type Stats struct {
	// Clients is the number of open event streams.
	Clients int64
	// Hubs is the number of streams with a running hub (one live feed
	// each).
	Hubs int
	// FeedsOwn is the number of live feeds with a JetStream consumer of
	// their own; FeedsShared the number on the shared live feed
	// (Config.SharedFeedAfter).
	FeedsOwn, FeedsShared int64
	// FeedOverflows counts the live feeds on the shared feed failed
	// because their hub lagged past their buffer; their clients joined
	// again from their cursors.
	FeedOverflows uint64
	// HubsStarted counts the hubs started since New.
	HubsStarted uint64
	// Overflows counts the times a hub cut a lagging client loose, sending
	// it back to storage.
	Overflows uint64
	// Dropped counts the clients dropped because a write blocked longer
	// than WriteTimeout.
	Dropped uint64
	// ReplayRequests counts the replay requests over NATS answered since
	// New, refusals included.
	ReplayRequests uint64
	// ReplayIgnored counts the replay requests left unanswered because
	// their reply subject was not an inbox of the project's readers.
	ReplayIgnored uint64
}

// Stats returns the current counters.
func (s *Service) Stats() Stats {
	h := s.hubs.Stats()
	fs := s.store.FeedStats()
	return Stats{
		Clients:       s.clients.Load(),
		Hubs:          h.Running,
		FeedsOwn:      fs.Own,
		FeedsShared:   fs.Shared,
		FeedOverflows: fs.Overflows,
		HubsStarted:   h.Started,
		Overflows:     h.Overflows,
		Dropped:       s.dropped.Load(),

		ReplayRequests: s.replayServed.Load(),
		ReplayIgnored:  s.replayIgnored.Load(),
	}
}
