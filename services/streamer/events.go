package streamer

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/access/accesshttp"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/state"
	"github.com/rdev-dev/rdev/services/streamer/internal/entry"
	"github.com/rdev-dev/rdev/services/streamer/internal/follow"
	"github.com/rdev-dev/rdev/services/streamer/internal/freshstack"
	"github.com/rdev-dev/rdev/services/streamer/internal/natsjs"
	"github.com/rdev-dev/rdev/services/streamer/internal/sse"
)

// Error codes of the events endpoint, in JSON bodies and in error events.
const (
	codeInvalidStreamID    = "invalid_stream_id"
	codeStreamNotFound     = "stream_not_found"
	codeInvalidLastEventID = "invalid_last_event_id"
	codeUnavailable        = "unavailable"
	codeShuttingDown       = "shutting_down"
	// codeAccessRevoked ends a stream whose reader lost access while it
	// was open; reconnecting would be refused.
	codeAccessRevoked = access.CodeAccessRevoked
)

// events serves GET EventsPath.
func (s *Service) events(c echo.Context) error {
	streamID := c.Param("stream_id")
	if !contracts.ValidID(streamID) {
		return accesshttp.WriteError(c, http.StatusBadRequest, codeInvalidStreamID,
			"stream id must be 1 to 64 letters, digits, '_' or '-'")
	}
	resume, raw, ok := lastEventID(c.Request())
	if !ok {
		return accesshttp.WriteError(c, http.StatusBadRequest, codeInvalidLastEventID,
			"Last-Event-ID must be a decimal event id received from this stream")
	}
	if ok, err := checkFormat(c); !ok {
		// Answered: going on would stream after the 400's body.
		return err
	}
	reader, err := s.admit(c, access.StreamResource(streamID))
	if err != nil {
		return s.refuse(c, err)
	}
	if !s.enter() {
		return accesshttp.WriteError(c, http.StatusServiceUnavailable, codeShuttingDown, "the streamer is shutting down; retry")
	}
	detached := false
	defer func() {
		if !detached {
			s.active.Done()
		}
	}()
	// The request goroutine lives as long as the stream; opening the
	// stream needs a deep stack, so it runs on a fresh one.
	var st *opened
	freshstack.Run(func() { st, err = s.open(c, reader, streamID, resume, raw) })
	if st == nil {
		return err
	}
	ip, k := accesshttp.ClientIP(c), sinkFor(c, sink{st.w})
	conn := st.w.Conn()
	if conn == nil { // net/http still serves the response
		s.stream(c.Request().Context(), ip, st, k)
		return nil
	}
	// The connection was taken over: the stream goes on without the
	// request, its handler, its goroutine or net/http's buffers. It ends
	// when the client hangs up, as the request's context would.
	ctx, hungUp := context.WithCancel(context.WithoutCancel(c.Request().Context()))
	t := &taken{s: s, ctx: ctx, hungUp: hungUp, ip: ip, st: st, k: k}
	t.stopWatch = s.hangups.Watch(conn, hungUp)
	detached = true
	go t.run()
	return nil
}

// taken is a stream whose connection was taken over from net/http,
// served by run on a goroutine of its own.
type taken struct {
	s                 *Service
	ctx               context.Context // ends when the client hangs up
	hungUp, stopWatch func()
	ip                netip.Addr
	st                *opened
	k                 follow.Sink
}

// run serves the stream and closes the connection at its end.
//
// This goroutine waits out the stream's idle hours, so what is on its
// stack meanwhile (run's frame, the follower's, the select's) is kept
// small: the runtime halves a stack at garbage collection while less than
// a quarter of it is in use (counting 800 bytes of guard), so under about
// 1,200 bytes deep its 8 KiB become 4 KiB for the rest of the stream.
// Whatever happens before and after the wait is in functions of its own.
func (t *taken) run() {
	s := t.s
	defer s.active.Done()
	s.clients.Add(1)
	held, release, reqCtx, end := s.startStream(t.ctx, t.ip, t.st)
	err := s.follower.Run(reqCtx, t.st.takeJoin(), &t.st.cur, s.in.sink(reqCtx, t.k))
	t.end(held, reqCtx, err, release, end)
}

//go:noinline
func (t *taken) end(held, reqCtx context.Context, err error, release func(), end func(error)) {
	s := t.s
	s.streamEnded(held, reqCtx, err, t.st)
	end(err)
	release()
	s.clients.Add(-1)
	t.stopWatch()
	t.hungUp()
	if err := t.st.w.Close(); err != nil && t.ctx.Err() == nil {
		s.writeFailed(t.st.ref, err)
	}
}

// opened is an event stream opened and ready to follow.
type opened struct {
	ref    contracts.StreamRef
	w      *sse.Writer
	cur    follow.Cursor
	reader access.Reader
	pre    *follow.Joining // its hub, being joined; Run takes it
}

// takeJoin hands the join over to Run: an open stream holds nothing of
// it for the hours it may stay idle.
func (o *opened) takeJoin() *follow.Joining {
	j := o.pre
	o.pre = nil
	return j
}

