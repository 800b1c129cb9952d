package ratelimit

import (
	"context"
	"fmt"
	"hash/maphash"
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

// Allow implements Limiter.
func (m *Memory) Allow(ctx context.Context, key string, l Limit) (Decision, error) {
	if l.Unlimited() {
		return Decision{Allowed: true}, nil
	}
	if err := validate(l); err != nil {
		return Decision{}, fmt.Errorf("allow %q: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return Decision{}, fmt.Errorf("allow %q: %w", key, err)
	}
	// A monotonic offset: wall-clock jumps do not move windows.
	now := m.now().Sub(m.epoch)
	sh := &m.shards[maphash.String(m.seed, key)%memoryShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if now-sh.lastSweep >= sweepEvery {
		sh.sweep(now)
	}
	log := sh.keys[key]
	if log == nil {
		log = &slidingLog{times: make([]time.Duration, l.Requests)}
		sh.keys[key] = log
	}
	return log.allow(now, l), nil
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

func (s *slidingLog) allow(now time.Duration, l Limit) Decision {
	s.window = l.Window
	if len(s.times) != l.Requests {
		s.resize(l.Requests)
	}
	// A request admitted at t counts while t > now-window.
	for s.n > 0 && s.at(0) <= now-l.Window {
		s.head = (s.head + 1) % len(s.times)
		s.n--
	}
	if s.n < l.Requests {
		s.times[(s.head+s.n)%len(s.times)] = now
		s.n++
		return Decision{Allowed: true, Limit: l.Requests, Remaining: l.Requests - s.n, Reset: l.Window}
	}
	return Decision{
		Limit:      l.Requests,
		RetryAfter: s.at(0) + l.Window - now,
		Reset:      s.newest() + l.Window - now,
	}
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
