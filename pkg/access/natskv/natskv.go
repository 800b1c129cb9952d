// Package natskv stores projects and API keys in the JetStream access
// bucket (contracts.BucketAccess): durable, replicated with the NATS
// cluster, and shared by every API and streamer without another database.
//
// Layout: project.<id> and key.<id> hold JSON records; meta.layout holds
// the layout version, upgraded in place by Open; meta.token_secret holds
// the stream-token secret, created once by whichever process starts first.
package natskv

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/access"
)

// Layout is the data layout this code reads and writes.
const Layout = 1

const (
	keyLayout      = "meta.layout"
	keyTokenSecret = "meta.token_secret"
	prefixProject  = "project."
	prefixKey      = "key."
)

// ErrNewerLayout is returned by Open when the bucket was written by a newer
// rdev: running older code against it could lose data.
var ErrNewerLayout = errors.New("access bucket has a newer layout than this rdev understands")

// upgrades[v] moves a bucket from layout v to v+1. Layout 0 is an empty or
// pre-versioning bucket; it needs nothing but the version mark.
var upgrades = []func(ctx context.Context, kv jetstream.KeyValue) error{
	0: func(context.Context, jetstream.KeyValue) error { return nil },
}

// Store reads and writes the access bucket.
type Store struct{ kv jetstream.KeyValue }

// Open returns the store on the provisioned bucket (topology.AccessBucket),
// upgrading its layout first. Concurrent Opens are safe: each step is
// claimed by compare-and-set on meta.layout.
func Open(ctx context.Context, kv jetstream.KeyValue) (*Store, error) {
	s := &Store{kv: kv}
	if err := s.upgrade(ctx, Layout); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Store) upgrade(ctx context.Context, target int) error {
	for {
		v, rev, err := s.layout(ctx)
		if err != nil {
			return err
		}
		if v > target {
			return fmt.Errorf("%w (bucket layout %d, this rdev %d)", ErrNewerLayout, v, target)
		}
		if v == target {
			return nil
		}
		if err := upgrades[v](ctx, s.kv); err != nil {
			return fmt.Errorf("upgrade access layout %d to %d: %w", v, v+1, err)
		}
		next := []byte(strconv.Itoa(v + 1))
		if rev == 0 {
			_, err = s.kv.Create(ctx, keyLayout, next)
		} else {
			_, err = s.kv.Update(ctx, keyLayout, next, rev)
		}
		if err != nil && !isCASConflict(err) {
			return fmt.Errorf("mark access layout %d: %w", v+1, err)
		}
		// On a conflict another process did the step; read again.
	}
}

func (s *Store) layout(ctx context.Context) (v int, rev uint64, err error) {
	e, err := s.kv.Get(ctx, keyLayout)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("read access layout: %w", err)
	}
	v, err = strconv.Atoi(string(e.Value()))
	if err != nil {
		return 0, 0, fmt.Errorf("access layout %q is not a number", e.Value())
	}
	return v, e.Revision(), nil
}

func isCASConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) ||
		(errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence)
}

// TokenSecret returns the stream-token secret, creating it on first use.
func (s *Store) TokenSecret(ctx context.Context) ([]byte, error) {
	for range 3 {
		e, err := s.kv.Get(ctx, keyTokenSecret)
		if err == nil {
			return e.Value(), nil
		}
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, fmt.Errorf("read token secret: %w", err)
		}
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		if _, err := s.kv.Create(ctx, keyTokenSecret, b); err == nil {
			return b, nil
		} else if !isCASConflict(err) {
			return nil, fmt.Errorf("create token secret: %w", err)
		}
	}
	return nil, errors.New("token secret: gave up after concurrent creates")
}

// Project returns a project or an error wrapping access.ErrNotFound.
func (s *Store) Project(ctx context.Context, id string) (access.Project, error) {
	var p access.Project
	_, err := s.get(ctx, prefixProject+id, &p)
	return p, err
}

// Key returns a key or an error wrapping access.ErrNotFound.
func (s *Store) Key(ctx context.Context, id string) (access.Key, error) {
	var k access.Key
	_, err := s.get(ctx, prefixKey+id, &k)
	return k, err
}

// Projects returns every project, sorted by id.
func (s *Store) Projects(ctx context.Context) ([]access.Project, error) {
	return list[access.Project](ctx, s, prefixProject, func(p access.Project) string { return p.ID })
}

// Keys returns every key, sorted by id.
func (s *Store) Keys(ctx context.Context) ([]access.Key, error) {
	return list[access.Key](ctx, s, prefixKey, func(k access.Key) string { return k.ID })
}

