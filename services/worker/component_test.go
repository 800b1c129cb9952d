package worker_test

import (
	"context"
	"fmt"
	"io"
	"sync"
	"testing"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/lifecycle"
	"github.com/rdev-dev/rdev/pkg/lifecycle/lifecycletest"
	"github.com/rdev-dev/rdev/services/worker"
)

// held is a worker whose jobs run until released.
type held struct {
	b       bundle
	started chan struct{}
	release chan struct{}
	once    sync.Once
}

// The worker's work in flight is a running job: Shutdown waits for it
// (within the drain timeout), and it finishes as succeeded.
func TestLifecycle(t *testing.T) {
	t.Parallel()
	var workers sync.Map // *worker.Worker → *held
	lifecycletest.Run(t, lifecycletest.Harness{
		New: func(t *testing.T) lifecycle.Component {
			h := &held{b: setup(t), started: make(chan struct{}, 1), release: make(chan struct{})}
			exec := &scripted{step: func(ctx context.Context, _ int, _ io.Writer) (int, error) {
				h.started <- struct{}{}
				select {
				case <-h.release:
					return 0, nil
				case <-ctx.Done():
					return -1, ctx.Err()
				}
			}}
			w := h.b.build(worker.WithExecutor(worker.Config{DrainTimeout: lifecycletest.Bound}, exec))
			workers.Store(w, h)
			return w
		},
		Busy: func(t *testing.T, c lifecycle.Component) (func(), <-chan error) {
			v, _ := workers.Load(c.(*worker.Worker))
			h := v.(*held)
			job := h.b.enqueue(t, "held1", "held")
			select {
			case <-h.started:
			case <-t.Context().Done():
			}
			done := make(chan error, 1)
			go func() {
				for len(h.b.events.find(job.ID, contracts.EventSucceeded)) == 0 {
					select {
					case <-h.b.events.changed:
					case <-t.Context().Done():
						done <- fmt.Errorf("job %s did not succeed: %v", job.ID, h.b.types(job.ID))
						return
					}
				}
				done <- nil
			}()
			return func() { h.once.Do(func() { close(h.release) }) }, done
		},
		Waits: true,
	})
}
