package natsjs

import (
	"time"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// Events publishes lifecycle events.
type Events struct{ js jetstream.JetStream }

// NewEvents returns an Events publishing with js.
func NewEvents(js jetstream.JetStream) *Events { return &Events{js: js} }

// Publish stores ev. Its message id makes a retried publish of the same
// event of the same attempt a no-op within the duplicate window.
func (e *Events) Publish(ctx context.Context, ev contracts.Event) error {
	msg, id, err := eventMsg(ev)
	if err != nil {
		return err
	}
	if _, err := e.js.PublishMsg(ctx, msg, jetstream.WithMsgID(id), jetstream.WithExpectStream(contracts.StreamOutput)); err != nil {
		return fmt.Errorf("publish %s event of %s: %w", ev.Type, ev.JobID, err)
	}
	return nil
}

// PublishAsync sends ev without waiting for JetStream; wait reports
// whether it was stored. Messages published after it on the same
// connection are stored after it.
func (e *Events) PublishAsync(ev contracts.Event) (wait func(context.Context) error, err error) {
	msg, id, err := eventMsg(ev)
	if err != nil {
		return nil, err
	}
	fut, err := e.js.PublishMsgAsync(msg, jetstream.WithMsgID(id), jetstream.WithExpectStream(contracts.StreamOutput))
	if err != nil {
		return nil, fmt.Errorf("publish %s event of %s: %w", ev.Type, ev.JobID, err)
	}
	return func(ctx context.Context) error {
		select {
		case <-fut.Ok():
			return nil
		case err := <-fut.Err():
			return fmt.Errorf("publish %s event of %s: %w", ev.Type, ev.JobID, err)
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}, nil
}

func eventMsg(ev contracts.Event) (*nats.Msg, string, error) {
	body, err := json.Marshal(ev)
	if err != nil {
		return nil, "", err
	}
	msg := nats.NewMsg(contracts.SubjectEvent(ev.Project, ev.StreamID, ev.Type))
	msg.Data = body
	return msg, ev.JobID + ":" + strconv.Itoa(ev.Attempt) + ":" + string(ev.Type), nil
}

// Stored reports whether an event of ev's type is stored for ev's stream.
func (e *Events) Stored(ctx context.Context, ev contracts.Event) (bool, error) {
	s, err := e.js.Stream(ctx, contracts.StreamOutput)
	if err != nil {
		return false, fmt.Errorf("output stream: %w", err)
	}
	_, err = s.GetLastMsgForSubject(ctx, contracts.SubjectEvent(ev.Project, ev.StreamID, ev.Type))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("look up %s event of %s: %w", ev.Type, ev.JobID, err)
	}
	return true, nil
}

// DeadLetters publishes jobs that are given up to the dead-letter stream.
type DeadLetters struct{ js jetstream.JetStream }

// NewDeadLetters returns DeadLetters publishing with js.
func NewDeadLetters(js jetstream.JetStream) *DeadLetters { return &DeadLetters{js: js} }

// Publish stores dl on SubjectDead(project), de-duplicated by its id.
func (d *DeadLetters) Publish(ctx context.Context, project string, dl contracts.DeadLetter) error {
	body, err := json.Marshal(dl)
	if err != nil {
		return err
	}
	if _, err := d.js.Publish(ctx, contracts.SubjectDead(project), body, jetstream.WithMsgID(dl.ID),
		jetstream.WithExpectStream(contracts.StreamDead)); err != nil {
		return fmt.Errorf("publish dead letter %s: %w", dl.ID, err)
	}
	return nil
}

// Holders asks the other workers over plain NATS whether one holds a job
// (contracts.SubjectHolds).
type Holders struct {
	nc      *nats.Conn
	asker   string
	timeout time.Duration
}

// NewHolders returns Holders asking as worker asker and waiting up to
// timeout for an answer.
func NewHolders(nc *nats.Conn, asker string, timeout time.Duration) *Holders {
	return &Holders{nc: nc, asker: asker, timeout: timeout}
}

// Held reports whether a worker answered that it holds jobID.
func (h *Holders) Held(ctx context.Context, jobID string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	_, err := h.nc.RequestWithContext(ctx, contracts.SubjectHolds(jobID), []byte(h.asker))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrNoResponders):
		return false, nil
	default:
		return false, err
	}
}
