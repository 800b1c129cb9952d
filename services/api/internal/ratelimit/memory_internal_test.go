package ratelimit

import (
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for the memory limiter.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestMemoryExactWindowEdges(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{now: time.Unix(1_000_000, 0)}
	m := newMemory(clk.Now)
	lim := Limit{Requests: 2, Window: 10 * time.Second}
	mustAllow := func(want bool, remaining int, retry time.Duration) {
		t.Helper()
		d, err := m.Allow(t.Context(), Check{Key: "k", Limit: lim})
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed != want || d.Remaining != remaining || d.RetryAfter != retry {
			t.Fatalf("%+v, want Allowed %v Remaining %d RetryAfter %v", d, want, remaining, retry)
		}
	}
	mustAllow(true, 1, 0) // t=0
	clk.Add(4 * time.Second)
	mustAllow(true, 0, 0) // t=4
	clk.Add(5 * time.Second)
	mustAllow(false, 0, time.Second) // t=9: the t=0 request leaves at t=10
	clk.Add(time.Second)
	mustAllow(true, 0, 0) // t=10: exactly one window later it has left
	mustAllow(false, 0, 4*time.Second)
}

func TestMemoryDropsIdleKeys(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{now: time.Unix(1_000_000, 0)}
	m := newMemory(clk.Now)
	lim := Limit{Requests: 3, Window: time.Second}
	for i := range 1000 {
		if _, err := m.Allow(t.Context(), Check{Key: string(rune('a'+i%26)) + string(rune(i)), Limit: lim}); err != nil {
			t.Fatal(err)
		}
	}
	if got := m.keyCount(); got != 1000 {
		t.Fatalf("%d keys, want 1000", got)
	}
	clk.Add(sweepEvery + lim.Window)
	// Every shard sweeps on its next call.
	for i := range 10_000 {
		if _, err := m.Allow(t.Context(), Check{Key: "fresh" + string(rune(i)), Limit: Limit{Requests: 1, Window: time.Hour}}); err != nil {
			t.Fatal(err)
		}
	}
	if got := m.keyCount(); got != 10_000 {
		t.Fatalf("%d keys after the idle ones left their windows, want only the 10000 fresh ones", got)
	}
}

func TestMemoryBoundedPerKey(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{now: time.Unix(1_000_000, 0)}
	m := newMemory(clk.Now)
	for range 1000 {
		if _, err := m.Allow(t.Context(), Check{Key: "k", Limit: Limit{Requests: 5, Window: time.Hour}}); err != nil {
			t.Fatal(err)
		}
		clk.Add(time.Millisecond)
	}
	sh := &m.shards[0]
	for i := range m.shards {
		if m.shards[i].keys["k"] != nil {
			sh = &m.shards[i]
		}
	}
	if got := len(sh.keys["k"].times); got != 5 {
		t.Fatalf("log holds %d slots, want 5 (= Requests)", got)
	}
	// A smaller limit on the same key keeps the newest entries that fit.
	d, err := m.Allow(t.Context(), Check{Key: "k", Limit: Limit{Requests: 2, Window: time.Hour}})
	if err != nil || d.Allowed || len(sh.keys["k"].times) != 2 {
		t.Fatalf("after shrinking the limit: %+v, %v, %d slots", d, err, len(sh.keys["k"].times))
	}
}
