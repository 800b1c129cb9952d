package notifier

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/state"
	"github.com/rdev-dev/rdev/pkg/state/webhookstore"
)

// intakeTimeout bounds the work of taking one event up.
const intakeTimeout = 10 * time.Second

// deadSource orders a dead letter's delivery after every lifecycle event
// of its job (those are ordered by their RDEV_OUTPUT sequence).
const deadSource = uint64(1) << 63

// batchProgress records, under "batchend.<batch id>" in the deliveries
// bucket, which jobs of a batch have ended: the batch completes when
// every job has, the rule the streamer applies to a batch's events.
type batchProgress struct {
	Ended map[string]contracts.Status `json:"ended"`
}

// onEvent takes up a lifecycle event: a delivery for each endpoint that
// subscribes to it, and, for the last job of a batch to end, the batch's
// completion.
func (s *Service) onEvent(msg jetstream.Msg) {
	s.take(msg, func(ctx context.Context, seq uint64) error {
		// The subject names the project (rdev.events.<project>.…): most
		// events belong to projects without a webhook, and decoding every
		// one cost a notifier with none 2 % of rdev up's CPU.
		if p, ok := eventProject(msg.Subject()); ok && !s.watched(p) {
			return nil
		}
		var ev contracts.Event
		if err := json.Unmarshal(msg.Data(), &ev); err != nil {
			return errUndecodable
		}
		return s.takeEvent(ctx, seq, ev)
	})
}

// errUndecodable marks a message that no retry makes readable.
var errUndecodable = errors.New("undecodable message")

// take runs one message's intake: acked once stored, terminated when
// undecodable, and otherwise taken up again a second later.
func (s *Service) take(msg jetstream.Msg, intake func(ctx context.Context, seq uint64) error) {
	meta, err := msg.Metadata()
	if err != nil {
		_ = msg.Term()
		return
	}
	ctx, cancel := context.WithTimeout(s.life, intakeTimeout)
	defer cancel()
	switch err := intake(ctx, meta.Sequence.Stream); {
	case errors.Is(err, errUndecodable):
		s.log.Warn("undecodable message; skipped", "subject", msg.Subject())
		_ = msg.Term()
	case err != nil:
		s.log.Warn("webhook intake failed; retried", "subject", msg.Subject(), "err", err)
		_ = msg.NakWithDelay(time.Second)
	default:
		_ = msg.Ack()
	}
}

func (s *Service) takeEvent(ctx context.Context, seq uint64, ev contracts.Event) error {
	if t, ok := contracts.WebhookEventFor(ev.Type); ok {
		if targets := s.subscribers(ev.Project, t); len(targets) > 0 {
			ref, _, err := s.state.Streams.Get(ctx, ev.StreamID)
			if err != nil && !errors.Is(err, state.ErrNotFound) {
				return err
			}
			data := contracts.WebhookData{Project: ev.Project, JobID: ev.JobID, StreamID: ev.StreamID, BatchID: ev.BatchID,
				Status: ev.Status, Attempt: ev.Attempt, ExitCode: ev.ExitCode, Reason: ev.Reason, Message: ev.Message,
				DurationMS: ev.DurationMS, Lines: ev.Lines, RetryInSeconds: ev.RetryInSeconds, TraceID: contracts.TraceID(ref.Trace),
				Links: jobLinks(ev.JobID, ev.StreamID)}
			p := contracts.WebhookPayload{V: contracts.WebhookPayloadVersion, Type: t, Timestamp: ev.Time, Data: data}
			for _, ep := range targets {
				if ref.ProjectIncarnation != "" && ep.ProjectIncarnation != ref.ProjectIncarnation {
					continue // the project's earlier incarnation's job
				}
				if err := s.deliver(ctx, ep, "msg_e"+strconv.FormatUint(seq, 10), ev.JobID, seq, p, ref.Trace); err != nil {
					return err
				}
			}
		}
	}
	if ev.Type.Terminal() && ev.BatchID != "" && len(s.subscribers(ev.Project, contracts.WebhookBatchCompleted)) > 0 {
		return s.batchEnded(ctx, ev, seq)
	}
	return nil
}

func jobLinks(jobID, streamID string) contracts.WebhookLinks {
	return contracts.WebhookLinks{Job: "/v1/jobs/" + jobID, Events: "/v1/streams/" + streamID + "/events"}
}

