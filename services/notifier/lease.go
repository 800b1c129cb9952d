package notifier

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// lease is a replica's claim on an endpoint, stored under
// contracts.WebhookLeaseKey and renewed every third of LeaseTTL; only
// its owner sends the endpoint's deliveries, until Until.
type lease struct {
	Owner string    `json:"owner"`
	Until time.Time `json:"until"`
}

type leaseEntry struct {
	lease
	rev    uint64
	exists bool
}

// leaseLoop renews this replica's leases and takes free ones until
// Shutdown.
func (s *Service) leaseLoop() {
	defer s.bg.Done()
	every := s.cfg.LeaseTTL / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		s.leaseTick(s.life)
		select {
		case <-s.life.Done():
			return
		case <-t.C:
		}
	}
}

// leaseTick renews held leases, gives up those of endpoints gone or
// inactive, and takes free ones while this replica holds no more than
// any other live one (so replicas started together share the endpoints).
func (s *Service) leaseTick(ctx context.Context) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	var active []string
	for id, ep := range s.endpoints {
		if ep.Active {
			active = append(active, id)
		}
	}
	var drop []string
	for id := range s.owned {
		if ep, ok := s.endpoints[id]; !ok || !ep.Active {
			drop = append(drop, id)
		}
	}
	s.mu.Unlock()
	for _, id := range drop {
		s.lose(id)
		s.release(ctx, id)
	}
	now := time.Now()
	leases := make(map[string]leaseEntry, len(active))
	counts := map[string]int{}
	for _, id := range active {
		l, err := s.readLease(ctx, id)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("read webhook lease", "webhook", id, "err", err)
			}
			return
		}
		leases[id] = l
		if l.exists && l.Until.After(now) {
			counts[l.Owner]++
		}
	}
	rand.Shuffle(len(active), func(i, j int) { active[i], active[j] = active[j], active[i] })
	for _, id := range active {
		l := leases[id]
		mine := l.exists && l.Owner == s.cfg.ID
		if !mine && l.exists && l.Until.After(now) {
			continue // another replica's
		}
		if !mine && !s.fairShare(counts) {
			continue
		}
		if !s.writeLease(ctx, id, l) {
			if mine {
				s.lose(id)
			}
			continue
		}
		if !mine {
			counts[s.cfg.ID]++
		}
		s.own(id) //nolint:contextcheck // the runner lives until the lease is lost or Shutdown, not for one tick
	}
}

// fairShare reports whether this replica may take one more endpoint: it
// holds no more than every other live replica.
func (s *Service) fairShare(counts map[string]int) bool {
	for owner, n := range counts {
		if owner != s.cfg.ID && counts[s.cfg.ID] > n {
			return false
		}
	}
	return true
}

func (s *Service) readLease(ctx context.Context, id string) (leaseEntry, error) {
	e, err := s.leases.Get(ctx, contracts.WebhookLeaseKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return leaseEntry{}, nil
	}
	if err != nil {
		return leaseEntry{}, err
	}
	// An unreadable lease reads as expired (zero Until): it is taken over.
	var l lease
	_ = json.Unmarshal(e.Value(), &l)
	return leaseEntry{lease: l, rev: e.Revision(), exists: true}, nil
}

// writeLease claims or renews the lease by compare-and-set on the
// revision read: of two replicas, one wins.
func (s *Service) writeLease(ctx context.Context, id string, old leaseEntry) bool {
	until := time.Now().Add(s.cfg.LeaseTTL)
	b, _ := json.Marshal(lease{Owner: s.cfg.ID, Until: until})
	var err error
	if old.exists {
		_, err = s.leases.Update(ctx, contracts.WebhookLeaseKey(id), b, old.rev)
	} else {
		_, err = s.leases.Create(ctx, contracts.WebhookLeaseKey(id), b)
	}
	if err != nil {
		return false
	}
	s.mu.Lock()
	s.leaseTill[id] = until
	s.mu.Unlock()
	return true
}

// holds reports whether this replica's lease on endpoint id is current
// with a third of LeaseTTL to spare: a replica whose renewals fall behind
// stops starting attempts well before another may take the endpoint.
func (s *Service) holds(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return time.Until(s.leaseTill[id]) > s.cfg.LeaseTTL/3
}

// own starts the runner of an endpoint just claimed.
func (s *Service) own(id string) {
	s.mu.Lock()
	if s.closed || s.owned[id] != nil {
		s.mu.Unlock()
		return
	}
	r := s.newRunner(id)
	s.owned[id] = r
	s.mu.Unlock()
	s.log.Debug("webhook endpoint claimed", "webhook", id)
	err := r.load()
	go r.run()
	if err != nil && r.ctx.Err() == nil {
		s.log.Warn("load pending webhook deliveries", "webhook", id, "err", err)
		s.lose(id)
	}
}

// lose stops the runner of an endpoint this replica no longer holds.
func (s *Service) lose(id string) {
	s.mu.Lock()
	r := s.owned[id]
	delete(s.owned, id)
	delete(s.leaseTill, id)
	s.mu.Unlock()
	if r != nil {
		r.halt()
		<-r.done
	}
}

// release deletes this replica's lease, so another takes the endpoint at
// once.
func (s *Service) release(ctx context.Context, id string) {
	l, err := s.readLease(ctx, id)
	if err != nil || !l.exists || l.Owner != s.cfg.ID {
		return
	}
	_ = s.leases.Delete(ctx, contracts.WebhookLeaseKey(id), jetstream.LastRevision(l.rev))
}
