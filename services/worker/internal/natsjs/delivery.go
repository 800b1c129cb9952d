package natsjs

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/worker/internal/runner"
)

// Deliveries adapts a handler of runner deliveries to the job messages
// the dispatcher pulls.
func Deliveries(handle func(context.Context, runner.Delivery)) func(context.Context, jetstream.Msg) {
	return func(ctx context.Context, msg jetstream.Msg) { handle(ctx, delivery{msg}) }
}

// delivery is a job message as a runner.Delivery.
type delivery struct{ msg jetstream.Msg }

func (d delivery) Data() []byte                           { return d.msg.Data() }
func (d delivery) Subject() string                        { return d.msg.Subject() }
func (d delivery) Nak() error                             { return d.msg.Nak() }
func (d delivery) NakWithDelay(delay time.Duration) error { return d.msg.NakWithDelay(delay) }
func (d delivery) Term() error                            { return d.msg.Term() }
func (d delivery) InProgress() error                      { return d.msg.InProgress() }

// Ack waits for the server's confirmation (a double ack), so a job is
// settled only once its message surely left the queue.
func (d delivery) Ack(ctx context.Context) error {
	if err := d.msg.DoubleAck(ctx); err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
		return err
	}
	return nil
}

func (d delivery) Info() (runner.DeliveryInfo, error) {
	md, err := d.msg.Metadata()
	if err != nil {
		return runner.DeliveryInfo{}, err
	}
	rev, _ := strconv.ParseUint(d.msg.Headers().Get(contracts.HeaderStateRevision), 10, 64)
	return runner.DeliveryInfo{Sequence: md.Sequence.Stream, NumDelivered: md.NumDelivered, StateRevision: rev}, nil
}
