package cache

import (
	"context"
	"fmt"
	"time"

	"github.com/maypok86/otter/v2"
)

// Memory is an in-process Cache bounded to a number of entries, each with
// its own TTL; when full it evicts the entries least likely to be used
// again (otter's W-TinyLFU). It is the cache of a single-instance
// `rdev up`: invalidation reaches only this process.
type Memory struct {
	c *otter.Cache[string, memoryEntry]
}

type memoryEntry struct {
	value []byte
	ttl   time.Duration
}

// NewMemory returns a cache that holds at most maxEntries entries
// (at least 1).
func NewMemory(maxEntries int) *Memory { return newMemory(maxEntries, nil) }

func newMemory(maxEntries int, clock otter.Clock) *Memory {
	return &Memory{c: otter.Must(&otter.Options[string, memoryEntry]{
		MaximumSize: max(maxEntries, 1),
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[string, memoryEntry]) time.Duration {
			return e.Value.ttl
		}),
		Clock: clock,
	})}
}

// Get implements Cache.
func (m *Memory) Get(_ context.Context, key string) ([]byte, bool, error) {
	e, ok := m.c.GetIfPresent(key)
	if !ok {
		return nil, false, nil
	}
	return clone(e.value), true, nil
}

// Set implements Cache.
func (m *Memory) Set(_ context.Context, key string, value []byte, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("set %q: %w", key, ErrInvalidTTL)
	}
	m.c.Set(key, memoryEntry{value: clone(value), ttl: ttl})
	return nil
}

// Delete implements Cache.
func (m *Memory) Delete(_ context.Context, keys ...string) error {
	for _, k := range keys {
		m.c.Invalidate(k)
	}
	return nil
}

// Invalidate implements Invalidator.
func (m *Memory) Invalidate(context.Context) error {
	m.c.InvalidateAll()
	return nil
}

// clone copies b, keeping an empty value non-nil (an empty hit).
func clone(b []byte) []byte { return append(make([]byte, 0, len(b)), b...) }
