package redisstore_test

import (
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rdev-dev/rdev/services/api/internal/cache"
	"github.com/rdev-dev/rdev/services/api/internal/ratelimit"
	"github.com/rdev-dev/rdev/services/api/internal/redisstore"
	"github.com/rdev-dev/rdev/services/api/redistest"
)

// BenchmarkLimiterAllow measures parallel Allow calls on a local
// redis-server over a unix socket, through the client's autopipeliner (as
// the API runs it) and through the plain client (its connection pool) in
// the same run: one check on a key whose log is full (1000 members,
// denied: the most work per call) and on many keys; two checks (a key and
// its project, as the API makes them) on one full pair and on many keys
// sharing 10 projects; and behind a Guard.
func BenchmarkLimiterAllow(b *testing.B) {
	srv := redistest.Start(b)
	client := srv.Client(b)
	for _, face := range []struct {
		name string
		s    redis.Scripter
	}{{"AutoPipeline", pipelined(b, client)}, {"Client", client}} {
		b.Run(face.name, func(b *testing.B) { benchmarkLimiter(b, face.s, client, "bench:"+face.name+":") })
	}
}

// benchmarkLimiter reports, besides the time per call, the CPU a call
// costs this process and redis-server: on a machine they share, that is
// what a request pays.
func benchmarkLimiter(b *testing.B, s redis.Scripter, info *redis.Client, prefix string) {
	lim := ratelimit.Limit{Requests: 1000, Window: time.Minute}
	parallel := func(b *testing.B, allow func(i int64) error) {
		var n atomic.Int64
		self, server := processCPU(b), serverCPU(b, info)
		b.SetParallelism(8) // 16 concurrent callers on 2 CPUs, as under HTTP load
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := allow(n.Add(1) % 10_000); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.ReportMetric(float64((processCPU(b)-self).Nanoseconds())/float64(b.N), "client-cpu-ns/op")
		b.ReportMetric(float64((serverCPU(b, info)-server).Nanoseconds())/float64(b.N), "redis-cpu-ns/op")
	}
	b.Run("OneKey", func(b *testing.B) {
		l := redisstore.NewLimiter(s, prefix+"one:")
		parallel(b, func(int64) error {
			_, err := l.Allow(b.Context(), ratelimit.Check{Key: "hot", Limit: lim})
			return err
		})
	})
	b.Run("ManyKeys", func(b *testing.B) {
		l := redisstore.NewLimiter(s, prefix+"many:")
		parallel(b, func(i int64) error {
			_, err := l.Allow(b.Context(), ratelimit.Check{Key: strconv.FormatInt(i, 10), Limit: lim})
			return err
		})
	})
	project := ratelimit.Limit{Requests: 10_000, Window: time.Minute}
	b.Run("TwoChecksOneKey", func(b *testing.B) {
		l := redisstore.NewLimiter(s, prefix+"two:")
		parallel(b, func(int64) error {
			_, err := l.Allow(b.Context(), ratelimit.Check{Key: "key:hot", Limit: lim}, ratelimit.Check{Key: "project:hot", Limit: project})
			return err
		})
	})
	b.Run("TwoChecksManyKeys", func(b *testing.B) {
		l := redisstore.NewLimiter(s, prefix+"twomany:")
		parallel(b, func(i int64) error {
			_, err := l.Allow(b.Context(),
				ratelimit.Check{Key: "key:" + strconv.FormatInt(i, 10), Limit: lim},
				ratelimit.Check{Key: "project:" + strconv.FormatInt(i%10, 10), Limit: project},
			)
			return err
		})
	})
	b.Run("GuardedManyKeys", func(b *testing.B) {
		g := ratelimit.NewGuard(redisstore.NewLimiter(s, prefix+"guard:"), ratelimit.GuardConfig{Policy: ratelimit.FailClosed})
		parallel(b, func(i int64) error {
			_, err := g.Allow(b.Context(), ratelimit.Check{Key: strconv.FormatInt(i, 10), Limit: lim})
			return err
		})
	})
}

// processCPU is the CPU this process has used, user and system.
func processCPU(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// serverCPU is the CPU redis-server has used, from INFO cpu.
func serverCPU(b *testing.B, c *redis.Client) time.Duration {
	b.Helper()
	info, err := c.Info(b.Context(), "cpu").Result()
	if err != nil {
		b.Fatalf("info cpu: %v", err)
	}
	var total time.Duration
	for line := range strings.Lines(info) {
		name, value, _ := strings.Cut(strings.TrimSpace(line), ":")
		if name == "used_cpu_sys" || name == "used_cpu_user" {
			secs, err := strconv.ParseFloat(value, 64)
			if err != nil {
				b.Fatalf("info cpu %q: %v", line, err)
			}
			total += time.Duration(secs * float64(time.Second))
		}
	}
	if total == 0 {
		b.Fatalf("info cpu without used_cpu_sys or used_cpu_user: %q", info)
	}
	return total
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
