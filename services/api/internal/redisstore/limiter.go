// Package redisstore implements the API's rate-limiter and cache ports on
// Redis (go-redis/v9), the state shared by all API replicas. Each
// operation is one Lua script, so it is atomic on the server and costs
// one round trip; a rate-limit check on several keys is one script too.
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

// allowScript is a sliding-window log per key in a sorted set: one member
// per admitted request, scored by its admission time in microseconds. It
// checks all the keys of one call first (dropping members older than each
// window, counting the rest) and only if every key admits the request
// adds it to all of them: a request denied by one key is counted under
// none, and a script is atomic on the server.
//
// The clock is the Redis server's TIME, so replicas with skewed clocks
// share one timeline (scripts are replicated by effects since Redis 5, so
// reading TIME before writing is allowed). Numbers are formatted with %d
// because Lua's default number formatting (%.14g) would round 16-digit
// microsecond timestamps.
//
// KEYS[i] the log of check i; ARGV[1] a unique member; ARGV[2i] and
// ARGV[2i+1] the limit and window (µs) of check i. Returns {allowed,
// index of the reported check, remaining, retry_after_us, reset_us}: when
// denied the denying check with the largest retry, else the one with the
// fewest remaining, the first on a tie.
var allowScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local counts = {}
local deny, retry = 0, 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%d', now - window))
  counts[i] = redis.call('ZCARD', key)
  if counts[i] >= limit then
    local oldest = tonumber(redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2])
    if deny == 0 or oldest + window - now > retry then
      deny, retry = i, oldest + window - now
    end
  end
end
if deny > 0 then
  local newest = tonumber(redis.call('ZRANGE', KEYS[deny], -1, -1, 'WITHSCORES')[2])
  return {0, deny, 0, retry, newest + tonumber(ARGV[2 * deny + 1]) - now}
end
local best, remaining = 0, 0
local now_s = string.format('%d', now)
for i, key in ipairs(KEYS) do
  local window = tonumber(ARGV[2 * i + 1])
  redis.call('ZADD', key, now_s, ARGV[1])
  redis.call('PEXPIRE', key, math.ceil(window / 1000))
  local r = tonumber(ARGV[2 * i]) - counts[i] - 1
  if best == 0 or r < remaining then
    best, remaining = i, r
  end
end
return {1, best, remaining, 0, tonumber(ARGV[2 * best + 1])}
`)

// Limiter is a ratelimit.Limiter on Redis: exact across every API replica
// sharing the server, since each decision, on all the checks of a call,
// is one atomic script and one round trip. A key holds at most
// Limit.Requests members (more only after its limit was lowered) and
// expires one window after its last admitted request.
//
// Redis Cluster: a script may only touch keys of one hash slot, and the
// keys of one call (e.g. "key:…" and "project:…") are not hash-tagged, so
// they land on different slots and a multi-check call fails there
// (CROSSSLOT). Running on a Cluster would need a hash tag shared by all
// the keys of a call, such as the project in {braces} in the prefix of
// each, which also puts each project's keys on one shard. Not done: rdev
// runs a single Redis (with replicas).
type Limiter struct {
	client redis.Scripter
	prefix string
	// Members must be unique even for two requests in the same
	// microsecond from different replicas: a random per-process nonce and
	// a counter.
	nonce string
	seq   atomic.Uint64
}

// NewLimiter returns a Limiter whose Redis keys start with prefix
// (e.g. "rdev:rl:"). The API passes its client's autopipeliner
// (redis.Client.AutoPipeline): the checks of concurrent requests then go
// to Redis as one pipeline, a write and a read for many requests on both
// sides, while a lone check is sent at once.
func NewLimiter(client redis.Scripter, prefix string) *Limiter {
	return &Limiter{client: client, prefix: prefix, nonce: rand.Text()[:12]}
}

// Allow implements ratelimit.Limiter.
func (l *Limiter) Allow(ctx context.Context, checks ...ratelimit.Check) (ratelimit.Decision, error) {
	if err := ratelimit.Validate(checks...); err != nil {
		return ratelimit.Decision{}, fmt.Errorf("allow: %w", err)
	}
	// The limited checks, in order: KEYS and ARGV of the script.
	var buf [2]ratelimit.Check
	limited := buf[:0]
	for _, c := range checks {
		if !c.Limit.Unlimited() {
			limited = append(limited, c)
		}
	}
	if len(limited) == 0 {
		return ratelimit.Decision{Allowed: true}, nil
	}
	keys := make([]string, len(limited))
	args := make([]any, 1+2*len(limited))
	args[0] = l.nonce + strconv.FormatUint(l.seq.Add(1), 36)
	for i, c := range limited {
		keys[i] = l.prefix + c.Key
		args[1+2*i] = c.Limit.Requests
		args[2+2*i] = max(c.Limit.Window.Microseconds(), 1)
	}
	res, err := allowScript.Run(ctx, l.client, keys, args...).Int64Slice()
	if err != nil {
		return ratelimit.Decision{}, fmt.Errorf("redis allow %q: %w", keys, err)
	}
	if len(res) != 5 || res[1] < 1 || int(res[1]) > len(limited) {
		return ratelimit.Decision{}, fmt.Errorf("redis allow %q: script returned %v", keys, res)
	}
	return ratelimit.Decision{
		Allowed:    res[0] == 1,
		Limit:      limited[res[1]-1].Limit.Requests,
		Remaining:  int(res[2]),
		RetryAfter: time.Duration(res[3]) * time.Microsecond,
		Reset:      time.Duration(res[4]) * time.Microsecond,
	}, nil
}
