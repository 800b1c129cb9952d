package natsjs

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/rdev-dev/rdev/pkg/access"
)

// Projects is what Limits reads of the access bucket: project records
// only (natskv.Projects), because the worker's NATS user may read
// nothing else there.
type Projects interface {
	// Project returns a project or an error wrapping access.ErrNotFound.
	Project(ctx context.Context, id string) (access.Project, error)
	// WatchProjects calls fn with the id of every project changed after
	// it returns, until ctx ends.
	WatchProjects(ctx context.Context, fn func(id string)) error
}

// Limits reads each project's max_concurrent_jobs from the access bucket
// and caches it; a change to a project, made by any process, drops its
// entry (Projects.WatchProjects), so a new limit applies within moments.
type Limits struct {
	store Projects
	log   *slog.Logger

	mu    sync.Mutex
	gen   map[string]uint64 // bumped by every change, so a read racing it is not cached
	cache map[string]int
}

// NewLimits returns Limits on store, watching it until ctx ends.
func NewLimits(ctx context.Context, store Projects, log *slog.Logger) (*Limits, error) {
	l := &Limits{store: store, log: log, gen: map[string]uint64{}, cache: map[string]int{}}
	err := store.WatchProjects(ctx, func(project string) {
		l.mu.Lock()
		delete(l.cache, project)
		l.gen[project]++
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
