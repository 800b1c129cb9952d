// Package redisstore implements the API's rate-limiter and cache ports on
// Redis (go-redis/v9), the state shared by all API replicas. Each
// operation is one Lua script, so it is atomic on the server and costs
// one round trip.
package redisstore

import (
	"context"
	"crypto/rand"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rdev-dev/rdev/services/api/internal/ratelimit"
)

// allowScript is a sliding-window log in a sorted set: one member per
// admitted request, scored by its admission time in microseconds.
//
// The clock is the Redis server's TIME, so replicas with skewed clocks
// share one timeline (scripts are replicated by effects since Redis 5, so
// reading TIME before writing is allowed). Numbers are formatted with %d
// because Lua's default number formatting (%.14g) would round 16-digit
// microsecond timestamps.
//
// KEYS[1] the log; ARGV[1] limit; ARGV[2] window (µs); ARGV[3] a unique
// member. Returns {allowed, remaining, retry_after_us, reset_us}.
var allowScript = redis.NewScript(`
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%d', now - window))
local count = redis.call('ZCARD', key)
if count < limit then
  redis.call('ZADD', key, string.format('%d', now), ARGV[3])
  redis.call('PEXPIRE', key, math.ceil(window / 1000))
  return {1, limit - count - 1, 0, window}
end
local oldest = tonumber(redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2])
local newest = tonumber(redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2])
return {0, 0, oldest + window - now, newest + window - now}
`)

// Limiter is a ratelimit.Limiter on Redis: exact across every API replica
// sharing the server, since each decision is one atomic script. A key holds
// at most Limit.Requests members and expires one window after its last
// admitted request. For a Redis Cluster each key lives on one shard.
type Limiter struct {
	client redis.UniversalClient
	prefix string
	// Members must be unique even for two requests in the same
	// microsecond from different replicas: a random per-process nonce and
	// a counter.
	nonce string
	seq   atomic.Uint64
}

// NewLimiter returns a Limiter whose Redis keys start with prefix
// (e.g. "rdev:rl:").
func NewLimiter(client redis.UniversalClient, prefix string) *Limiter {
	return &Limiter{client: client, prefix: prefix, nonce: rand.Text()[:12]}
}

// Allow implements ratelimit.Limiter.
func (l *Limiter) Allow(ctx context.Context, key string, lim ratelimit.Limit) (ratelimit.Decision, error) {
	if lim.Unlimited() {
		return ratelimit.Decision{Allowed: true}, nil
	}
	if lim.Window <= 0 {
		return ratelimit.Decision{}, fmt.Errorf("allow %q: %w", key, ratelimit.ErrInvalidLimit)
	}
	windowUS := max(lim.Window.Microseconds(), 1)
	member := l.nonce + strconv.FormatUint(l.seq.Add(1), 36)
	res, err := allowScript.Run(ctx, l.client, []string{l.prefix + key}, lim.Requests, windowUS, member).Int64Slice()
	if err != nil {
		return ratelimit.Decision{}, fmt.Errorf("redis allow %q: %w", key, err)
	}
	if len(res) != 4 {
		return ratelimit.Decision{}, fmt.Errorf("redis allow %q: script returned %d values", key, len(res))
	}
	return ratelimit.Decision{
		Allowed:    res[0] == 1,
		Limit:      lim.Requests,
		Remaining:  int(res[1]),
		RetryAfter: time.Duration(res[2]) * time.Microsecond,
		Reset:      time.Duration(res[3]) * time.Microsecond,
	}, nil
}
