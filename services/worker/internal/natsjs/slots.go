package natsjs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rdev-dev/rdev/pkg/state"
)

// Slots keeps each project's running-job leases in the state bucket under
// contracts.SlotsKey(project): a JSON object mapping job id to lease
// expiry. Every change is a compare-and-set of the whole object, so
// workers agree on who holds a slot; an expired lease counts for nobody.
type Slots struct {
	leases state.Records[state.Leases]
	ttl    time.Duration
	now    func() time.Time
}

// NewSlots returns Slots on the state store's leases, lasting ttl unless
// renewed.
func NewSlots(leases state.Records[state.Leases], ttl time.Duration) *Slots {
	return &Slots{leases: leases, ttl: ttl, now: time.Now}
}

// Acquire leases a slot for jobID if fewer than limit live leases are held.
func (s *Slots) Acquire(ctx context.Context, project, jobID string, limit int) (bool, error) {
	got := false
	err := s.change(ctx, project, func(l state.Leases) bool {
		if _, mine := l[jobID]; !mine && len(l) >= limit {
			got = false
			return false
		}
		l[jobID] = s.now().Add(s.ttl)
		got = true
		return true
	})
	return got, err
}

// Renew extends jobID's lease, or takes it again if it expired.
func (s *Slots) Renew(ctx context.Context, project, jobID string) error {
	return s.change(ctx, project, func(l state.Leases) bool {
		l[jobID] = s.now().Add(s.ttl)
		return true
	})
}

// Release removes jobID's lease.
func (s *Slots) Release(ctx context.Context, project, jobID string) error {
	return s.change(ctx, project, func(l state.Leases) bool {
		if _, ok := l[jobID]; !ok {
			return false
		}
		delete(l, jobID)
		return true
	})
}

// change applies fn to the live leases of project and stores the result
// by compare-and-set when fn reports a change, retrying on conflicts.
func (s *Slots) change(ctx context.Context, project string, fn func(state.Leases) bool) error {
	for range 50 {
		l, rev, err := s.leases.Get(ctx, project)
		switch {
		case errors.Is(err, state.ErrNotFound):
		case err != nil:
			return err
		}
		if l == nil {
			l = state.Leases{}
		}
		now := s.now()
		expired := false
		for id, until := range l {
			if !until.After(now) {
				delete(l, id)
				expired = true
			}
		}
		if !fn(l) && !expired {
			return nil
		}
		_, err = s.leases.Update(ctx, project, l, rev)
		if errors.Is(err, state.ErrConflict) {
			continue // another worker changed the leases: look again
		}
		return err
	}
	return fmt.Errorf("store slots of %s: too many concurrent changes", project)
}
