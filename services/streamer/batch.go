package streamer

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/access/accesshttp"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/state"
	"github.com/rdev-dev/rdev/services/streamer/internal/sse"
)

// BatchEventsPath is the route of a batch's lifecycle events.
const BatchEventsPath = "/v1/batches/:batch_id/events"

// batchEvents serves GET BatchEventsPath: every lifecycle event of every
// job of the batch as `status` events (ids are JetStream sequences, so
// Last-Event-ID resumes), then one `complete` event once every job has
// ended. The events are read from the batch's start each time, which is
// how a resumed connection knows which jobs already ended.
func (s *Service) batchEvents(c echo.Context) error {
	id := c.Param("batch_id")
	if !contracts.ValidID(id) {
		return accesshttp.WriteError(c, http.StatusBadRequest, "invalid_batch_id", "batch id must be 1 to 64 letters, digits, '_' or '-'")
	}
	resume, _, ok := lastEventID(c.Request())
	if !ok {
		return accesshttp.WriteError(c, http.StatusBadRequest, codeInvalidLastEventID, "Last-Event-ID must be a decimal event id received from this stream")
	}
	ctx := c.Request().Context()
	reader, err := s.admit(c, access.BatchResource(id))
	if err != nil {
		return s.refuse(c, err)
	}
	b, err := s.store.Batch(ctx, id)
	if errors.Is(err, state.ErrNotFound) {
		return accesshttp.WriteError(c, http.StatusNotFound, "batch_not_found", "no batch "+id)
	}
	if err != nil {
		return s.unavailable(c, "read batch", err)
	}
	if err := s.allow(c, reader, b.Project, b.ProjectIncarnation); err != nil {
		var ae *access.Error
		if errors.As(err, &ae) && ae.Kind == access.KindNotFound {
			return accesshttp.WriteError(c, http.StatusNotFound, "batch_not_found", "no batch "+id)
		}
		return s.refuse(c, err)
	}
	f, err := s.openFeed(c, reader, b.Project, b.ProjectIncarnation)
	if f == nil {
		return err
	}
	defer f.close()

	w := sse.NewWriter(c.Response(), s.cfg.WriteTimeout)
	// The response opens with its first event, so that a client resuming
	// after complete can be answered 204 (which stops an EventSource).
	var opened bool
	var openErr error
	open := func() error {
		if !opened {
			opened, openErr = true, w.Open(s.cfg.Retry)
		}
		return openErr
	}
	from := resume
	members := make(map[string]bool, len(b.JobIDs))
	for _, j := range b.JobIDs {
		members[j] = true
	}
	ended := map[string]contracts.Status{}
	// done sends complete with its own id, one above the last job's
	// terminal event: no status event of the batch comes after that one,
	// so resuming with the complete's id finds nothing more, and 204.
	done := func(endedAt uint64) error {
		id := endedAt + 1
		if from >= id && !opened {
			return c.NoContent(http.StatusNoContent)
		}
		counts := map[contracts.Status]int{}
		for _, st := range ended {
			counts[st]++
		}
		data, _ := json.Marshal(contracts.BatchComplete{BatchID: b.ID, Jobs: len(b.JobIDs), Counts: counts})
		if err := open(); err != nil {
			return err
		}
		if err := w.Event(id, contracts.SSEComplete, data); err != nil {
			return err
		}
		return w.Flush()
	}
	if len(members) == 0 {
		_ = done(0)
		return nil
	}
	since := b.SubmittedAt.Add(-contracts.DuplicateWindow) // clock skew between API and NATS
	pending := false                                       // events written but not flushed
	for pe, err := range s.store.ProjectEvents(f.ctx, b.Project, since, s.cfg.Heartbeat) {
		if err != nil && revokedCause(f.held) != nil {
			break // said below
		}
		if err != nil {
			s.log.Warn("batch events failed", "batch_id", b.ID, "err", err)
			if open() == nil {
				s.sendFeedError(w, resume, codeUnavailable, "the batch's events are unavailable; reconnect with Last-Event-ID")
			}
			return nil
		}
		if pe.Flush {
			if pending && w.Flush() != nil {
				return nil
			}
			pending = false
			continue
		}
		if pe.Seq == 0 { // idle
			if open() != nil || ping(w) != nil {
				return nil
			}
			pending = false
			continue
		}
		if members[pe.JobID] {
			if pe.Type.Terminal() {
				ended[pe.JobID] = pe.Status
			}
			if pe.Seq > resume {
				resume = pe.Seq
				if open() != nil || w.Event(pe.Seq, contracts.SSEStatus, pe.Data) != nil {
					return nil
				}
				pending = true
			}
		}
		// One flush (a system call) per burst, not per event.
		if pending && !pe.More {
			if w.Flush() != nil {
				return nil
			}
			pending = false
		}
		if len(ended) == len(members) {
			_ = done(pe.Seq) // flushes what is pending too
			return nil
		}
	}
	s.ended(f, w, resume, open)
	return nil
}
