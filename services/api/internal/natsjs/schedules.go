package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/api/internal/schedules"
)

// Schedules keeps cron schedules in the queues bucket
// (contracts.BucketQueues) under contracts.ScheduleKey, each write a
// compare-and-set on the key's revision.
type Schedules struct{ js jetstream.JetStream }

// NewSchedules returns the schedules of the queues bucket js reaches.
func NewSchedules(js jetstream.JetStream) *Schedules { return &Schedules{js: js} }

func (s *Schedules) kv(ctx context.Context) (jetstream.KeyValue, error) {
	return queuesBucket(ctx, s.js)
}

// Create stores a new schedule.
func (s *Schedules) Create(ctx context.Context, sc contracts.Schedule) error {
	kv, err := s.kv(ctx)
	if err != nil {
		return err
	}
	body, err := json.Marshal(sc)
	if err != nil {
		return err
	}
	_, err = kv.Create(ctx, contracts.ScheduleKey(sc.Project, sc.ID), body)
	return err
}

// Get returns a schedule and its revision, or schedules.ErrNotFound.
func (s *Schedules) Get(ctx context.Context, project, id string) (contracts.Schedule, uint64, error) {
	kv, err := s.kv(ctx)
	if err != nil {
		return contracts.Schedule{}, 0, err
	}
	e, err := kv.Get(ctx, contracts.ScheduleKey(project, id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return contracts.Schedule{}, 0, schedules.ErrNotFound
	}
	if err != nil {
		return contracts.Schedule{}, 0, err
	}
	var sc contracts.Schedule
	if err := json.Unmarshal(e.Value(), &sc); err != nil {
		return sc, 0, fmt.Errorf("decode schedule %s: %w", id, err)
	}
	return sc, e.Revision(), nil
}

// List returns the schedules of project ("" for every project) and their
// revisions, read in one pass of a watch (no read per key).
func (s *Schedules) List(ctx context.Context, project string) ([]contracts.Schedule, []uint64, error) {
	kv, err := s.kv(ctx)
	if err != nil {
		return nil, nil, err
	}
	keys := contracts.ScheduleKeys
	if project != "" {
		keys = contracts.ScheduleKey(project, "*")
	}
	w, err := kv.Watch(ctx, keys, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, nil, fmt.Errorf("watch schedules: %w", err)
	}
	defer func() { _ = w.Stop() }()
	var out []contracts.Schedule
	var revs []uint64
	for {
		select {
		case e := <-w.Updates():
			if e == nil { // the current values have all been sent
				return out, revs, nil
			}
			var sc contracts.Schedule
			if err := json.Unmarshal(e.Value(), &sc); err != nil {
				continue // not a schedule this version reads
			}
			out, revs = append(out, sc), append(revs, e.Revision())
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
}

// Update replaces a schedule if it is still at revision rev, else
// returns schedules.ErrConflict.
func (s *Schedules) Update(ctx context.Context, sc contracts.Schedule, rev uint64) error {
	kv, err := s.kv(ctx)
	if err != nil {
		return err
	}
	body, err := json.Marshal(sc)
	if err != nil {
		return err
	}
	_, err = kv.Update(ctx, contracts.ScheduleKey(sc.Project, sc.ID), body, rev)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return schedules.ErrConflict
	}
	return err
}

// Delete removes a schedule.
func (s *Schedules) Delete(ctx context.Context, project, id string) error {
	kv, err := s.kv(ctx)
	if err != nil {
		return err
	}
	return kv.Delete(ctx, contracts.ScheduleKey(project, id))
}