// open looks the stream and the resume position up, answers the request
// when it cannot be streamed, and otherwise opens its event stream and
// sends the connected event. It returns nil and the handler's error when
// the request was answered.
func (s *Service) open(c echo.Context, reader access.Reader, streamID string, resume uint64, raw string) (*opened, error) {
	ctx := c.Request().Context()
	var ref contracts.StreamRef
	err := s.retry(ctx, func() (err error) {
		ref, err = s.store.Ref(ctx, streamID)
		return err
	}, state.ErrNotFound)
	if errors.Is(err, state.ErrNotFound) {
		return nil, s.refuse(c, access.StreamNotFound()) // word for word as for another project's stream
	}
	if err != nil {
		return nil, s.unavailable(c, "read stream ref", err)
	}
	if err := s.allow(c, reader, ref.Project, ref.ProjectIncarnation); err != nil {
		return nil, s.refuse(c, err)
	}

	cur := follow.Cursor{StreamSeq: resume}
	if resume > 0 {
		var e entry.Entry
		err := s.retry(ctx, func() (err error) {
			e, err = s.store.At(ctx, streamID, resume)
			return err
		}, entry.ErrForeign, natsjs.ErrNoMessage)
		switch {
		case errors.Is(err, entry.ErrForeign):
			return nil, accesshttp.WriteError(c, http.StatusBadRequest, codeInvalidLastEventID,
				"Last-Event-ID "+raw+" is not an event of stream "+streamID)
		case errors.Is(err, natsjs.ErrNoMessage):
			var last uint64
			err := s.retry(ctx, func() (err error) {
				last, err = s.store.LastSeq(ctx)
				return err
			})
			if err != nil {
				return nil, s.unavailable(c, "read stream end", err)
			}
			if resume > last {
				return nil, accesshttp.WriteError(c, http.StatusBadRequest, codeInvalidLastEventID,
					"Last-Event-ID "+raw+" is beyond the end of the stream")
			}
			// Expired: resume after it without knowing its line number.
		case err != nil:
			return nil, s.unavailable(c, "read resume position", err)
		case e.Kind == entry.Complete:
			// The client has the whole stream; 204 stops EventSource.
			return nil, c.NoContent(http.StatusNoContent)
		default:
			cur.Line = e.Line
		}
	}

	connected, err := json.Marshal(contracts.SSEConnectedData{StreamID: ref.StreamID, JobID: ref.JobID, ResumeAfter: raw})
	if err != nil {
		s.streamLog(ref).Error("encode connected event", "err", err)
		return nil, nil
	}
	// The stream will be followed: its live feed opens while the client
	// gets its headers.
	pre := s.follower.Prepare(ctx, streamID)
	w := sse.NewWriter(c.Response(), s.cfg.WriteTimeout)
	err = w.Take(c.Request(), s.cfg.Retry)
	if err == nil {
		err = w.Event(cur.StreamSeq, contracts.SSEConnected, connected)
	}
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		pre.Abandon()
		s.writeFailed(ref, err)
		_ = w.Close() // a connection taken over is the streamer's to close
		return nil, nil
	}
	return &opened{ref: ref, w: w, cur: cur, reader: reader, pre: pre}, nil
}

// retry calls op until it succeeds or returns one of the final errors,
// riding out failing storage as open streams do: it gives up once storage
// has failed for UnavailableAfter, or when the request or the service
// ends. A 503 before the stream opens would end a browser's EventSource
// for good (it reconnects only after a stream that opened), so waiting
// out a NATS reconnect is better than answering at once.
func (s *Service) retry(ctx context.Context, op func() error, final ...error) error {
	start := time.Now()
	wait := retryMin
	for {
		err := op()
		if err == nil || slices.ContainsFunc(final, func(f error) bool { return errors.Is(err, f) }) ||
			time.Since(start)+wait > s.cfg.UnavailableAfter {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		case <-s.quit.Done():
			t.Stop()
			return err
		}
		wait = min(2*wait, retryMax)
	}
}

// lastEventID returns the resume position from the Last-Event-ID header or,
// for clients that cannot set headers, the last_event_id query parameter.
func lastEventID(r *http.Request) (seq uint64, raw string, ok bool) {
	raw = r.Header.Get("Last-Event-ID")
	if raw == "" {
		raw = r.URL.Query().Get("last_event_id")
	}
	if raw == "" {
		return 0, "", true
	}
	seq, err := strconv.ParseUint(raw, 10, 64)
	return seq, raw, err == nil
}

// stream follows an opened stream until it ends or ctx, the client's
// request, does.
func (s *Service) stream(ctx context.Context, ip netip.Addr, st *opened, k follow.Sink) {
	s.clients.Add(1)
	defer s.clients.Add(-1)
	held, release, reqCtx, end := s.startStream(ctx, ip, st)
	defer release()
	err := s.follower.Run(reqCtx, st.takeJoin(), &st.cur, s.in.sink(reqCtx, k))
	s.streamEnded(held, reqCtx, err, st)
	end(err)
}

