package cache

import (
	"context"
	"errors"
	"time"
)

// Tiered is a near cache (in process) in front of a far one (shared, e.g.
// Redis): a hit in the near cache costs no round trip, a near miss asks
// the far cache, and writes and deletes go to both. The near cache is
// only as fresh as its deletes: every replica must drop entries when the
// system of record changes (rdev does so from the access bucket's watch),
// and NearTTL bounds what a lost delete can cost.
type Tiered struct {
	near, far Backend
	nearTTL   time.Duration
}

// NewTiered returns near in front of far; near entries live at most
// nearTTL.
func NewTiered(near, far Backend, nearTTL time.Duration) *Tiered {
	return &Tiered{near: near, far: far, nearTTL: nearTTL}
}

// Get implements Cache.
func (t *Tiered) Get(ctx context.Context, key string) ([]byte, bool, error) {
	if v, ok, err := t.near.Get(ctx, key); err == nil && ok {
		return v, true, nil
	}
	v, ok, err := t.far.Get(ctx, key)
	if err != nil || !ok {
		return nil, false, err
	}
	_ = t.near.Set(ctx, key, v, t.nearTTL)
	return v, true, nil
}

// Set implements Cache.
func (t *Tiered) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if ttl <= 0 {
		return ErrInvalidTTL
	}
	return errors.Join(t.near.Set(ctx, key, value, min(ttl, t.nearTTL)), t.far.Set(ctx, key, value, ttl))
}

// Delete implements Cache.
func (t *Tiered) Delete(ctx context.Context, keys ...string) error {
	return errors.Join(t.near.Delete(ctx, keys...), t.far.Delete(ctx, keys...))
}

// Invalidate implements Invalidator.
func (t *Tiered) Invalidate(ctx context.Context) error {
	return errors.Join(t.near.Invalidate(ctx), t.far.Invalidate(ctx))
}
