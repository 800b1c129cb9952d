package retry_test

import (
	"testing"
	"time"

	"github.com/rdev-dev/rdev/services/notifier/internal/retry"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		status  int
		refused bool
		want    retry.Verdict
	}{
		{200, false, retry.Success}, {204, false, retry.Success}, {0, false, retry.Retry}, {0, true, retry.Fail},
		{301, false, retry.Fail}, {302, false, retry.Fail}, {400, false, retry.Fail}, {404, false, retry.Fail},
		{408, false, retry.Retry}, {410, false, retry.Gone}, {429, false, retry.Retry}, {500, false, retry.Retry}, {503, false, retry.Retry},
	} {
		if got := retry.Classify(c.status, c.refused); got != c.want {
			t.Errorf("Classify(%d, %v) = %d, want %d", c.status, c.refused, got, c.want)
		}
	}
}

func TestSchedule(t *testing.T) {
	t.Parallel()
	p := retry.Policy{Schedule: retry.DefaultSchedule, Bound: 72 * time.Hour}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0
	var waits []time.Duration
	for n := 1; ; n++ {
		at, ok := p.Next(t0, now, n, 0)
		if !ok {
			break
		}
		waits = append(waits, at.Sub(now))
		now = at
	}
	want := []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour}
	for i, w := range want {
		if waits[i] != w {
			t.Fatalf("wait %d = %s, want %s (all: %v)", i+1, waits[i], w, waits)
		}
	}
	if total := now.Sub(t0); total > 72*time.Hour || total < 62*time.Hour {
		t.Errorf("retries span %s, want up to the 72h bound", total)
	}
	if at, ok := p.Next(t0, t0, 1, time.Hour); !ok || at.Sub(t0) != time.Hour {
		t.Errorf("Retry-After 1h: %s", at.Sub(t0))
	}
	j := retry.Policy{Schedule: []time.Duration{100 * time.Second}, Bound: time.Hour, Jitter: 0.2}
	for range 100 {
		at, _ := j.Next(t0, t0, 1, 0)
		if d := at.Sub(t0); d < 80*time.Second || d > 120*time.Second {
			t.Fatalf("jittered wait %s outside ±20%%", d)
		}
	}
}
