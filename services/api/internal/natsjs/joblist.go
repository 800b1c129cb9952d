package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/api/internal/jobs"
)

// JobIndex answers job listings from the job index (the index.> keys of
// the state bucket, see contracts.IndexKey), which every writer of a job
// state keeps (pkg/state). It holds the index in memory, sorted by job id
// per project, fed by a watch of those keys: a page is a walk back from
// the cursor, without a round trip to NATS. Entries older than the
// bucket's TTL are skipped as the bucket drops them (an expiry sends the
// watch nothing).
type JobIndex struct {
	kv jetstream.KeyValue

	mu       sync.RWMutex
	ttl      time.Duration
	projects map[string]projectJobs
	ready    chan struct{} // closed once the watch has replayed the index
}

// projectJobs is one project's part of the index, sorted by job id: a
// walk reads it in order, without a lookup per job.
type projectJobs []indexedJob

type indexedJob struct {
	sum     contracts.JobSummary
	written time.Time
}

// find returns where id is or would go in p, and whether it is there.
func (p projectJobs) find(id string) (int, bool) {
	return slices.BinarySearchFunc(p, id, func(j indexedJob, id string) int { return strings.Compare(j.sum.JobID, id) })
}

// NewJobIndex returns the index of the state bucket kv; Run fills it.
func NewJobIndex(kv jetstream.KeyValue) *JobIndex {
	return &JobIndex{kv: kv, projects: map[string]projectJobs{}, ready: make(chan struct{})}
}

// Run starts the watch that keeps the index until ctx ends, and returns
// once it runs; List waits for the replay of what is stored.
func (x *JobIndex) Run(ctx context.Context) error {
	status, err := x.kv.Status(ctx)
	if err != nil {
		return fmt.Errorf("job index: %w", err)
	}
	x.ttl = status.TTL()
	w, err := x.kv.Watch(ctx, contracts.IndexKeyPrefix+".>")
	if err != nil {
		return fmt.Errorf("job index: %w", err)
	}
	prune := time.NewTicker(max(x.ttl/10, time.Second))
	go func() {
		defer func() { _ = w.Stop() }()
		defer prune.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				x.apply(e)
			case now := <-prune.C:
				x.prune(now)
			}
		}
	}()
	return nil
}

// prune drops the entries the bucket has expired by now, which the
// listings skip already, so memory does not grow with every job ever run.
func (x *JobIndex) prune(now time.Time) {
	if x.ttl <= 0 {
		return
	}
	expired := now.Add(-x.ttl)
	x.mu.Lock()
	defer x.mu.Unlock()
	for project, p := range x.projects {
		p = slices.DeleteFunc(p, func(j indexedJob) bool { return j.written.Before(expired) })
		if len(p) == 0 {
			delete(x.projects, project)
			continue
		}
		x.projects[project] = p
	}
}

// apply takes one change of the index: nil marks the end of the replay.
func (x *JobIndex) apply(e jetstream.KeyValueEntry) {
	if e == nil {
		close(x.ready)
		return
	}
	project, id, ok := strings.Cut(strings.TrimPrefix(e.Key(), contracts.IndexKeyPrefix+"."), ".")
	if !ok {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	p := x.projects[project]
	i, had := p.find(id)
	if e.Operation() != jetstream.KeyValuePut {
		if had {
			x.projects[project] = slices.Delete(p, i, i+1)
		}
		return
	}
	var sum contracts.JobSummary
	if json.Unmarshal(e.Value(), &sum) != nil || sum.JobID != id {
		return
	}
	j := indexedJob{sum: sum, written: e.Created()}
	switch {
	case had:
		p[i] = j
	case i == len(p): // ids are ULIDs: a new job mostly goes at the end
		x.projects[project] = append(p, j)
	default:
		x.projects[project] = slices.Insert(p, i, j)
	}
}

// ErrIndexLoading is returned by List when ctx ends before the index has
// been read from the bucket (right after the API started).
var ErrIndexLoading = errors.New("job index: still loading")

// loaded waits until the watch has replayed the index.
func (x *JobIndex) loaded(ctx context.Context) error {
	select {
	case <-x.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrIndexLoading, ctx.Err())
	}
}

// List returns the jobs q selects, newest first, at most q.Limit, and the
// cursor of the next page ("" on the last).
func (x *JobIndex) List(ctx context.Context, q jobs.ListQuery) ([]contracts.JobSummary, string, error) {
	if err := x.loaded(ctx); err != nil {
		return nil, "", err
	}
	var out []contracts.JobSummary
	x.mu.RLock()
	for _, s := range q.Scopes {
		out = append(out, x.page(s, q)...)
	}
	x.mu.RUnlock()
	// Each project gave up to Limit+1 newest first; merge them.
	slices.SortFunc(out, func(a, b contracts.JobSummary) int { return strings.Compare(b.JobID, a.JobID) })
	if len(out) > q.Limit {
		return out[:q.Limit], out[q.Limit-1].JobID, nil
	}
	return out, "", nil
}

// page walks one project's jobs back from the cursor and returns up to
// Limit+1 that q selects (one more than a page tells whether another
// follows).
func (x *JobIndex) page(s jobs.ListScope, q jobs.ListQuery) []contracts.JobSummary {
	p := x.projects[s.Project]
	i := len(p)
	if q.Cursor != "" {
		i, _ = p.find(q.Cursor)
	}
	expired := time.Now().Add(-x.ttl)
	var out []contracts.JobSummary
	for i--; i >= 0 && len(out) <= q.Limit; i-- {
		j := &p[i]
		if !q.Since.IsZero() && j.sum.SubmittedAt.Before(q.Since.Add(-sinceSlack)) {
			break // ids sort by submission time: nothing older matches
		}
		if x.ttl > 0 && j.written.Before(expired) || !q.Selects(s, j.sum) {
			continue
		}
		out = append(out, j.sum)
	}
	return out
}

// sinceSlack is how far a job's submission time may precede the time in
// its id (the id is made just before the submission is stamped), so the
// walk stops only well past Since.
const sinceSlack = time.Minute

// Queues counts the index's jobs per priority level, highest first, as
// of now.
func (x *JobIndex) Queues(ctx context.Context, now time.Time) ([]contracts.QueueStats, error) {
	if err := x.loaded(ctx); err != nil {
		return nil, err
	}
	levels := contracts.Priorities()
	out := make([]contracts.QueueStats, len(levels))
	at := map[contracts.Priority]*contracts.QueueStats{}
	for i, p := range levels {
		out[i].Priority = p
		at[p] = &out[i]
	}
	expired, minute := now.Add(-x.ttl), now.Add(-time.Minute)
	x.mu.RLock()
	defer x.mu.RUnlock()
	for _, p := range x.projects {
		for i := range p {
			j := &p[i]
			q := at[j.sum.Priority]
			if q == nil || x.ttl > 0 && j.written.Before(expired) {
				continue
			}
			switch j.sum.Status {
			case contracts.StatusQueued:
				q.Waiting++
				q.OldestAgeSeconds = max(q.OldestAgeSeconds, now.Sub(j.sum.SubmittedAt).Seconds())
			case contracts.StatusRunning:
				q.Running++
			}
			if j.sum.StartedAt != nil && j.sum.StartedAt.After(minute) {
				q.DispatchedLastMinute++
			}
		}
	}
	return out, nil
}
