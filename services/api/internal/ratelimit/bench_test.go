package ratelimit_test

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/services/api/internal/ratelimit"
)

// BenchmarkMemoryAllow measures parallel Allow calls on the in-memory
// limiter: one check on one hot key (all callers contend) and on many
// keys; two checks (a key and its project, as the API makes them) on one
// hot pair and on many keys sharing 10 projects; and behind a Guard.
func BenchmarkMemoryAllow(b *testing.B) {
	lim := ratelimit.Limit{Requests: 1000, Window: time.Second}
	project := ratelimit.Limit{Requests: 10_000, Window: time.Second}
	b.Run("OneKey", func(b *testing.B) {
		m := ratelimit.NewMemory()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := m.Allow(b.Context(), ratelimit.Check{Key: "hot", Limit: lim}); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("ManyKeys", func(b *testing.B) {
		m := ratelimit.NewMemory()
		var n atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := m.Allow(b.Context(), ratelimit.Check{Key: strconv.FormatInt(n.Add(1)%10_000, 10), Limit: lim}); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("TwoChecksOneKey", func(b *testing.B) {
		m := ratelimit.NewMemory()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := m.Allow(b.Context(), ratelimit.Check{Key: "key:hot", Limit: lim}, ratelimit.Check{Key: "project:hot", Limit: project}); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("TwoChecksManyKeys", func(b *testing.B) {
		m := ratelimit.NewMemory()
		var n atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := n.Add(1) % 10_000
				if _, err := m.Allow(b.Context(),
					ratelimit.Check{Key: "key:" + strconv.FormatInt(i, 10), Limit: lim},
					ratelimit.Check{Key: "project:" + strconv.FormatInt(i%10, 10), Limit: project},
				); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("GuardedOneKey", func(b *testing.B) {
		g := ratelimit.NewGuard(ratelimit.NewMemory(), ratelimit.GuardConfig{})
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := g.Allow(b.Context(), ratelimit.Check{Key: "hot", Limit: lim}); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}
