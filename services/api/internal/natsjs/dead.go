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
	"github.com/rdev-dev/rdev/pkg/state"
)

// DeadLetters reads and handles the dead-letter stream
// (contracts.StreamDead); retries are recorded in the state bucket.
type DeadLetters struct {
	js      jetstream.JetStream
	retries state.Records[contracts.DeadLetterRetry]
}

// NewDeadLetters returns the dead letters of js, with retries recorded
// in the state bucket.
func NewDeadLetters(js jetstream.JetStream, kv jetstream.KeyValue) *DeadLetters {
	return &DeadLetters{js: js, retries: state.New(kv).DeadRetries}
}

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
	if err != nil {
		return nil, 0, err
	}
	for i := range out {
		if out[i].Retried, err = d.retried(ctx, out[i].ID); err != nil {
			return nil, 0, err
		}
	}
	return out, next, nil
}

// retried returns the retry record of dead letter id, or nil.
func (d *DeadLetters) retried(ctx context.Context, id string) (*contracts.DeadLetterRetry, error) {
	r, _, err := d.retries.Get(ctx, id)
	if errors.Is(err, state.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// ClaimRetry records a retry of dead letter id by actor. Without force it
// succeeds only for a dead letter never retried (by create, so two
// concurrent retries cannot both win), and otherwise returns the earlier
// record and false.
func (d *DeadLetters) ClaimRetry(ctx context.Context, id, actor string, force bool) (*contracts.DeadLetterRetry, bool, error) {
	for range 8 {
		prev, rev, err := d.retries.Get(ctx, id)
		if err != nil && !errors.Is(err, state.ErrNotFound) {
			return nil, false, err
		}
		if rev != 0 && !force {
			return &prev, false, nil
		}
		next := contracts.DeadLetterRetry{V: contracts.Version, RetriedAt: time.Now().UTC(), Retries: prev.Retries + 1, Actor: actor}
		// rev 0 creates: two concurrent first retries cannot both win.
		if _, err = d.retries.Update(ctx, id, next, rev); err == nil {
			return &next, true, nil
		}
		if !errors.Is(err, state.ErrConflict) {
			return nil, false, fmt.Errorf("record dead letter retry: %w", err)
		}
	}
	return nil, false, fmt.Errorf("record dead letter retry %s: it kept changing", id)
}

// RetryQueued completes the retry record of id with the job it queued;
// ReleaseRetry removes a claim whose job could not be queued.
func (d *DeadLetters) RetryQueued(ctx context.Context, id string, r contracts.DeadLetterRetry) error {
	_, err := d.retries.Put(ctx, id, r)
	return err
}

// ReleaseRetry undoes a claim (see RetryQueued); first says whether it
// was the dead letter's first retry, in which case the record goes.
func (d *DeadLetters) ReleaseRetry(ctx context.Context, id string, r contracts.DeadLetterRetry) error {
	if r.Retries <= 1 {
		return d.retries.Delete(ctx, id)
	}
	return nil
}

// Delete removes every copy of dead letter id from the stream, and its
// retry record; false when there was none.
func (d *DeadLetters) Delete(ctx context.Context, id string) (bool, error) {
	var seqs []uint64
	if _, err := d.scan(ctx, contracts.SubjectDeadPrefix+".>", 0, func(dl contracts.DeadLetter) bool {
		if dl.ID == id {
			seqs = append(seqs, dl.Seq)
		}
		return true
	}); err != nil {
		return false, err
	}
	if len(seqs) == 0 {
		return false, nil
	}
	s, err := d.js.Stream(ctx, contracts.StreamDead)
	if err != nil {
		return false, fmt.Errorf("delete dead letter: %w", err)
	}
	for _, seq := range seqs {
		if err := s.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return false, fmt.Errorf("delete dead letter: %w", err)
		}
	}
	if err := d.retries.Delete(ctx, id); err != nil {
		return true, err
	}
	return true, nil
}

// Purge removes every dead letter of project and returns how many there
// were.
func (d *DeadLetters) Purge(ctx context.Context, project string) (int, error) {
	var ids []string
	if _, err := d.scan(ctx, contracts.SubjectDead(project), 0, func(dl contracts.DeadLetter) bool {
		ids = append(ids, dl.ID)
		return true
	}); err != nil {
		return 0, err
	}
	s, err := d.js.Stream(ctx, contracts.StreamDead)
	if err != nil {
		return 0, fmt.Errorf("purge dead letters: %w", err)
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(contracts.SubjectDead(project))); err != nil {
		return 0, fmt.Errorf("purge dead letters: %w", err)
	}
	for _, id := range ids {
		_ = d.retries.Delete(ctx, id) // an orphan record expires with state
	}
	return len(ids), nil
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
	if err == nil && ok {
		found.Retried, err = d.retried(ctx, id)
	}
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
