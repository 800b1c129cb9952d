package streamer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/state"
	"github.com/rdev-dev/rdev/services/streamer/internal/entry"
	"github.com/rdev-dev/rdev/services/streamer/internal/natsjs"
)

// Replay over NATS (docs/nats.md, direct subscribers): a direct
// subscriber's credential publishes a contracts.ReplayRequest on
// contracts.SubjectReplay and the streamer answers once, on the request's
// reply subject, with the stream's stored messages. The NATS server
// checks the credential's publish subject (its own project's replays)
// but not the reply subject, and the streamer's role may publish into
// any project's reader inboxes: so the streamer itself answers only into
// the asking project's, and says nothing to any other reply subject (a
// job subject, a KV key, another project's inbox), which it counts in
// Stats.ReplayIgnored and logs (at info the 1st, 2nd, 4th… time, else at
// debug).
const (
	// replaySubject is every replay request: rdev.replay.<project>.<stream_id>.
	replaySubject = contracts.SubjectReplayPrefix + ".*.*"
	// replayQueue shares the requests among the streamers: one answers.
	replayQueue = "rdev-streamer-replay"
	// replayInFlight bounds the replay requests served at once by one
	// streamer; beyond it a request gets ReplayErrBusy at once. Their
	// storage reads also wait in the line every replay shares
	// (Config.ReplayReads).
	replayInFlight = 64
	// replayTimeout bounds serving one request (the client library's
	// request usually gives up sooner).
	replayTimeout = 30 * time.Second
	// replayOverhead is what a reply's envelope and each message's
	// fields add to the stored bodies, generously: the reply stays under
	// the server's max payload.
	replayOverhead = 128
)

// startReplays subscribes to replay requests on nc; s.mu is held.
func (s *Service) startReplays(nc *nats.Conn) error {
	sub, err := nc.QueueSubscribe(replaySubject, replayQueue, s.replayRequest)
	if err != nil {
		return err
	}
	s.replaySub = sub
	return nil
}

// stopReplays stops taking requests on sub (nil: none were taken);
// Shutdown waits for those being served (s.active), which its
// cancellation of s.quit ends.
func (s *Service) stopReplays(sub *nats.Subscription) {
	if sub == nil {
		return
	}
	if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
		s.log.Warn("unsubscribe replay requests", "err", err)
	}
}

// replayRequest runs on the subscription's goroutine: it checks the
// reply subject and hands the request to a goroutine of its own.
func (s *Service) replayRequest(m *nats.Msg) {
	project, streamID, _ := strings.Cut(strings.TrimPrefix(m.Subject, contracts.SubjectReplayPrefix+"."), ".")
	if !replyAllowed(m.Reply, project) {
		// Logged at info the 1st, 2nd, 4th, 8th… time, so a credential
		// sending a flood of them does not flood the log; the counter
		// has every one.
		n := s.replayIgnored.Add(1)
		level := slog.LevelDebug
		if n&(n-1) == 0 {
			level = slog.LevelInfo
		}
		s.log.Log(context.Background(), level, "replay request ignored: its reply subject is not an inbox of the project's readers",
			"project", project, "stream_id", streamID, "reply", m.Reply, "ignored", n)
		return
	}
	if !contracts.ValidProjectID(project) || !contracts.ValidID(streamID) {
		s.replyReplay(m, replayError(contracts.ReplayErrInvalidRequest, "the subject names no stream: want "+contracts.SubjectReplay("<project>", "<stream_id>")))
		return
	}
	select {
	case s.replaySlots <- struct{}{}:
	default:
		s.replyReplay(m, replayError(contracts.ReplayErrBusy, "too many replays in progress; ask again later"))
		return
	}
	if !s.enter() {
		<-s.replaySlots
		s.replyReplay(m, replayError(contracts.ReplayErrUnavailable, "the streamer is shutting down; ask again"))
		return
	}
	go func() {
		defer s.active.Done()
		defer func() { <-s.replaySlots }()
		ctx, cancel := context.WithTimeout(s.quit, replayTimeout)
		defer cancel()
		s.replyReplay(m, s.replay(ctx, project, streamID, m.Data, s.maxPayload()))
	}()
}

// replyAllowed reports whether reply is an inbox of project's direct
// subscribers (contracts.SubjectReaderInbox), where a replay reply may
// go. The project token was checked by the server against the
// credential's permissions when the request was published, so a reply
// under the same project goes to a reader of that project.
func replyAllowed(reply, project string) bool {
	prefix := contracts.ReaderInboxPrefix + "." + project + "."
	rest, ok := strings.CutPrefix(reply, prefix)
	return ok && project != "" && !strings.Contains(project, ".") && rest != "" &&
		!strings.ContainsAny(reply, "*> \t\r\n") && !strings.HasSuffix(rest, ".") && !strings.Contains(rest, "..")
}

// maxPayload is the most a reply may carry: the server's max payload.
func (s *Service) maxPayload() int64 {
	if n := s.nc.MaxPayload(); n > 0 {
		return n
	}
	return 1 << 20 // the server's default
}

