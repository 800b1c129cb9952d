package runner

import (
	"context"
	"errors"
	"sync"
)

// errCancelled is the cancel cause of a job someone asked to cancel.
var errCancelled = errors.New("job cancelled")

// cancels maps the jobs this worker holds to the functions that stop them.
// A job is registered before it is claimed, so a cancel request published
// once the job is marked running always finds it.
type cancels struct {
	mu   sync.Mutex
	next uint64
	jobs map[string]map[uint64]context.CancelCauseFunc
}

// add registers stop for jobID and returns its removal.
func (c *cancels) add(jobID string, stop context.CancelCauseFunc) (remove func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.jobs == nil {
		c.jobs = map[string]map[uint64]context.CancelCauseFunc{}
	}
	c.next++
	id := c.next
	if c.jobs[jobID] == nil {
		c.jobs[jobID] = map[uint64]context.CancelCauseFunc{}
	}
	c.jobs[jobID][id] = stop
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.jobs[jobID], id)
		if len(c.jobs[jobID]) == 0 {
			delete(c.jobs, jobID)
		}
	}
}

// cancel stops every registered copy of jobID and reports whether there
// was one.
func (c *cancels) cancel(jobID string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, stop := range c.jobs[jobID] {
		stop(errCancelled)
	}
	return len(c.jobs[jobID]) > 0
}

// count returns how many deliveries of jobID are registered.
func (c *cancels) count(jobID string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.jobs[jobID])
}
