package worker

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
)

// health is what the worker's readiness depends on besides NATS.
type health struct {
	draining, breakerOpen *atomic.Bool
}

// watchBreaker notes the Kubernetes breaker's state and passes changes on
// to next, if set.
func (h *health) watchBreaker(next func(from, to string)) func(from, to string) {
	h.draining, h.breakerOpen = new(atomic.Bool), new(atomic.Bool)
	open := h.breakerOpen
	return func(from, to string) {
		open.Store(to == "open")
		if next != nil {
			next(from, to)
		}
	}
}

// Ready reports whether the worker takes jobs and can run them: it has
// started, is not draining and its executor is usable (the local workspaces
// directory exists; the Kubernetes API's breaker is not open).
func (w *Worker) Ready(context.Context) error {
	w.mu.Lock()
	started := w.done != nil
	w.mu.Unlock()
	switch {
	case !started:
		return errors.New("not started")
	case w.health.draining.Load():
		return errors.New("draining")
	case w.health.breakerOpen.Load():
		return errors.New("kubernetes API unavailable (breaker open)")
	}
	if w.cfg.Executor == ExecutorKubernetes {
		return nil
	}
	// The workspaces directory is made with the first project's: it, or
	// the directory it will be made in, must be there.
	for dir := filepath.Clean(w.cfg.Workspaces); ; dir = filepath.Dir(dir) {
		fi, err := os.Stat(dir)
		switch {
		case err == nil && fi.IsDir():
			return nil
		case err == nil:
			return fmt.Errorf("workspaces: %s is not a directory", dir)
		case !errors.Is(err, fs.ErrNotExist) || dir == filepath.Dir(dir):
			return fmt.Errorf("workspaces: %w", err)
		}
	}
}
