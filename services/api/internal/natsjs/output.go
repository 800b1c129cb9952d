package natsjs

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// Output reads jobs' output lines from the output stream.
type Output struct{ js jetstream.JetStream }

// NewOutput returns the reader of the output stream.
func NewOutput(js jetstream.JetStream) *Output { return &Output{js: js} }

// Lines calls fn with each line of stream streamID in stored order, and
// with more set when another is stored already. It returns when the
// stream's terminal event is read; without follow, also once what is
// stored now is read; and with fn's first error or ctx's end.
func (o *Output) Lines(ctx context.Context, streamID string, follow bool, fn func(l contracts.OutputLine, more bool) error) error {
	cons, err := o.js.OrderedConsumer(ctx, contracts.StreamOutput, jetstream.OrderedConsumerConfig{
		FilterSubjects: contracts.StreamFilters(streamID),
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("read output: %w", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("read output: %w", err)
	}
	if !follow && info.NumPending == 0 {
		return nil
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("read output: %w", err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer func() {
		stop()
		it.Stop()
	}()
	events := contracts.SubjectEventsPrefix + "."
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("read output: %w", err)
		}
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("read output: %w", err)
		}
		more := md.NumPending > 0
		if strings.HasPrefix(m.Subject(), events) {
			var ev contracts.Event
			if json.Unmarshal(m.Data(), &ev) == nil && ev.Type.Terminal() {
				return nil
			}
		} else {
			var l contracts.OutputLine
			if json.Unmarshal(m.Data(), &l) == nil {
				if err := fn(l, more); err != nil {
					return err
				}
			}
		}
		if !follow && !more {
			return nil
		}
	}
}
