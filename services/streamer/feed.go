package streamer

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/access/accesshttp"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/streamer/internal/sse"
)

// A feed is an open stream of lifecycle events (a batch's or a
// project's): counted among the open streams, held while its reader may
// read the project, and ended by Shutdown.
type feed struct {
	// held is cancelled once the reader loses access (revokedCause says
	// why); ctx also when the request or the service ends.
	held, ctx context.Context
	close     func()
}

// openFeed opens a feed for an admitted and allowed reader, or answers
// 503 and returns nil when the service is shutting down. Call close when
// the feed ends.
func (s *Service) openFeed(c echo.Context, r access.Reader, project, incarnation string) (*feed, error) {
	if !s.enter() {
		return nil, accesshttp.WriteError(c, http.StatusServiceUnavailable, codeShuttingDown, "the streamer is shutting down; retry")
	}
	s.clients.Add(1)
	held, release := s.gate.Hold(c.Request().Context(), r, project, incarnation, accesshttp.ClientIP(c))
	ctx, cancel := context.WithCancel(held)
	stop := context.AfterFunc(s.quit, cancel)
	return &feed{held: held, ctx: ctx, close: func() {
		stop()
		cancel()
		release()
		s.clients.Add(-1)
		s.active.Done()
	}}, nil
}

// ended tells the client why a feed ended before its end, if it was the
// reader's access or the service stopping; open opens the response first
// if it is not yet.
func (s *Service) ended(f *feed, w *sse.Writer, id uint64, open func() error) {
	switch ae := revokedCause(f.held); {
	case ae != nil && open() == nil:
		s.sendFeedError(w, id, codeAccessRevoked, ae.Message)
	case s.quit.Err() != nil && open() == nil:
		s.sendFeedError(w, id, codeShuttingDown, "the streamer is shutting down; reconnect with Last-Event-ID")
	}
}

// sendFeedError ends a feed with an error event.
func (s *Service) sendFeedError(w *sse.Writer, id uint64, code, msg string) {
	data, _ := json.Marshal(contracts.ErrorDetail{Code: code, Message: msg})
	if w.Event(id, contracts.SSEError, data) == nil {
		_ = w.Flush()
	}
}

// ping keeps an idle feed's connection seen alive.
func ping(w *sse.Writer) error {
	if err := w.Comment("ping"); err != nil {
		return err
	}
	return w.Flush()
}
