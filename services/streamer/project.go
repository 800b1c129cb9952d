package streamer

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/access/accesshttp"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/streamer/internal/sse"
)

// ProjectEventsPath is the route of a project's lifecycle events.
const ProjectEventsPath = "/v1/projects/:project/events"

// projectEvents serves GET ProjectEventsPath: every lifecycle event of
// the project's jobs stored from now on (or after Last-Event-ID) as
// `status` events, of one stream only with ?stream_id=. It never ends by
// itself: it is the feed of a live job list. The first event, connected,
// carries the position the feed starts after as its id, so a client that
// reconnects before any job event loses none.
func (s *Service) projectEvents(c echo.Context) error {
	project, streamID := c.Param("project"), c.QueryParam("stream_id")
	if !contracts.ValidProjectID(project) {
		return accesshttp.WriteError(c, http.StatusBadRequest, "invalid_project", "project must be a DNS label: lower case letters, digits and '-'")
	}
	if streamID != "" && !contracts.ValidID(streamID) {
		return accesshttp.WriteError(c, http.StatusBadRequest, codeInvalidStreamID, "stream_id must be 1 to 64 letters, digits, '_' or '-'")
	}
	resume, raw, ok := lastEventID(c.Request())
	if !ok {
		return accesshttp.WriteError(c, http.StatusBadRequest, codeInvalidLastEventID, "Last-Event-ID must be a decimal event id received from this stream")
	}
	ctx := c.Request().Context()
	reader, err := s.admit(c, access.ProjectResource(project))
	if err != nil {
		return s.refuse(c, err)
	}
	notFound := func() error {
		return accesshttp.WriteError(c, http.StatusNotFound, "project_not_found", "no project "+project)
	}
	p, err := s.gate.Project(ctx, project)
	missing := errors.Is(err, access.ErrNotFound)
	if err != nil && !missing {
		return s.refuse(c, err)
	}
	// Allow first: a key that may not read the project learns nothing
	// about whether it exists.
	if err := s.allow(c, reader, project, p.Incarnation); err != nil {
		var ae *access.Error
		if errors.As(err, &ae) && ae.Kind == access.KindNotFound {
			return notFound()
		}
		return s.refuse(c, err)
	}
	if missing {
		return notFound()
	}
	var last uint64
	if err := s.retry(ctx, func() (err error) {
		last, err = s.store.LastSeq(ctx)
		return err
	}); err != nil {
		return s.unavailable(c, "read stream end", err)
	}
	if resume > last {
		return accesshttp.WriteError(c, http.StatusBadRequest, codeInvalidLastEventID, "Last-Event-ID "+raw+" is beyond the end of the stream")
	}
	if raw == "" {
		resume = last
	}
	f, err := s.openFeed(c, reader, project, p.Incarnation)
	if f == nil {
		return err
	}
	defer f.close()

	w := sse.NewWriter(c.Response(), s.cfg.WriteTimeout)
	connected, _ := json.Marshal(contracts.SSEProjectConnectedData{Project: project, StreamID: streamID, ResumeAfter: raw})
	if w.Open(s.cfg.Retry) != nil || w.Event(resume, contracts.SSEConnected, connected) != nil || w.Flush() != nil {
		return nil
	}
	pending := false // events written but not flushed
	for pe, err := range s.store.ProjectEventsAfter(f.ctx, project, streamID, resume, s.cfg.Heartbeat) {
		if err != nil {
			if revokedCause(f.held) == nil {
				s.log.Warn("project events failed", "project", project, "err", err)
				s.sendFeedError(w, resume, codeUnavailable, "the project's events are unavailable; reconnect with Last-Event-ID")
			}
			break
		}
		if pe.Flush {
			if pending && w.Flush() != nil {
				return nil
			}
			pending = false
			continue
		}
		if pe.Seq == 0 { // idle
			if ping(w) != nil {
				return nil
			}
			pending = false
			continue
		}
		resume = pe.Seq
		if w.Event(pe.Seq, contracts.SSEStatus, pe.Data) != nil {
			return nil
		}
		pending = true
		// One flush (a system call) per burst, not per event.
		if !pe.More {
			if w.Flush() != nil {
				return nil
			}
			pending = false
		}
	}
	if pending {
		_ = w.Flush()
	}
	s.ended(f, w, resume, func() error { return nil })
	return nil
}
