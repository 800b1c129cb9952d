package cache_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/services/api/internal/cache"
)

// BenchmarkMemoryGetHit measures parallel Get hits of a 256-byte value.
func BenchmarkMemoryGetHit(b *testing.B) {
	c := cache.NewMemory(10_000)
	for i := range 1000 {
		if err := c.Set(b.Context(), strconv.Itoa(i), make([]byte, 256), time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, ok, _ := c.Get(b.Context(), strconv.Itoa(i%1000)); !ok {
				b.Fatal("miss")
			}
			i++
		}
	})
}
