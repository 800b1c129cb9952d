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

// Limits reads what the worker applies of each project from the access
// bucket, its max_concurrent_jobs and its pod settings, and caches it; a
// change to a project, made by any process, drops its entry
// (Projects.WatchProjects), so new values apply within moments.
type Limits struct {
	store Projects
	log   *slog.Logger

	mu    sync.Mutex
	gen   map[string]uint64 // bumped by every change, so a read racing it is not cached
	cache map[string]projectView
}

// projectView is the part of a project record the worker uses.
type projectView struct {
	maxJobs int
	pod     access.PodSettings
}

// NewLimits returns Limits on store, watching it until ctx ends.
func NewLimits(ctx context.Context, store Projects, log *slog.Logger) (*Limits, error) {
	l := &Limits{store: store, log: log, gen: map[string]uint64{}, cache: map[string]projectView{}}
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
	v, err := l.project(ctx, project)
	return v.maxJobs, err
}

// PodSettings returns the project's pod settings; the zero value for a
// project without them or that does not exist.
func (l *Limits) PodSettings(ctx context.Context, project string) (access.PodSettings, error) {
	v, err := l.project(ctx, project)
	return v.pod, err
}

// project returns the cached view of project, reading it on a miss.
func (l *Limits) project(ctx context.Context, project string) (projectView, error) {
	l.mu.Lock()
	v, ok := l.cache[project]
	gen := l.gen[project]
	l.mu.Unlock()
	if ok {
		return v, nil
	}
	p, err := l.store.Project(ctx, project)
	switch {
	case errors.Is(err, access.ErrNotFound):
		v = projectView{}
	case err != nil:
		return projectView{}, err
	default:
		v = projectView{maxJobs: p.MaxConcurrentJobs}
		if p.Pod != nil {
			v.pod = *p.Pod
		}
	}
	l.mu.Lock()
	if l.gen[project] == gen {
		l.cache[project] = v
	}
	l.mu.Unlock()
	return v, nil
}
