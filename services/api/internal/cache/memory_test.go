package cache_test

import (
	"testing"
	"time"

	"github.com/rdev-dev/rdev/services/api/internal/cache"
	"github.com/rdev-dev/rdev/services/api/internal/cache/cachetest"
)

func TestMemoryConformance(t *testing.T) {
	t.Parallel()
	cachetest.Run(t, func(*testing.T) cache.Backend { return cache.NewMemory(10_000) })
}

func TestTieredConformance(t *testing.T) {
	t.Parallel()
	cachetest.Run(t, func(*testing.T) cache.Backend {
		return cache.NewTiered(cache.NewMemory(1000), cache.NewMemory(1000), time.Minute)
	})
}
