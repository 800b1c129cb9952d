package natsjs

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/access/natskv"
)

// Limits reads each project's max_concurrent_jobs from the access bucket
// and caches it; a change to a project, made by any process, drops its
// entry (natskv.Store.Watch), so a new limit applies within moments.
type Limits struct {
	store *natskv.Store
	log   *slog.Logger

	mu    sync.Mutex
	gen   map[string]uint64 // bumped by every change, so a read racing it is not cached
	cache map[string]int
}

// NewLimits returns Limits on store, watching it until ctx ends.
func NewLimits(ctx context.Context, store *natskv.Store, log *slog.Logger) (*Limits, error) {
	l := &Limits{store: store, log: log, gen: map[string]uint64{}, cache: map[string]int{}}
	err := store.Watch(ctx, func(c natskv.Change) {
		if c.Project == "" {
			return
		}
		l.mu.Lock()
		delete(l.cache, c.Project)
		l.gen[c.Project]++
		l.mu.Unlock()
	})
	if err != nil {
		return nil, err
	}
	return l, nil
}

// MaxConcurrent returns the project's bound; 0 (no bound) for a project
// without one or that does not exist.
func (l *Limits) MaxConcurrent(ctx context.Context, project string) (int, error) {
	l.mu.Lock()
	n, ok := l.cache[project]
	gen := l.gen[project]
	l.mu.Unlock()
	if ok {
		return n, nil
	}
	p, err := l.store.Project(ctx, project)
	switch {
	case errors.Is(err, access.ErrNotFound):
		n = 0
	case err != nil:
		return 0, err
	default:
		n = p.MaxConcurrentJobs
	}
	l.mu.Lock()
	if l.gen[project] == gen {
		l.cache[project] = n
	}
	l.mu.Unlock()
	return n, nil
}
