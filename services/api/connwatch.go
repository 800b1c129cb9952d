package api

import (
	"context"
	"sync"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"
)

// connWatch ends the requests in flight when the API's NATS connection
// drops. nats.go keeps a request waiting for its reply across a
// disconnect until its timeout (5 s); a submit caught by the drop should
// get its 503 at once, like the ones after it, which fail immediately
// because the connection has no reconnect buffer.
type connWatch struct {
	mu     sync.Mutex
	up     context.Context // cancelled when the connection drops
	cancel context.CancelFunc
}

func newConnWatch() *connWatch {
	w := &connWatch{}
	w.up, w.cancel = context.WithCancel(context.Background())
	return w
}

// run follows nc's status until ctx ends.
func (w *connWatch) run(ctx context.Context, nc *nats.Conn) {
	ch := nc.StatusChanged(nats.DISCONNECTED, nats.RECONNECTING, nats.CONNECTED, nats.CLOSED)
	go func() {
		defer nc.RemoveStatusListener(ch)
		for {
			select {
			case <-ctx.Done():
				return
			case s := <-ch:
				w.mu.Lock()
				switch {
				case s == nats.CONNECTED && w.up.Err() != nil:
					w.up, w.cancel = context.WithCancel(context.Background())
				case s != nats.CONNECTED:
					w.cancel()
				}
				w.mu.Unlock()
			}
		}
	}()
}

// middleware gives each request a context that ends when the connection
// drops (or has dropped).
func (w *connWatch) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		w.mu.Lock()
		up := w.up
		w.mu.Unlock()
		ctx, cancel := context.WithCancel(c.Request().Context())
		defer cancel()
		stop := context.AfterFunc(up, cancel)
		defer stop()
		c.SetRequest(c.Request().WithContext(ctx))
		return next(c)
	}
}
