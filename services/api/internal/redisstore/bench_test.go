package redisstore_test

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/services/api/internal/cache"
	"github.com/rdev-dev/rdev/services/api/internal/ratelimit"
	"github.com/rdev-dev/rdev/services/api/internal/redisstore"
	"github.com/rdev-dev/rdev/services/api/redistest"
)

// BenchmarkLimiterAllow measures parallel Allow calls through one client
// (its connection pool) on a local redis-server over a unix socket: one
// check on a key whose log is full (1000 members, denied: the most work
// per call) and on many keys; two checks (a key and its project, as the
// API makes them) on one full pair and on many keys sharing 10 projects;
// and behind a Guard.
func BenchmarkLimiterAllow(b *testing.B) {
	srv := redistest.Start(b)
	client := srv.Client(b)
	lim := ratelimit.Limit{Requests: 1000, Window: time.Minute}
	b.Run("OneKey", func(b *testing.B) {
		l := redisstore.NewLimiter(client, "bench:one:")
		b.SetParallelism(8) // 16 concurrent callers on 2 CPUs, as under HTTP load
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := l.Allow(b.Context(), ratelimit.Check{Key: "hot", Limit: lim}); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("ManyKeys", func(b *testing.B) {
		l := redisstore.NewLimiter(client, "bench:many:")
		var n atomic.Int64
		b.SetParallelism(8) // 16 concurrent callers on 2 CPUs, as under HTTP load
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := l.Allow(b.Context(), ratelimit.Check{Key: strconv.FormatInt(n.Add(1)%10_000, 10), Limit: lim}); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	project := ratelimit.Limit{Requests: 10_000, Window: time.Minute}
	b.Run("TwoChecksOneKey", func(b *testing.B) {
		l := redisstore.NewLimiter(client, "bench:two:")
		b.SetParallelism(8) // 16 concurrent callers on 2 CPUs, as under HTTP load
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := l.Allow(b.Context(), ratelimit.Check{Key: "key:hot", Limit: lim}, ratelimit.Check{Key: "project:hot", Limit: project}); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("TwoChecksManyKeys", func(b *testing.B) {
		l := redisstore.NewLimiter(client, "bench:twomany:")
		var n atomic.Int64
		b.SetParallelism(8) // 16 concurrent callers on 2 CPUs, as under HTTP load
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := n.Add(1) % 10_000
				if _, err := l.Allow(b.Context(),
					ratelimit.Check{Key: "key:" + strconv.FormatInt(i, 10), Limit: lim},
					ratelimit.Check{Key: "project:" + strconv.FormatInt(i%10, 10), Limit: project},
				); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("GuardedManyKeys", func(b *testing.B) {
		g := ratelimit.NewGuard(redisstore.NewLimiter(client, "bench:guard:"), ratelimit.GuardConfig{Policy: ratelimit.FailClosed})
		var n atomic.Int64
		b.SetParallelism(8) // 16 concurrent callers on 2 CPUs, as under HTTP load
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := g.Allow(b.Context(), ratelimit.Check{Key: strconv.FormatInt(n.Add(1)%10_000, 10), Limit: lim}); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}

// BenchmarkCacheGetHit measures parallel Get hits of a 256-byte value,
// bare and behind a Guard.
func BenchmarkCacheGetHit(b *testing.B) {
	srv := redistest.Start(b)
	c := redisstore.NewCache(srv.Client(b), "bench")
	for i := range 1000 {
		if err := c.Set(b.Context(), strconv.Itoa(i), make([]byte, 256), time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	run := func(b *testing.B, c cache.Cache) {
		b.SetParallelism(8) // 16 concurrent callers on 2 CPUs, as under HTTP load
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if _, ok, err := c.Get(b.Context(), strconv.Itoa(i%1000)); !ok || err != nil {
					b.Fatalf("miss: %v", err)
				}
				i++
			}
		})
	}
	b.Run("Bare", func(b *testing.B) { run(b, c) })
	b.Run("Guarded", func(b *testing.B) {
		g := cache.NewGuard(c, cache.GuardConfig{Timeout: time.Second})
		b.Cleanup(g.Close)
		run(b, g)
	})
}
