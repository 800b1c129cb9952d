package natsjs

import (
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// ProjectEvent is a lifecycle event with its stream sequence, or, with Seq
// 0, no event: a Flush or an idle tick.
type ProjectEvent struct {
	Seq uint64
	// JobID, Type and Status are the fields of the event its readers
	// look at; Data is the whole event as stored.
	JobID  string
	Type   contracts.EventType
	Status contracts.Status
	Data   []byte
	// More is true when another event is waiting or a Flush will follow:
	// a writer holds its flush until an event with More false or a Flush.
	More bool
	// Flush (with Seq 0) says the linger of a busy feed has passed:
	// write out what More held back.
	Flush bool
}

// eventHead is what ProjectEvent takes from an event: decoding only these
// skips the time and the strings nobody reads.
type eventHead struct {
	JobID  string              `json:"job_id"`
	Type   contracts.EventType `json:"type"`
	Status contracts.Status    `json:"status"`
}

// ProjectEvents yields the lifecycle events of a project stored since a
// time, then live ones, until ctx ends or the caller stops. An idle feed
// yields a zero ProjectEvent every idle interval so the caller can ping
// its client. A busy feed's flushes are gathered (Config.EventLinger).
func (s *Store) ProjectEvents(ctx context.Context, project string, since time.Time, idle time.Duration) iter.Seq2[ProjectEvent, error] {
	return s.events(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{contracts.SubjectEventsPrefix + "." + project + ".>"},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &since,
	}, idle)
}

// ProjectEventsAfter is ProjectEvents from the first event stored after
// stream sequence after, of one stream of the project when streamID is
// set: a resumable feed, since stream sequences say exactly what a client
// has seen.
func (s *Store) ProjectEventsAfter(ctx context.Context, project, streamID string, after uint64, idle time.Duration) iter.Seq2[ProjectEvent, error] {
	filter := contracts.SubjectEventsPrefix + "." + project + ".>"
	if streamID != "" {
		filter = contracts.SubjectEventsPrefix + "." + project + "." + streamID + ".*"
	}
	return s.events(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    after + 1,
	}, idle)
}

// events yields the lifecycle events an ordered consumer of cfg delivers.
func (s *Store) events(ctx context.Context, cfg jetstream.OrderedConsumerConfig, idle time.Duration) iter.Seq2[ProjectEvent, error] {
	return func(yield func(ProjectEvent, error) bool) {
		cons, err := s.js.OrderedConsumer(ctx, contracts.StreamOutput, cfg)
		if err != nil {
			yield(ProjectEvent{}, fmt.Errorf("open project events: %w", err))
			return
		}
		msgs, err := cons.Messages(jetstream.PullMaxMessages(256))
		if err != nil {
			yield(ProjectEvent{}, fmt.Errorf("open project events: %w", err))
			return
		}
		defer msgs.Stop()
		stop := context.AfterFunc(ctx, msgs.Stop)
		defer stop()
		type next struct {
			m   jetstream.Msg
			err error
		}
		ch := make(chan next, 256)
		go func() {
			defer close(ch)
			for {
				m, err := msgs.Next()
				select {
				case ch <- next{m, err}:
				case <-ctx.Done():
					return
				}
				if err != nil {
					return
				}
			}
		}()
		tick := time.NewTicker(idle)
		defer tick.Stop()
		linger := s.cfg.EventLinger
		var flushed time.Time // when the caller was last told to flush
		var due *time.Timer   // a Flush owed, when not nil
		defer func() {
			if due != nil {
				due.Stop()
			}
		}()
		for {
			var dueC <-chan time.Time
			if due != nil {
				dueC = due.C
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if !yield(ProjectEvent{}, nil) {
					return
				}
			case <-dueC:
				due, flushed = nil, time.Now()
				if !yield(ProjectEvent{Flush: true}, nil) {
					return
				}
			case n, ok := <-ch:
				if !ok {
					return
				}
				if n.err != nil {
					if ctx.Err() == nil {
						yield(ProjectEvent{}, fmt.Errorf("read project events: %w", n.err))
					}
					return
				}
				md, err := n.m.Metadata()
				if err != nil {
					continue
				}
				var ev eventHead
				if json.Unmarshal(n.m.Data(), &ev) != nil {
					continue
				}
				tick.Reset(idle)
				more := len(ch) > 0 || due != nil
				if !more && linger > 0 {
					if wait := linger - time.Since(flushed); wait > 0 {
						more, due = true, time.NewTimer(wait)
					}
				}
				if !more {
					flushed = time.Now()
				}
				pe := ProjectEvent{Seq: md.Sequence.Stream, JobID: ev.JobID, Type: ev.Type, Status: ev.Status, Data: n.m.Data(), More: more}
				if !yield(pe, nil) {
					return
				}
			}
		}
	}
}
