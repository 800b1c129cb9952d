package api_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/rdev-dev/rdev/pkg/lifecycle"
	"github.com/rdev-dev/rdev/pkg/lifecycle/lifecycletest"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
	"github.com/rdev-dev/rdev/services/api"
)

// The API has no work of its own in flight: its requests are the HTTP
// server's, which drains them before the API shuts down.
func TestLifecycle(t *testing.T) {
	t.Parallel()
	lifecycletest.Run(t, lifecycletest.Harness{
		New: func(t *testing.T) lifecycle.Component {
			_, _, js := natstest.Provisioned(t)
			return newAPI(t, api.Config{BootstrapKey: adminKey}, js, slog.New(slog.DiscardHandler))
		},
	})
}

// The schedule sweep loop every API replica runs is a component of its
// own; a sweep in flight is its work, which Shutdown cancels (what it did
// not finish stays due), so the suite has no Busy for it.
func TestSchedulerLifecycle(t *testing.T) {
	t.Parallel()
	lifecycletest.Run(t, lifecycletest.Harness{
		New: func(t *testing.T) lifecycle.Component {
			_, _, js := natstest.Provisioned(t)
			return newAPI(t, api.Config{BootstrapKey: adminKey}, js, slog.New(slog.DiscardHandler)).Scheduler(0)
		},
	})
}

// Start generates an admin key on the first start and hands it to
// ShowKey once; a later start shows nothing.
func TestStartShowsAGeneratedKeyOnce(t *testing.T) {
	t.Parallel()
	_, _, js := natstest.Provisioned(t)
	for i, want := range []bool{true, false} {
		var shown []string
		a := newAPI(t, api.Config{}, js, slog.New(slog.DiscardHandler), func(k string) { shown = append(shown, k) })
		if err := a.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := len(shown) == 1 && strings.HasPrefix(shown[0], "rdev_bootstrap_"); got != want || len(shown) > 1 {
			t.Errorf("start %d showed %q", i+1, shown)
		}
		if err := a.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}
