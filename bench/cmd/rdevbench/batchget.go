package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/rdev-dev/rdev/pkg/client"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// batchGet measures GET /v1/batches/{id} on a batch of cfg.queueJobs
// no-op jobs while it drains (under load: the worker runs them at full
// speed on the same machine), beside, in the same run and under the same
// load, GET /v1/jobs/{id} (one state read, the floor of any call) and
// reading every job's state through the batch's pages of 1,000 (the work
// the call did on every request before the counts were kept per batch).
// Four clients poll in a closed loop, the requests in turn; the
// batch with ?limit=1 isolates the counts' cost from the page's.
func batchGet(ctx context.Context, e *env, cfg config) ([]figure, error) {
	dir, err := e.dataDir("batchget")
	if err != nil {
		return nil, err
	}
	up, err := e.start(ctx, "batchget-up", "up", "--http-addr", "127.0.0.1:0", "--nats-addr", "127.0.0.1:0",
		"--data-dir", dir, "--concurrency", fmt.Sprint(queueConcurrency))
	if err != nil {
		return nil, err
	}
	figs := []figure{loadFigure("load average (1 min) at start")}
	n := cfg.queueJobs
	items := make([]contracts.BatchItem, n)
	for i := range items {
		items[i] = contracts.BatchItem{Command: []string{"true"}}
	}
	r, err := postBatch(ctx, up.HTTP, "bench", items)
	if err != nil {
		return nil, err
	}
	if r.Accepted != n {
		return nil, fmt.Errorf("batch accepted %d of %d jobs", r.Accepted, n)
	}
	c := api(up.HTTP, adminKey)
	one := r.Items[n/2].JobID
	var mu sync.Mutex
	var batchLat, countLat, jobLat, allLat []time.Duration
	var firstErr error
	var done bool
	var final contracts.BatchStatus
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				mu.Lock()
				stop := done || firstErr != nil
				mu.Unlock()
				if stop || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				st, err := c.Batch(ctx, r.BatchID, client.Page{})
				bl := time.Since(t0)
				t0 = time.Now()
				_, cerr := c.Batch(ctx, r.BatchID, client.Page{Limit: 1})
				cl := time.Since(t0)
				t0 = time.Now()
				_, jerr := c.Job(ctx, one)
				jl := time.Since(t0)
				var al time.Duration
				var aerr error
				if (i+w)%8 == 0 { // the old work is slow: sample it less
					t0 = time.Now()
					aerr = readAllStates(ctx, c, r.BatchID, n)
					al = time.Since(t0)
				}
				mu.Lock()
				switch {
				case err != nil || cerr != nil || jerr != nil || aerr != nil:
					firstErr = cmp.Or(err, cerr, jerr, aerr)
				default:
					batchLat, countLat, jobLat = append(batchLat, bl), append(countLat, cl), append(jobLat, jl)
					if al > 0 {
						allLat = append(allLat, al)
					}
					if st.Counts[contracts.StatusSucceeded] == n {
						done, final = true, st
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if final.Counts[contracts.StatusSucceeded] != n {
		return nil, fmt.Errorf("batch counts %v, want %d succeeded", final.Counts, n)
	}
	slices.Sort(batchLat)
	slices.Sort(countLat)
	slices.Sort(jobLat)
	slices.Sort(allLat)
	figs = append(figs,
		fig(fmt.Sprintf("GET batch of %d jobs while it drains: calls", n), float64(len(batchLat)), ""),
		fig("GET batch p50 (counts + a page of 100 states)", ms(pct(batchLat, 50)), "ms"),
		target("GET batch p99 (counts + a page of 100 states)", ms(pct(batchLat, 99)), "ms", "<=", 50),
		fig("GET batch ?limit=1 p50 (counts + one state)", ms(pct(countLat, 50)), "ms"),
		fig("GET batch ?limit=1 p99 (counts + one state)", ms(pct(countLat, 99)), "ms"),
		fig("baseline: GET job p50 (one state read)", ms(pct(jobLat, 50)), "ms"),
		fig("baseline: GET job p99 (one state read)", ms(pct(jobLat, 99)), "ms"),
		fig(fmt.Sprintf("old work per call: every state of the batch (%d pages of 1,000) p50", (n+999)/1000), ms(pct(allLat, 50)), "ms"),
		fig(fmt.Sprintf("old work per call: every state of the batch (%d pages of 1,000) p99", (n+999)/1000), ms(pct(allLat, 99)), "ms"),
		loadFigure("load average (1 min) at end"))
	return figs, nil
}

// readAllStates reads every job state of a batch through its pages.
func readAllStates(ctx context.Context, c *client.Client, id string, n int) error {
	got := 0
	for p := (client.Page{Limit: 1000}); ; {
		st, err := c.Batch(ctx, id, p)
		if err != nil {
			return err
		}
		got += len(st.Jobs)
		if st.NextCursor == "" {
			break
		}
		p.Cursor = st.NextCursor
	}
	if got != n {
		return fmt.Errorf("read %d of %d job states", got, n)
	}
	return nil
}
