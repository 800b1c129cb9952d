package ratelimit_test

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/services/api/internal/ratelimit"
)

// BenchmarkMemoryAllow measures parallel Allow calls on the in-memory
// limiter: one hot key (all callers contend), and many keys.
func BenchmarkMemoryAllow(b *testing.B) {
	lim := ratelimit.Limit{Requests: 1000, Window: time.Second}
	b.Run("OneKey", func(b *testing.B) {
		m := ratelimit.NewMemory()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := m.Allow(b.Context(), "hot", lim); err != nil {
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
				if _, err := m.Allow(b.Context(), strconv.FormatInt(n.Add(1)%10_000, 10), lim); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("GuardedOneKey", func(b *testing.B) {
		g := ratelimit.NewGuard(ratelimit.NewMemory(), ratelimit.GuardConfig{})
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := g.Allow(b.Context(), "hot", lim); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}
