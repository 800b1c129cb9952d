package redisstore_test

import (
	"crypto/rand"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/rdev-dev/rdev/services/api/internal/cache"
	"github.com/rdev-dev/rdev/services/api/internal/cache/cachetest"
	"github.com/rdev-dev/rdev/services/api/internal/ratelimit"
	"github.com/rdev-dev/rdev/services/api/internal/ratelimit/ratelimittest"
	"github.com/rdev-dev/rdev/services/api/internal/redisstore"
	"github.com/rdev-dev/rdev/services/api/redistest"
)

// prefix gives each adapter instance its own keys, so instances sharing a
// server (RDEV_TEST_REDIS_URL) cannot see or invalidate each other's.
func prefix(t *testing.T) string { return "test:" + rand.Text()[:10] + ":" }

// pipelined returns client's autopipeliner, which the API gives its
// limiter.
func pipelined(t testing.TB, client *redis.Client) redis.Scripter {
	t.Helper()
	ap, err := client.AutoPipeline()
	if err != nil {
		t.Fatalf("autopipeline: %v", err)
	}
	return ap
}

// The limiter on the autopipeliner (as the API runs it) and on a plain
// client.
func TestLimiterConformance(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	client := srv.Client(t)
	t.Run("AutoPipeline", func(t *testing.T) {
		ap := pipelined(t, client)
		ratelimittest.Run(t, func(t *testing.T) ratelimit.Limiter { return redisstore.NewLimiter(ap, prefix(t)) })
	})
	t.Run("Client", func(t *testing.T) {
		ratelimittest.Run(t, func(t *testing.T) ratelimit.Limiter { return redisstore.NewLimiter(client, prefix(t)) })
	})
}

// Two limiters on two clients (two API replicas) share one limit.
func TestLimiterConformanceAcrossReplicas(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a, b := pipelined(t, srv.Client(t)), pipelined(t, srv.Client(t))
	ratelimittest.Run(t, func(t *testing.T) ratelimit.Limiter {
		p := prefix(t)
		return alternating{redisstore.NewLimiter(a, p), redisstore.NewLimiter(b, p)}
	})
}

func TestCacheConformance(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	client := srv.Client(t)
	cachetest.Run(t, func(t *testing.T) cache.Backend { return redisstore.NewCache(client, prefix(t)) })
}
