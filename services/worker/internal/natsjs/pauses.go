package natsjs

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// WatchPauses calls fn with the pause of each priority level stored in
// the queues bucket (contracts.BucketQueues), then with every change
// until ctx ends. It returns once the stored pauses are applied, so a
// worker that starts dispatching after it honours a pause set before it
// (re)started.
func WatchPauses(ctx context.Context, js jetstream.JetStream, fn func(p contracts.Priority, paused bool)) error {
	kv, err := js.KeyValue(ctx, contracts.BucketQueues)
	if err != nil {
		return fmt.Errorf("queues bucket: %w", err)
	}
	w, err := kv.Watch(ctx, contracts.PauseKey("*"))
	if err != nil {
		return fmt.Errorf("watch queue pauses: %w", err)
	}
	apply := func(e jetstream.KeyValueEntry) {
		lvl := contracts.Priority(strings.TrimPrefix(e.Key(), contracts.PauseKey("")))
		var p contracts.QueuePause
		if e.Operation() == jetstream.KeyValuePut && json.Unmarshal(e.Value(), &p) == nil {
			fn(lvl, p.Paused)
			return
		}
		fn(lvl, false)
	}
	// The stored pauses first, then a nil entry.
	for e := range w.Updates() {
		if e == nil {
			break
		}
		apply(e)
	}
	go func() {
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e != nil {
					apply(e)
				}
			}
		}
	}()
	return nil
}
