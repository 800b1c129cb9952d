// Package cache is the API's byte-cache port: values under string keys for
// up to a TTL, in front of slower lookups (API keys, projects). It has an
// in-process adapter for a single instance and a Guard that turns backend
// failures into misses, so the caller falls through to the system of
// record, and that never lets an entry outlive a lost invalidation.
package cache

import (
	"context"
	"errors"
	"time"
)

// Cache holds byte values under string keys for up to a TTL.
//
// Contract, which every adapter passes in cachetest:
//   - Get returns (nil, false, nil) on a miss and a copy of the value on a
//     hit: callers may keep and modify it.
//   - Set stores a copy of value for ttl (which must be positive, else
//     ErrInvalidTTL), replacing any previous value; an empty value is a hit.
//   - A Get after Delete of the same key returns a miss, from any caller
//     sharing the backend. Delete of a missing key is not an error.
//   - Safe for concurrent use; an error means the backend could not answer.
type Cache interface {
	Get(ctx context.Context, key string) ([]byte, bool, error)
	Set(ctx context.Context, key string, value []byte, ttl time.Duration) error
	Delete(ctx context.Context, keys ...string) error
}

// Invalidator drops every entry of a cache at once.
//
// Contract: once Invalidate has returned nil, every Get, from any caller
// sharing the backend, misses for every key Set before the call began.
type Invalidator interface {
	Invalidate(ctx context.Context) error
}

// Backend is a Cache that can also be invalidated as a whole: what a Guard
// needs to recover from a Delete it could not deliver.
type Backend interface {
	Cache
	Invalidator
}

// ErrInvalidTTL is returned (wrapped) by Set for a ttl that is not positive.
var ErrInvalidTTL = errors.New("cache ttl must be positive")
