package worker_test

import (
	"context"
	"fmt"
	"io"
	"math"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/worker"
)

// Fairness between priorities holds across workers, not only within one:
// with a backlog at the high and at the low level, four workers together
// start one low job in every FairEvery (the configured share), within a
// few percent, for as long as the high level stays saturated. A slot kept
// for high priority (HighSlots) leaves that share unchanged, and so does a
// cap on the low level (PrioritySlots) that allows it.
func TestLowShareAcrossWorkers(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ fairEvery, highSlots, lowSlots int }{{4, 0, 0}, {10, 0, 0}, {10, 1, 0}, {10, 0, 1}} {
		fairEvery := c.fairEvery
		t.Run(fmt.Sprintf("fair-every-%d-high-slots-%d-low-slots-%d", fairEvery, c.highSlots, c.lowSlots), func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			const high, low, workers = 600, 300, 4
			for i := range high {
				j := newJob(fmt.Sprintf("h%d", i), "fair", "true")
				j.Priority = contracts.PriorityHigh
				b.submit(t, j)
			}
			for i := range low {
				j := newJob(fmt.Sprintf("l%d", i), "fair", "true")
				j.Priority = contracts.PriorityLow
				b.submit(t, j)
			}
			// Jobs take no time: the dispatch decisions, not the runs, set
			// the pace, which is where a share drifts if it can.
			exec := &scripted{step: func(context.Context, int, io.Writer) (int, error) { return 0, nil }}
			for range workers {
				cfg := worker.Config{Concurrency: 4, FairEvery: fairEvery, HighSlots: c.highSlots}
				if c.lowSlots > 0 {
					cfg.PrioritySlots = map[contracts.Priority]int{contracts.PriorityLow: c.lowSlots}
				}
				b.start(worker.WithExecutor(cfg, exec))
			}
			// Judge the first starts only: the high level is saturated
			// throughout them (600 high jobs, at most 3/4 of the starts).
			window := high / 2
			var starts []contracts.Event
			await.Within(t, 60*time.Second, "starts", func() bool {
				starts = b.events.started(window)
				return len(starts) >= window
			})
			lows := 0
			for _, ev := range starts[:window] {
				if ev.JobID[0] == 'l' {
					lows++
				}
			}
			share, want := float64(lows)/float64(window), 1/float64(fairEvery)
			t.Logf("low share of the first %d starts with %d workers: %.3f (configured %.3f)", window, workers, share, want)
			if math.Abs(share-want) > 0.03 {
				t.Fatalf("low share %.3f, configured %.3f: off by more than 3 points", share, want)
			}
		})
	}
}