// startStream holds the reader's access for the stream (held ends when
// it is lost; call release at the end) and starts the delivery's span
// (reqCtx; call end with the outcome).
//
//go:noinline
func (s *Service) startStream(ctx context.Context, ip netip.Addr, st *opened) (held context.Context, release func(), reqCtx context.Context, end func(error)) {
	held, release = s.gate.Hold(ctx, st.reader, st.ref.Project, st.ref.ProjectIncarnation, ip)
	reqCtx, end = s.in.startDelivery(held, st)
	return held, release, reqCtx, end
}

// streamEnded tells the client why its stream ended, when it may hear it.
//
//go:noinline
func (s *Service) streamEnded(held, reqCtx context.Context, err error, st *opened) {
	var werr writeError
	switch {
	case err == nil: // complete sent
	case errors.As(err, &werr):
		s.writeFailed(st.ref, werr.err)
	case revokedCause(held) != nil:
		s.sendError(st, codeAccessRevoked, revokedCause(held).Message)
	case reqCtx.Err() != nil: // the client left
	case s.quit.Err() != nil:
		s.sendError(st, codeShuttingDown, "the streamer is shutting down; reconnect with Last-Event-ID")
	default:
		s.streamLog(st.ref).Error("stream failed", "err", err)
		s.sendError(st, codeUnavailable, "the stream is unavailable; reconnect with Last-Event-ID")
	}
}

// streamLog returns the logger for one stream's messages. It is built when
// there is something to log rather than held by every open stream.
func (s *Service) streamLog(ref contracts.StreamRef) *slog.Logger {
	return s.log.With("stream_id", ref.StreamID, "job_id", ref.JobID)
}

func (s *Service) sendError(st *opened, code, msg string) {
	data, _ := json.Marshal(contracts.ErrorDetail{Code: code, Message: msg}) // cannot fail: two strings
	err := st.w.Event(st.cur.StreamSeq, contracts.SSEError, data)
	if err == nil {
		err = st.w.Flush()
	}
	if err != nil {
		s.streamLog(st.ref).Warn("send error event", "code", code, "err", err)
	}
}

// writeFailed records a write the client did not take: a stall past
// WriteTimeout drops the client, anything else means it left.
func (s *Service) writeFailed(ref contracts.StreamRef, err error) {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		s.dropped.Add(1)
		s.streamLog(ref).Warn("client dropped: write blocked past timeout", "timeout", s.cfg.WriteTimeout)
		return
	}
	s.streamLog(ref).Debug("client write failed", "err", err)
}

// sink writes entries as SSE events.
type sink struct{ w *sse.Writer }

// writeError marks a failure to write to the client, as opposed to a
// failure to read the stream.
type writeError struct{ err error }

func (e writeError) Error() string { return "write to client: " + e.err.Error() }
func (e writeError) Unwrap() error { return e.err }

// The slots of entry.Shared: one encoding of a live entry per format a
// client may ask for, made once for all the clients of the stream that
// asked for it. Nothing else about a client changes the bytes of an
// entry's frame: its id is the entry's stream sequence for everyone, and
// what differs by client (where it resumes, gaps it is told of,
// heartbeats, error events) is written around the shared frames.
const (
	encodingRaw = iota
	encodingClaude
	encodings
)

// A compile-time check that entry.Shared has a slot for every format.
var _ [entry.Encodings - encodings]struct{}

// Send writes e as an SSE event. A live entry's frame is encoded once for
// every client of the stream (entry.Shared) and copied here; an entry
// read for this client alone (replayed, a gap) is encoded as it is written.
// Both are the same bytes.
func (k sink) Send(e entry.Entry) error {
	if e.Shared != nil {
		return wrapWrite(k.w.Frame(e.Shared.Encoding(encodingRaw, e, encodeRaw)))
	}
	return wrapWrite(k.w.Event(e.StreamSeq, eventName(e.Kind), e.Data))
}

// encodeRaw returns the SSE frame of e in the default format.
func encodeRaw(e entry.Entry) []byte {
	return sse.AppendEvent(make([]byte, 0, len(e.Data)+64), e.StreamSeq, eventName(e.Kind), e.Data)
}

// eventName is the SSE event that carries an entry of kind k.
func eventName(k entry.Kind) string {
	switch k {
	case entry.Status:
		return contracts.SSEStatus
	case entry.Complete:
		return contracts.SSEComplete
	case entry.Gap:
		return contracts.SSEGap
	default:
		return contracts.SSEOutput
	}
}

func (k sink) Flush() error { return wrapWrite(k.w.Flush()) }
func (k sink) Ping() error  { return wrapWrite(k.w.Comment("ping")) }

func wrapWrite(err error) error {
	if err == nil {
		return nil
	}
	return writeError{err}
}

// unavailable answers 503 for a NATS failure, unless the client left.
func (s *Service) unavailable(c echo.Context, what string, err error) error {
	if c.Request().Context().Err() != nil {
		return nil //nolint:nilerr // the client left: there is nobody to answer
	}
	s.log.Error("stream storage unavailable", "op", what, "err", err)
	return accesshttp.WriteError(c, http.StatusServiceUnavailable, codeUnavailable, "stream storage is unavailable; retry")
}
