package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// Slots keeps each project's running-job leases in the state bucket under
// contracts.SlotsKey(project): a JSON object mapping job id to lease
// expiry. Every change is a compare-and-set of the whole object, so
// workers agree on who holds a slot; an expired lease counts for nobody.
type Slots struct {
	kv  jetstream.KeyValue
	ttl time.Duration
	now func() time.Time
}

// NewSlots returns Slots whose leases last ttl unless renewed.
func NewSlots(kv jetstream.KeyValue, ttl time.Duration) *Slots {
	return &Slots{kv: kv, ttl: ttl, now: time.Now}
}

// leases is the stored document.
type leases map[string]time.Time

// Acquire leases a slot for jobID if fewer than limit live leases are held.
func (s *Slots) Acquire(ctx context.Context, project, jobID string, limit int) (bool, error) {
	got := false
	err := s.change(ctx, project, func(l leases) bool {
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
	return s.change(ctx, project, func(l leases) bool {
		l[jobID] = s.now().Add(s.ttl)
		return true
	})
}

// Release removes jobID's lease.
func (s *Slots) Release(ctx context.Context, project, jobID string) error {
	return s.change(ctx, project, func(l leases) bool {
		if _, ok := l[jobID]; !ok {
			return false
		}
		delete(l, jobID)
		return true
	})
}

// change applies fn to the live leases of project and stores the result
// by compare-and-set when fn reports a change, retrying on conflicts.
func (s *Slots) change(ctx context.Context, project string, fn func(leases) bool) error {
	key := contracts.SlotsKey(project)
	for range 50 {
		l := leases{}
		var rev uint64
		e, err := s.kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
		case err != nil:
			return fmt.Errorf("read %s: %w", key, err)
		default:
			rev = e.Revision()
			if err := json.Unmarshal(e.Value(), &l); err != nil {
				return fmt.Errorf("decode %s: %w", key, err)
			}
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
		body, err := json.Marshal(l)
		if err != nil {
			return err
		}
		if rev == 0 {
			_, err = s.kv.Create(ctx, key, body)
		} else {
			_, err = s.kv.Update(ctx, key, body, rev)
		}
		var apiErr *jetstream.APIError
		if errors.Is(err, jetstream.ErrKeyExists) || (errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence) {
			continue // another worker changed the leases: look again
		}
		if err != nil {
			return fmt.Errorf("store %s: %w", key, err)
		}
		return nil
	}
	return fmt.Errorf("store %s: too many concurrent changes", key)
}
