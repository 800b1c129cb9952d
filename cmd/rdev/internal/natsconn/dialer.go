package natsconn

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/rdev-dev/rdev/pkg/topology/natsserver"
)

// Dialer makes a process's NATS connections with rdev's reconnect
// policy: each reconnects forever, every 250ms, logs losing the server,
// and counts its reconnections; Close drains them all.
type Dialer struct {
	// URL is the server or cluster, comma separated.
	URL string
	// SignIn returns the options that authenticate a connection of role.
	SignIn func(role natsserver.Role) ([]nats.Option, error)
	// Extra options for every connection (nats.InProcessServer).
	Extra []nats.Option
	// Reconnects counts reconnections by connection name.
	Reconnects metric.Int64Counter
	Log        *slog.Logger

	mu     sync.Mutex
	drains []func()
}

// Dial connects the connection called name ("rdev-"+name to the server)
// as role; opts come last and win.
func (d *Dialer) Dial(ctx context.Context, name string, role natsserver.Role, opts ...nats.Option) (*nats.Conn, error) {
	auth, err := d.SignIn(role)
	if err != nil {
		return nil, fmt.Errorf("NATS credentials of %s: %w", name, err)
	}
	conn := metric.WithAttributes(attribute.String("connection", name))
	closed := make(chan struct{})
	all := make([]nats.Option, 0, len(auth)+len(opts)+len(d.Extra)+6)
	all = append(all, auth...)
	all = append(all, nats.Name("rdev-"+name), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: our own close at shutdown
				d.Log.Warn("NATS disconnected", "conn", name, "err", err)
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) {
			d.Reconnects.Add(ctx, 1, conn)
			d.Log.Info("NATS reconnected", "conn", name)
		}),
	)
	all = append(append(all, opts...), d.Extra...)
	d.Reconnects.Add(ctx, 0, conn)
	nc, err := nats.Connect(d.URL, all...)
	if err != nil {
		return nil, fmt.Errorf("connect %s to NATS at %s: %w", name, d.URL, err)
	}
	d.mu.Lock()
	d.drains = append(d.drains, func() {
		// Drain flushes pending publishes; bound it in case NATS is gone.
		if nc.Drain() == nil {
			select {
			case <-closed:
			case <-time.After(5 * time.Second):
			}
		}
		nc.Close()
	})
	d.mu.Unlock()
	return nc, nil
}

// Close drains every connection, the last made first.
func (d *Dialer) Close() {
	d.mu.Lock()
	drains := d.drains
	d.drains = nil
	d.mu.Unlock()
	for i := len(drains) - 1; i >= 0; i-- {
		drains[i]()
	}
}
