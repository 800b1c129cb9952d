package natskv

import (
	"context"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/access"
)

// Projects reads only the project records of the access bucket, for a
// process whose NATS user may read nothing else of it: the worker, which
// needs per-project limits but must never see key hashes or the
// stream-token secret (natsserver.RoleWorker's permissions).
type Projects struct{ s Store }

// OpenProjects returns the project reader on the provisioned bucket. It
// checks the layout but never writes: a bucket of a newer layout is
// refused (ErrNewerLayout); an older one is upgraded by the API's Open,
// and up to this Layout the project records read the same.
func OpenProjects(ctx context.Context, kv jetstream.KeyValue) (*Projects, error) {
	p := &Projects{Store{kv: kv}}
	v, _, err := p.s.layout(ctx)
	if err != nil {
		return nil, err
	}
	if v > Layout {
		return nil, fmt.Errorf("%w (bucket layout %d, this rdev %d)", ErrNewerLayout, v, Layout)
	}
	return p, nil
}

// Project returns a project or an error wrapping access.ErrNotFound.
func (p *Projects) Project(ctx context.Context, id string) (access.Project, error) {
	return p.s.Project(ctx, id)
}

// WatchProjects calls fn with the id of every project changed after it
// starts, until ctx ends. The watch filters on project records in the
// server, so it works for a user allowed to read only those. It returns
// once the watch is established.
func (p *Projects) WatchProjects(ctx context.Context, fn func(id string)) error {
	w, err := p.s.kv.Watch(ctx, prefixProject+">", jetstream.UpdatesOnly(), jetstream.MetaOnly())
	if err != nil {
		return fmt.Errorf("watch projects: %w", err)
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
				if e == nil {
					continue
				}
				if id, ok := strings.CutPrefix(e.Key(), prefixProject); ok {
					fn(id)
				}
			}
		}
	}()
	return nil
}
