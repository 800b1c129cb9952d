package redisstore_test

import (
	"context"
	"math/rand/v2"

	"github.com/rdev-dev/rdev/services/api/internal/ratelimit"
)

// alternating sends each call to one of several limiters at random, as a
// load balancer would spread requests over API replicas.
type alternating []ratelimit.Limiter

func (a alternating) Allow(ctx context.Context, checks ...ratelimit.Check) (ratelimit.Decision, error) {
	return a[rand.IntN(len(a))].Allow(ctx, checks...)
}
