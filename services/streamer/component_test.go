package streamer_test

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/lifecycle"
	"github.com/rdev-dev/rdev/pkg/lifecycle/lifecycletest"
	"github.com/rdev-dev/rdev/services/streamer"
)

// The streamer's work in flight is an open stream: Shutdown ends it with
// error shutting_down, after which the client resumes elsewhere.
func TestLifecycle(t *testing.T) {
	t.Parallel()
	var fixtures sync.Map // *streamer.Service → *fixture
	lifecycletest.Run(t, lifecycletest.Harness{
		New: func(t *testing.T) lifecycle.Component {
			f := setup(t, options{unstarted: true})
			fixtures.Store(f.svc, f)
			return f.svc
		},
		Busy: func(t *testing.T, c lifecycle.Component) (func(), <-chan error) {
			f, _ := fixtures.Load(c.(*streamer.Service))
			j := f.(*fixture).newJob(t)
			client := f.(*fixture).connect(t, j.streamID, dialOpts{})
			client.handshake(t)
			done := make(chan error, 1)
			go func() {
				var last sseEvent
				for ev := range client.events {
					if ev.Comment == "" {
						last = ev
					}
				}
				var d contracts.ErrorDetail
				if json.Unmarshal([]byte(last.Data), &d) != nil || last.Name != contracts.SSEError || d.Code != "shutting_down" {
					done <- fmt.Errorf("stream ended with %+v, want error shutting_down", last)
					return
				}
				done <- nil
			}()
			return func() {}, done
		},
	})
}
