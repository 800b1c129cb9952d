package cache_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/services/api/internal/cache"
	"github.com/rdev-dev/rdev/services/api/internal/cache/cachetest"
)

func TestMemoryConformance(t *testing.T) {
	t.Parallel()
	cachetest.Run(t, func(*testing.T) cache.Backend { return cache.NewMemory(10_000) })
}

// The memory cache stays within its bound however many keys are written.
func TestMemoryBounded(t *testing.T) {
	t.Parallel()
	c := cache.NewMemory(100)
	for i := range 10_000 {
		if err := c.Set(t.Context(), fmt.Sprint(i), []byte("v"), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	hits := 0
	for i := range 10_000 {
		if _, ok, _ := c.Get(t.Context(), fmt.Sprint(i)); ok {
			hits++
		}
	}
	if hits > 110 {
		t.Fatalf("%d of 10000 entries still cached with a bound of 100", hits)
	}
}

func TestTieredConformance(t *testing.T) {
	t.Parallel()
	cachetest.Run(t, func(*testing.T) cache.Backend {
		return cache.NewTiered(cache.NewMemory(1000), cache.NewMemory(1000), time.Minute)
	})
}
