package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// DeadLetters reads the dead-letter stream (contracts.StreamDead).
type DeadLetters struct{ js jetstream.JetStream }

// NewDeadLetters returns a reader of the dead-letter stream.
func NewDeadLetters(js jetstream.JetStream) *DeadLetters { return &DeadLetters{js: js} }

// List returns up to limit dead letters of project ("" for all) after the
// cursor (a stream sequence), oldest first, and the next cursor (0 when
// none is left).
func (d *DeadLetters) List(ctx context.Context, project string, after uint64, limit int) ([]contracts.DeadLetter, uint64, error) {
	subject := contracts.SubjectDeadPrefix + ".>"
	if project != "" {
		subject = contracts.SubjectDead(project)
	}
	var out []contracts.DeadLetter
	next, err := d.scan(ctx, subject, after, func(dl contracts.DeadLetter) bool {
		out = append(out, dl)
		return len(out) < limit
	})
	return out, next, err
}

// Find returns the newest dead letter with id, or jobs-style not found as
// ok false.
func (d *DeadLetters) Find(ctx context.Context, id string) (contracts.DeadLetter, bool, error) {
	var found contracts.DeadLetter
	ok := false
	_, err := d.scan(ctx, contracts.SubjectDeadPrefix+".>", 0, func(dl contracts.DeadLetter) bool {
		if dl.ID == id {
			found, ok = dl, true
		}
		return true
	})
	return found, ok, err
}

// scan reads dead letters on subject after a sequence, calling fn until it
// returns false or the stream is read; it returns the sequence to resume
// after, or 0 at the end.
func (d *DeadLetters) scan(ctx context.Context, subject string, after uint64, fn func(contracts.DeadLetter) bool) (uint64, error) {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}, DeliverPolicy: jetstream.DeliverAllPolicy}
	if after > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, after+1
	}
	cons, err := d.js.OrderedConsumer(ctx, contracts.StreamDead, cfg)
	if err != nil {
		return 0, fmt.Errorf("read dead letters: %w", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("read dead letters: %w", err)
	}
	for pending := info.NumPending; pending > 0; {
		batch, err := cons.Fetch(int(min(pending, 256)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return 0, fmt.Errorf("read dead letters: %w", err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			pending = md.NumPending
			var dl contracts.DeadLetter
			if json.Unmarshal(m.Data(), &dl) != nil {
				continue
			}
			dl.Seq = md.Sequence.Stream
			if !fn(dl) {
				if pending == 0 {
					return 0, nil
				}
				return dl.Seq, nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return 0, fmt.Errorf("read dead letters: %w", err)
		}
		if got == 0 {
			break
		}
	}
	return 0, nil
}
