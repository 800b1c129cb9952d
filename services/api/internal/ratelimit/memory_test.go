package ratelimit_test

import (
	"testing"

	"github.com/rdev-dev/rdev/services/api/internal/ratelimit"
	"github.com/rdev-dev/rdev/services/api/internal/ratelimit/ratelimittest"
)

func TestMemoryConformance(t *testing.T) {
	t.Parallel()
	ratelimittest.Run(t, func(*testing.T) ratelimit.Limiter { return ratelimit.NewMemory() })
}
