package redisstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rdev-dev/rdev/services/api/internal/cache"
)

// The cache keeps a generation counter at {prefix}gen and each entry at
// {prefix}<generation>:<key>. Invalidate is one INCR: every replica's next
// Get reads the new generation in the same script, so it is atomic and
// O(1), and entries of old generations simply expire by their TTL. (SCAN
// plus UNLINK would take time proportional to the cache and could miss an
// entry written during the scan.) The braces make the prefix a Redis
// Cluster hash tag, so the counter and the entries are on one shard, as a
// script touching both requires: fine for small, hot lookups.
const (
	getScriptSrc = `
local gen = redis.call('GET', KEYS[1]) or '0'
return redis.call('GET', ARGV[1] .. gen .. ':' .. ARGV[2])
`
	setScriptSrc = `
local gen = redis.call('GET', KEYS[1]) or '0'
return redis.call('SET', ARGV[1] .. gen .. ':' .. ARGV[2], ARGV[3], 'PX', ARGV[4])
`
	delScriptSrc = `
local gen = redis.call('GET', KEYS[1]) or '0'
local keys = {}
for i = 2, #ARGV do keys[#keys + 1] = ARGV[1] .. gen .. ':' .. ARGV[i] end
return redis.call('DEL', unpack(keys))
`
)

var (
	getScript = redis.NewScript(getScriptSrc)
	setScript = redis.NewScript(setScriptSrc)
	delScript = redis.NewScript(delScriptSrc)
)

// Cache is a cache.Backend on Redis, shared by every API replica: a
// Delete or Invalidate by one is seen by the next Get of all.
//
// The generation key has no TTL and must never be evicted (a reset
// counter would revive old entries): run Redis with maxmemory-policy
// noeviction or a volatile-* policy, which only evict keys with a TTL.
type Cache struct {
	client  redis.UniversalClient
	genKey  string
	entries string // prefix of entry keys, before the generation
}

// NewCache returns a Cache whose Redis keys start with {prefix}
// (e.g. prefix "rdev:cache" gives "{rdev:cache}gen", "{rdev:cache}7:key").
func NewCache(client redis.UniversalClient, prefix string) *Cache {
	tag := "{" + prefix + "}"
	return &Cache{client: client, genKey: tag + "gen", entries: tag}
}

// Get implements cache.Cache.
func (c *Cache) Get(ctx context.Context, key string) ([]byte, bool, error) {
	v, err := getScript.Run(ctx, c.client, []string{c.genKey}, c.entries, key).Text()
	switch {
	case errors.Is(err, redis.Nil):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("redis cache get %q: %w", key, err)
	}
	return []byte(v), true, nil
}

// Set implements cache.Cache. Redis keeps millisecond TTLs: ttl is
// rounded up to whole milliseconds.
func (c *Cache) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("redis cache set %q: %w", key, cache.ErrInvalidTTL)
	}
	ms := (ttl + time.Millisecond - 1) / time.Millisecond
	if err := setScript.Run(ctx, c.client, []string{c.genKey}, c.entries, key, value, int64(ms)).Err(); err != nil {
		return fmt.Errorf("redis cache set %q: %w", key, err)
	}
	return nil
}

// Delete implements cache.Cache.
func (c *Cache) Delete(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	args := make([]any, 0, len(keys)+1)
	args = append(args, c.entries)
	for _, k := range keys {
		args = append(args, k)
	}
	if err := delScript.Run(ctx, c.client, []string{c.genKey}, args...).Err(); err != nil {
		return fmt.Errorf("redis cache delete %d keys: %w", len(keys), err)
	}
	return nil
}

// Invalidate implements cache.Invalidator: one INCR of the generation.
func (c *Cache) Invalidate(ctx context.Context) error {
	if err := c.client.Incr(ctx, c.genKey).Err(); err != nil {
		return fmt.Errorf("redis cache invalidate: %w", err)
	}
	return nil
}
