package ratelimit

import (
	"context"
	"fmt"
	"hash/maphash"
	"math"
	"math/bits"
	"sync"
	"time"
)

const (
	memoryShards = 32
	// sweepEvery is how often a shard drops keys whose every counted request
	// has left the window, so idle keys do not hold memory.
	sweepEvery = time.Minute
)

// Memory is an in-process sliding-window log: it keeps the admission time
// of each counted request, at most Limit.Requests per key, and drops a key
// once all of them have left its window. It is exact within one process
// and safe for concurrent use; it is the limiter of a single-instance
// `rdev up`, not of several API replicas (use redisstore.Limiter there).
type Memory struct {
	now    func() time.Time
	epoch  time.Time
	seed   maphash.Seed
	shards [memoryShards]memoryShard
}

type memoryShard struct {
	mu        sync.Mutex
	keys      map[string]*slidingLog
	lastSweep time.Duration
}

// slidingLog is a ring of admission times (offsets from Memory.epoch).
type slidingLog struct {
	times  []time.Duration // capacity == Requests
	head   int             // index of the oldest entry
	n      int
	window time.Duration
}

// NewMemory returns an empty in-process limiter on the system clock.
func NewMemory() *Memory { return newMemory(time.Now) }

func newMemory(now func() time.Time) *Memory {
	m := &Memory{now: now, epoch: now(), seed: maphash.MakeSeed()}
	for i := range m.shards {
		m.shards[i].keys = make(map[string]*slidingLog)
	}
	return m
}

// Allow implements Limiter. A call with one limited check locks the shard
// of its key; a call with several locks every shard their keys hash to,
// in shard order (so two calls cannot deadlock), decides on all the keys
// and only then counts the request under each.
func (m *Memory) Allow(ctx context.Context, checks ...Check) (Decision, error) {
	if len(checks) != 1 {
		return m.allowSeveral(ctx, checks)
	}
	// One check, the common case: as few steps as possible.
	key, l := checks[0].Key, checks[0].Limit
	if l.Unlimited() {
		return Decision{Allowed: true}, nil
	}
	if l.Window <= 0 {
		return Decision{}, fmt.Errorf("allow: key %q: %w", key, errWindow)
	}
	if err := ctx.Err(); err != nil {
		return Decision{}, fmt.Errorf("allow %q: %w", key, err)
	}
	now := m.offset()
	sh := &m.shards[m.shard(key)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.sweepIfDue(now)
	return sh.log(key, l).allow(now, l, true), nil
}

func (m *Memory) allowSeveral(ctx context.Context, checks []Check) (Decision, error) {
	n, first := limited(checks)
	if n == 0 {
		return Decision{Allowed: true}, nil
	}
	if err := Validate(checks...); err != nil {
		return Decision{}, fmt.Errorf("allow: %w", err)
	}
	if n == 1 {
		return m.Allow(ctx, first)
	}
	if err := ctx.Err(); err != nil {
		return Decision{}, fmt.Errorf("allow: %w", err)
	}
	return m.allowAll(m.offset(), checks), nil
}

// offset is the time now as a monotonic offset: wall-clock jumps do not
// move windows.
func (m *Memory) offset() time.Duration { return m.now().Sub(m.epoch) }

func (m *Memory) shard(key string) int { return int(maphash.String(m.seed, key) % memoryShards) }

// The shards a multi-check call locks are a bit mask.
const _ uint = 64 - memoryShards // memoryShards must fit in a uint64

func (m *Memory) allowAll(now time.Duration, checks []Check) Decision {
	var buf [4]*memoryShard
	shards := buf[:0] // of each check; nil for unlimited ones
	var mask uint64
	for _, c := range checks {
		if c.Limit.Unlimited() {
			shards = append(shards, nil)
			continue
		}
		i := m.shard(c.Key)
		shards = append(shards, &m.shards[i])
		mask |= 1 << i
	}
	for rest := mask; rest != 0; rest &= rest - 1 {
		sh := &m.shards[bits.TrailingZeros64(rest)]
		sh.mu.Lock()
		sh.sweepIfDue(now)
	}
	defer func() {
		for rest := mask; rest != 0; rest &= rest - 1 {
			m.shards[bits.TrailingZeros64(rest)].mu.Unlock()
		}
	}()

	denied, deny := false, Decision{}
	for i, c := range checks {
		if shards[i] == nil {
			continue
		}
		log := shards[i].keys[c.Key]
		if log == nil {
			continue // nothing counted: admits
		}
		if d := log.allow(now, c.Limit, false); !d.Allowed && (!denied || d.RetryAfter > deny.RetryAfter) {
			denied, deny = true, d
		}
	}
	if denied {
		return deny
	}
	tightest := Decision{Remaining: math.MaxInt}
	for i, c := range checks {
		if shards[i] == nil {
			continue
		}
		if d := shards[i].log(c.Key, c.Limit).allow(now, c.Limit, true); d.Remaining < tightest.Remaining {
			tightest = d
		}
	}
	return tightest
}

// log returns the log of key, a new one if there is none.
func (sh *memoryShard) log(key string, l Limit) *slidingLog {
	log := sh.keys[key]
	if log == nil {
		log = &slidingLog{times: make([]time.Duration, l.Requests)}
		sh.keys[key] = log
	}
	return log
}

func (sh *memoryShard) sweepIfDue(now time.Duration) {
	if now-sh.lastSweep >= sweepEvery {
		sh.sweep(now)
	}
}

func (sh *memoryShard) sweep(now time.Duration) {
	sh.lastSweep = now
	for k, log := range sh.keys {
		if log.n == 0 || log.newest()+log.window <= now {
			delete(sh.keys, k)
		}
	}
}

func (s *slidingLog) at(i int) time.Duration { return s.times[(s.head+i)%len(s.times)] }
func (s *slidingLog) newest() time.Duration  { return s.at(s.n - 1) }

// allow decides on a request now against l and, if it is admitted and
// count is set, counts it. (One function, not prune/admit helpers: it
// runs under the shard lock of every single-check call.)
func (s *slidingLog) allow(now time.Duration, l Limit, count bool) Decision {
	s.window = l.Window
	if len(s.times) != l.Requests {
		s.resize(l.Requests)
	}
	// A request admitted at t counts while t > now-window.
	for s.n > 0 && s.at(0) <= now-l.Window {
		s.head = (s.head + 1) % len(s.times)
		s.n--
	}
	if s.n == l.Requests {
		return Decision{
			Limit:      l.Requests,
			RetryAfter: s.at(0) + l.Window - now,
			Reset:      s.newest() + l.Window - now,
		}
	}
	if !count {
		return Decision{Allowed: true}
	}
	s.times[(s.head+s.n)%len(s.times)] = now
	s.n++
	return Decision{Allowed: true, Limit: l.Requests, Remaining: l.Requests - s.n, Reset: l.Window}
}

// resize keeps the newest entries that fit a new capacity.
func (s *slidingLog) resize(capacity int) {
	keep := min(s.n, capacity)
	times := make([]time.Duration, capacity)
	for i := range keep {
		times[i] = s.at(s.n - keep + i)
	}
	s.times, s.head, s.n = times, 0, keep
}

// keyCount reports how many keys the limiter holds (for tests of the sweep).
func (m *Memory) keyCount() int {
	total := 0
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		total += len(sh.keys)
		sh.mu.Unlock()
	}
	return total
}
