package httpserver_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/rdev-dev/rdev/cmd/rdev/internal/httpserver"
	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/lifecycle"
	"github.com/rdev-dev/rdev/pkg/lifecycle/lifecycletest"
)

// The server's work in flight is a request: Shutdown waits for it.
func TestLifecycle(t *testing.T) {
	t.Parallel()
	var holds sync.Map // *httpserver.Server → chan struct{} (closed: requests finish)
	lifecycletest.Run(t, lifecycletest.Harness{
		New: func(t *testing.T) lifecycle.Component {
			s, err := httpserver.New(t.Context(), "127.0.0.1:0", nil, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			release := make(chan struct{})
			s.Echo.GET("/hold", func(c echo.Context) error {
				<-release
				return c.NoContent(http.StatusNoContent)
			})
			holds.Store(s, release)
			return s
		},
		Busy: func(t *testing.T, c lifecycle.Component) (func(), <-chan error) {
			s := c.(*httpserver.Server)
			v, _ := holds.Load(s)
			release := v.(chan struct{})
			done := make(chan error, 1)
			go func() {
				req, _ := http.NewRequestWithContext(context.WithoutCancel(t.Context()), http.MethodGet, "http://"+s.Addr()+"/hold", nil)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					done <- err
					return
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusNoContent {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
				done <- err
			}()
			await.Within(t, lifecycletest.Bound, "the request to arrive", func() bool { return s.Waiting() != "" })
			var once sync.Once
			return func() { once.Do(func() { close(release) }) }, done
		},
		Waits: true,
	})
}