// CreateProject stores a new project, or fails with access.ErrExists.
func (s *Store) CreateProject(ctx context.Context, p access.Project) error {
	return s.create(ctx, prefixProject+p.ID, p)
}

// CreateKey stores a new key, or fails with access.ErrExists.
func (s *Store) CreateKey(ctx context.Context, k access.Key) error {
	return s.create(ctx, prefixKey+k.ID, k)
}

// UpdateProject applies change to the stored project by compare-and-set,
// retrying when another writer got there first, and returns the result.
func (s *Store) UpdateProject(ctx context.Context, id string, change func(*access.Project) error) (access.Project, error) {
	return update(ctx, s, prefixProject+id, change)
}

// UpdateKey applies change to the stored key like UpdateProject.
func (s *Store) UpdateKey(ctx context.Context, id string, change func(*access.Key) error) (access.Key, error) {
	return update(ctx, s, prefixKey+id, change)
}

// PutKey stores k whatever was there (used to set the bootstrap key).
func (s *Store) PutKey(ctx context.Context, k access.Key) error {
	b, err := json.Marshal(k)
	if err != nil {
		return err
	}
	if _, err := s.kv.Put(ctx, prefixKey+k.ID, b); err != nil {
		return fmt.Errorf("store key %s: %w", k.ID, err)
	}
	return nil
}

// DeleteProject removes a project, or fails with access.ErrNotFound.
func (s *Store) DeleteProject(ctx context.Context, id string) error {
	if _, err := s.Project(ctx, id); err != nil {
		return err
	}
	if err := s.kv.Delete(ctx, prefixProject+id); err != nil {
		return fmt.Errorf("delete project %s: %w", id, err)
	}
	return nil
}

// Change is one write to the bucket seen by Watch.
type Change = access.Change

// Watch calls fn for every change to a project or key made after it
// starts, until ctx ends. Caches use it to drop entries other processes
// changed, and access.StreamGate to end streams whose readers lost
// access (Store is an access.ChangeFeed). It returns once the watch is
// established.
func (s *Store) Watch(ctx context.Context, fn func(Change)) error {
	w, err := s.kv.WatchAll(ctx, jetstream.UpdatesOnly(), jetstream.MetaOnly())
	if err != nil {
		return fmt.Errorf("watch access bucket: %w", err)
	}
	go func() {
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					continue
				}
				if id, ok := strings.CutPrefix(e.Key(), prefixProject); ok {
					fn(Change{Project: id})
				} else if id, ok := strings.CutPrefix(e.Key(), prefixKey); ok {
					fn(Change{Key: id})
				}
			}
		}
	}()
	return nil
}

func (s *Store) get(ctx context.Context, key string, v any) (uint64, error) {
	if strings.ContainsAny(key, "*> \t\r\n") {
		// A wildcard or blank is no id: no such record (the bucket would
		// answer with an error that reads as an outage).
		return 0, fmt.Errorf("%q: %w", key, access.ErrNotFound)
	}
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, fmt.Errorf("%s: %w", key, access.ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", key, err)
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return 0, fmt.Errorf("decode %s: %w", key, err)
	}
	return e.Revision(), nil
}

func (s *Store) create(ctx context.Context, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := s.kv.Create(ctx, key, b); err != nil {
		if isCASConflict(err) {
			return fmt.Errorf("%s: %w", key, access.ErrExists)
		}
		return fmt.Errorf("create %s: %w", key, err)
	}
	return nil
}

func update[T any](ctx context.Context, s *Store, key string, change func(*T) error) (T, error) {
	for {
		var v T
		rev, err := s.get(ctx, key, &v)
		if err != nil {
			return v, err
		}
		if err := change(&v); err != nil {
			return v, err
		}
		b, err := json.Marshal(v)
		if err != nil {
			return v, err
		}
		if _, err := s.kv.Update(ctx, key, b, rev); err == nil {
			return v, nil
		} else if !isCASConflict(err) {
			return v, fmt.Errorf("update %s: %w", key, err)
		}
		if err := ctx.Err(); err != nil {
			return v, err
		}
	}
}

func list[T any](ctx context.Context, s *Store, prefix string, id func(T) string) ([]T, error) {
	lister, err := s.kv.ListKeysFiltered(ctx, prefix+"*")
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("list %s*: %w", prefix, err)
	}
	var out []T
	for k := range lister.Keys() {
		var v T
		if _, err := s.get(ctx, k, &v); err != nil {
			if errors.Is(err, access.ErrNotFound) {
				continue // deleted since it was listed
			}
			_ = lister.Stop()
			return nil, err
		}
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b T) int { return strings.Compare(id(a), id(b)) })
	return out, nil
}
