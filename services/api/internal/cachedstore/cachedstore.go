// Package cachedstore puts a read-through cache in front of the access
// store, so authenticating a request does not cost a key-value read. Every
// write through it drops the entries it changed at once, and Watch drops
// those other processes changed, so a revoked key stops working on every
// API replica within the watch's delivery time (milliseconds), not at
// cache expiry.
package cachedstore

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/services/api/internal/admin"
	"github.com/rdev-dev/rdev/services/api/internal/cache"
)

// Store is admin.Store with a cache in front of Key and Project.
type Store struct {
	admin.Store
	cache cache.Cache
	ttl   time.Duration
	log   *slog.Logger

	mu      sync.Mutex
	touched map[string]time.Time // key id -> last LastUsedAt write
	now     func() time.Time
}

// New returns the cached store. ttl bounds an entry's life in case an
// invalidation is missed (the cache.Guard makes that unlikely).
func New(s admin.Store, c cache.Cache, ttl time.Duration, log *slog.Logger) *Store {
	return &Store{Store: s, cache: c, ttl: ttl, log: log, touched: map[string]time.Time{}, now: time.Now}
}

func keyEntry(id string) string     { return "key:" + id }
func projectEntry(id string) string { return "project:" + id }

// Key returns a key, from the cache when it holds it.
func (s *Store) Key(ctx context.Context, id string) (access.Key, error) {
	return through(ctx, s, keyEntry(id), func() (access.Key, error) { return s.Store.Key(ctx, id) })
}

// Project returns a project, from the cache when it holds it.
func (s *Store) Project(ctx context.Context, id string) (access.Project, error) {
	return through(ctx, s, projectEntry(id), func() (access.Project, error) { return s.Store.Project(ctx, id) })
}

// through reads entry from the cache or, on a miss or a cache failure,
// from load, and fills the cache. Misses of the store are not cached: an
// unknown key id costs a store read each time.
func through[T any](ctx context.Context, s *Store, entry string, load func() (T, error)) (T, error) {
	if b, ok, err := s.cache.Get(ctx, entry); err == nil && ok {
		var v T
		if json.Unmarshal(b, &v) == nil {
			return v, nil
		}
	}
	v, err := load()
	if err != nil {
		return v, err
	}
	if b, err := json.Marshal(v); err == nil {
		_ = s.cache.Set(ctx, entry, b, s.ttl)
	}
	return v, nil
}

// redropAfter is when Forget drops the entries a second time: a reader
// that loaded the old record just before the change may put it back into
// the cache just after the first drop. A store read takes milliseconds,
// so by then any such reader has finished.
const redropAfter = 250 * time.Millisecond

// Forget drops the entries a change touched, now and once more shortly
// after (see redropAfter).
func (s *Store) Forget(ctx context.Context, keyID, projectID string) {
	var entries []string
	if keyID != "" {
		entries = append(entries, keyEntry(keyID))
	}
	if projectID != "" {
		entries = append(entries, projectEntry(projectID))
	}
	if err := s.cache.Delete(ctx, entries...); err != nil {
		s.log.Warn("cache invalidation failed", "entries", entries, "err", err)
	}
	// Detached from ctx: the second drop must happen even when the
	// request that made the change is long finished.
	later := context.WithoutCancel(ctx)
	time.AfterFunc(redropAfter, func() {
		ctx, cancel := context.WithTimeout(later, time.Second)
		defer cancel()
		_ = s.cache.Delete(ctx, entries...)
	})
}

// UpdateProject writes through and drops the cached project.
func (s *Store) UpdateProject(ctx context.Context, id string, change func(*access.Project) error) (access.Project, error) {
	p, err := s.Store.UpdateProject(ctx, id, change)
	s.Forget(ctx, "", id)
	return p, err
}

// DeleteProject writes through and drops the cached project.
func (s *Store) DeleteProject(ctx context.Context, id string) error {
	err := s.Store.DeleteProject(ctx, id)
	s.Forget(ctx, "", id)
	return err
}

// CreateProject writes through; a miss for the id might have been cached
// by another layer, so drop it too.
func (s *Store) CreateProject(ctx context.Context, p access.Project) error {
	err := s.Store.CreateProject(ctx, p)
	s.Forget(ctx, "", p.ID)
	return err
}

// UpdateKey writes through and drops the cached key.
func (s *Store) UpdateKey(ctx context.Context, id string, change func(*access.Key) error) (access.Key, error) {
	k, err := s.Store.UpdateKey(ctx, id, change)
	s.Forget(ctx, id, "")
	return k, err
}

// PutKey writes through and drops the cached key.
func (s *Store) PutKey(ctx context.Context, k access.Key) error {
	err := s.Store.PutKey(ctx, k)
	s.Forget(ctx, k.ID, "")
	return err
}

// Used records a key's last use in the store, at most once a minute per
// key and in the background, so authentication never waits on a write.
func (s *Store) Used(id string) {
	now := s.now()
	s.mu.Lock()
	if now.Sub(s.touched[id]) < time.Minute {
		s.mu.Unlock()
		return
	}
	s.touched[id] = now
	if len(s.touched) > 100_000 {
		clear(s.touched) // bound memory; the cost is a few extra writes
	}
	s.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		at := now.UTC().Truncate(time.Second)
		if _, err := s.UpdateKey(ctx, id, func(k *access.Key) error {
			k.LastUsedAt = &at
			return nil
		}); err != nil {
			s.log.Debug("key last-used time not recorded", "key_id", id, "err", err)
		}
	}()
}