// batchEnded records that ev's job ended and, once every job of its batch
// has, queues batch.completed. A redelivered event queues it again, which
// the delivery's fixed id makes harmless.
func (s *Service) batchEnded(ctx context.Context, ev contracts.Event, seq uint64) error {
	b, _, err := s.state.Batches.Get(ctx, ev.BatchID)
	if errors.Is(err, state.ErrNotFound) || (err == nil && !slices.Contains(b.JobIDs, ev.JobID)) {
		return nil
	}
	if err != nil {
		return err
	}
	var p batchProgress
	for {
		var rev uint64
		p, rev, err = s.progress.Get(ctx, b.ID)
		if errors.Is(err, state.ErrNotFound) {
			p, rev = batchProgress{}, 0
		} else if err != nil {
			return err
		}
		if p.Ended == nil {
			p.Ended = map[string]contracts.Status{}
		}
		if _, seen := p.Ended[ev.JobID]; seen {
			break
		}
		p.Ended[ev.JobID] = ev.Status
		if _, err = s.progress.Update(ctx, b.ID, p, rev); !errors.Is(err, state.ErrConflict) {
			if err != nil {
				return err
			}
			break
		}
	}
	if len(p.Ended) < len(b.JobIDs) {
		return nil
	}
	counts := map[contracts.Status]int{}
	for _, st := range p.Ended {
		counts[st]++
	}
	pl := contracts.WebhookPayload{V: contracts.WebhookPayloadVersion, Type: contracts.WebhookBatchCompleted, Timestamp: ev.Time,
		Data: contracts.WebhookData{Project: b.Project, BatchID: b.ID, Jobs: len(b.JobIDs), Counts: counts,
			Links: contracts.WebhookLinks{Batch: "/v1/batches/" + b.ID, Events: "/v1/batches/" + b.ID + "/events"}}}
	for _, ep := range s.subscribers(b.Project, contracts.WebhookBatchCompleted) {
		if b.ProjectIncarnation != "" && ep.ProjectIncarnation != b.ProjectIncarnation {
			continue
		}
		if err := s.deliver(ctx, ep, "msg_b"+b.ID, "batch:"+b.ID, seq, pl, nil); err != nil {
			return err
		}
	}
	return nil
}

// onDeadLetter takes up a dead letter: job.dead_lettered for its
// subscribers. An undecodable job names no project to tell.
func (s *Service) onDeadLetter(msg jetstream.Msg) {
	s.take(msg, func(ctx context.Context, seq uint64) error {
		var dl contracts.DeadLetter
		if err := json.Unmarshal(msg.Data(), &dl); err != nil {
			return errUndecodable
		}
		if dl.Job == nil {
			return nil // its job was undecodable: no project to tell
		}
		j := dl.Job
		p := contracts.WebhookPayload{V: contracts.WebhookPayloadVersion, Type: contracts.WebhookJobDeadLettered, Timestamp: dl.Time,
			Data: contracts.WebhookData{Project: j.Project, JobID: j.ID, StreamID: j.StreamID, BatchID: j.BatchID,
				Status: contracts.StatusFailed, Attempt: dl.Attempts, ExitCode: dl.ExitCode, Reason: dl.Reason, Message: dl.Message,
				TraceID: contracts.TraceID(j.Trace), Links: jobLinks(j.ID, j.StreamID)}}
		for _, ep := range s.subscribers(j.Project, contracts.WebhookJobDeadLettered) {
			if j.ProjectIncarnation != "" && ep.ProjectIncarnation != j.ProjectIncarnation {
				continue
			}
			if err := s.deliver(ctx, ep, "msg_d"+strconv.FormatUint(seq, 10), j.ID, deadSource|seq, p, j.Trace); err != nil {
				return err
			}
		}
		return nil
	})
}

// eventProject returns the project an event subject names.
func eventProject(subject string) (string, bool) {
	rest, ok := strings.CutPrefix(subject, contracts.SubjectEventsPrefix+".")
	if !ok {
		return "", false
	}
	p, _, ok := strings.Cut(rest, ".")
	return p, ok && p != ""
}

// watched reports whether some active endpoint of project asks for any
// event.
func (s *Service) watched(project string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ep := range s.endpoints {
		if ep.Project == project && ep.Active && len(ep.Events) > 0 {
			return true
		}
	}
	return false
}

// subscribers are project's active endpoints subscribed to t.
func (s *Service) subscribers(project string, t contracts.WebhookEventType) []contracts.WebhookRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []contracts.WebhookRecord
	for _, ep := range s.endpoints {
		if ep.Project == project && ep.Active && slices.Contains(ep.Events, t) {
			out = append(out, ep)
		}
	}
	return out
}

// deliver stores a pending delivery, unless stored already (an event
// taken up again after a crash before its ack).
func (s *Service) deliver(ctx context.Context, ep contracts.WebhookRecord, id, orderKey string, source uint64, p contracts.WebhookPayload, trace map[string]string) error {
	body, err := json.Marshal(p)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	d := contracts.WebhookDeliveryRecord{V: contracts.Version, OrderKey: orderKey, Source: source, QueuedAt: now, Body: string(body),
		TraceParent: trace, AttemptLog: []contracts.WebhookAttempt{},
		WebhookDelivery: contracts.WebhookDelivery{ID: id, Webhook: ep.ID, Project: ep.Project, Type: p.Type, JobID: p.Data.JobID,
			BatchID: p.Data.BatchID, Status: contracts.DeliveryPending, NextAttemptAt: &now, CreatedAt: now, UpdatedAt: now}}
	if p.Type == contracts.WebhookBatchCompleted {
		d.JobID = ""
	}
	_, err = s.store.Deliveries.Create(ctx, webhookstore.Ref(ep.ID, id), d)
	if errors.Is(err, state.ErrConflict) {
		return nil
	}
	if err == nil {
		s.in.queued(ctx, p.Type)
	}
	return err
}