func replayError(code, message string) contracts.ReplayReply {
	return contracts.ReplayReply{V: contracts.ReplayVersion, Error: &contracts.ErrorDetail{Code: code, Message: message}}
}

// replay serves one request of project's stream streamID.
func (s *Service) replay(ctx context.Context, project, streamID string, body []byte, limit int64) contracts.ReplayReply {
	var req contracts.ReplayRequest
	if len(bytes.TrimSpace(body)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return replayError(contracts.ReplayErrInvalidRequest, "the body is not a replay request ({\"after\":<sequence>,\"max\":<1 to 500>}): "+err.Error())
		}
		if dec.More() {
			return replayError(contracts.ReplayErrInvalidRequest, "the body holds more than one JSON value")
		}
	}
	switch {
	case req.Max < 0 || req.Max > contracts.DefaultReplayMax:
		return replayError(contracts.ReplayErrInvalidRequest, "max must be 1 to 500 (0: 500)")
	case req.Max == 0:
		req.Max = contracts.DefaultReplayMax
	}
	notFound := replayError(contracts.ReplayErrStreamNotFound, "project "+project+" has no stream "+streamID)
	ref, err := s.store.Ref(ctx, streamID)
	switch {
	case errors.Is(err, state.ErrNotFound):
		return notFound
	case err != nil:
		s.log.Warn("replay over NATS: read stream ref", "stream_id", streamID, "err", err)
		return replayError(contracts.ReplayErrUnavailable, "the stream could not be looked up; ask again later")
	case ref.Project != project:
		return notFound // word for word as for a stream that does not exist
	}
	// A project deleted and created again is another incarnation, whose
	// readers see nothing of the old one's streams.
	p, err := s.gate.Project(ctx, project)
	switch {
	case errors.Is(err, access.ErrNotFound):
		return notFound
	case err != nil:
		s.log.Warn("replay over NATS: read project", "project", project, "err", err)
		return replayError(contracts.ReplayErrUnavailable, "the project could not be looked up; ask again later")
	case ref.ProjectIncarnation != "" && ref.ProjectIncarnation != p.Incarnation:
		return notFound
	}
	until, err := s.store.End(ctx)
	if err != nil {
		s.log.Warn("replay over NATS: read the stream's end", "err", err)
		return replayError(contracts.ReplayErrUnavailable, "storage could not be read; ask again later")
	}
	reply := contracts.ReplayReply{V: contracts.ReplayVersion, Next: req.After}
	if req.After >= until {
		reply.Next, reply.Exhausted = max(req.After, until), true
		return reply
	}
	size := int64(replayOverhead)
	reply.Exhausted = true
	for m, err := range s.store.ReplayStored(ctx, streamID, req.After, until) {
		if err != nil {
			if len(reply.Messages) > 0 {
				reply.Exhausted = false // what was read, the rest later
				break
			}
			if errors.Is(err, natsjs.ErrBusy) {
				return replayError(contracts.ReplayErrBusy, "too many replays are reading storage; ask again later")
			}
			s.log.Warn("replay over NATS", "stream_id", streamID, "err", err)
			return replayError(contracts.ReplayErrUnavailable, "storage could not be read; ask again later")
		}
		n := int64(len(m.Data) + len(m.Subject) + replayOverhead)
		if len(reply.Messages) == req.Max || (len(reply.Messages) > 0 && size+n > limit) {
			reply.Exhausted = false
			break
		}
		reply.Next = m.Seq
		e, err := entry.Parse(streamID, m.Subject, m.Seq, m.Data)
		if err != nil || !ofProject(m.Subject, project) {
			continue // skipped as the SSE stream skips it; Next moves past it
		}
		size += n
		reply.Messages = append(reply.Messages, contracts.ReplayMessage{Subject: m.Subject, Seq: m.Seq, Data: m.Data})
		if e.Kind == entry.Complete {
			reply.Ended = true
		}
	}
	if reply.Exhausted {
		reply.Next = until
	}
	return reply
}

// ofProject reports whether an output or event subject belongs to
// project: its project token, when it has one (a line stored before
// subjects carried the project has none; its stream's reference said
// whose it is).
func ofProject(subject, project string) bool {
	t := strings.Split(subject, ".")
	if len(t) == 3 { // contracts.SubjectOutputLegacy
		return true
	}
	return len(t) >= 4 && t[2] == project
}

// replyReplay sends r on m's reply subject, bodies unchanged (no HTML
// escaping of the stored JSON).
func (s *Service) replyReplay(m *nats.Msg, r contracts.ReplayReply) {
	s.replayServed.Add(1)
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(r); err != nil {
		s.log.Error("encode replay reply", "err", err)
		return
	}
	if err := m.Respond(bytes.TrimSuffix(b.Bytes(), []byte("\n"))); err != nil {
		s.log.Warn("answer replay request", "subject", m.Subject, "err", err)
	}
}
