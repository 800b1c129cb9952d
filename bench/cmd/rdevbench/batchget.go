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
// load, GET /v1/jobs/{id} (one state read, the floor of any call). Four
// clients poll in a closed loop, the requests in turn; the batch with
// ?limit=1 isolates the counts' cost from the page's.
//
// A second batch then drains the same way while a fifth client reads
// every job state of it through pages of 1,000 without pause: the work
// the call did on every request before the counts were kept per batch,
// and a heavier load than the drain alone. Its figures are reported
// apart, so that the target is judged under the load it names and the
// heavier one stays in view.
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
	n := cfg.queueJobs
	figs := []figure{loadFigure("load average (1 min) at start")}
	alone, err := pollBatch(ctx, up.HTTP, n, false)
	if err != nil {
		return nil, err
	}
	figs = append(figs,
		fig(fmt.Sprintf("GET batch of %d jobs while it drains: calls", n), float64(len(alone.batch)), ""),
		fig("GET batch p50 (counts + a page of 100 states)", ms(pct(alone.batch, 50)), "ms"),
		target("GET batch p99 (counts + a page of 100 states)", ms(pct(alone.batch, 99)), "ms", "<=", 50),
		fig("GET batch ?limit=1 p50 (counts + one state)", ms(pct(alone.counts, 50)), "ms"),
		fig("GET batch ?limit=1 p99 (counts + one state)", ms(pct(alone.counts, 99)), "ms"),
		fig("baseline: GET job p50 (one state read)", ms(pct(alone.job, 50)), "ms"),
		fig("baseline: GET job p99 (one state read)", ms(pct(alone.job, 99)), "ms"),
		loadFigure("load average (1 min) after the first batch"))
	heavy, err := pollBatch(ctx, up.HTTP, n, true)
	if err != nil {
		return nil, err
	}
	pages := (n + 999) / 1000
	figs = append(figs,
		fig(fmt.Sprintf("beside a client reading every state: GET batch of %d jobs: calls", n), float64(len(heavy.batch)), ""),
		fig("beside a client reading every state: GET batch p50", ms(pct(heavy.batch, 50)), "ms"),
		fig("beside a client reading every state: GET batch p99", ms(pct(heavy.batch, 99)), "ms"),
		fig("beside a client reading every state: GET job p50 (one state read)", ms(pct(heavy.job, 50)), "ms"),
		fig("beside a client reading every state: GET job p99 (one state read)", ms(pct(heavy.job, 99)), "ms"),
		fig(fmt.Sprintf("old work per call: every state of the batch (%d pages of 1,000): reads", pages), float64(len(heavy.all)), ""),
		fig(fmt.Sprintf("old work per call: every state of the batch (%d pages of 1,000) p50", pages), ms(pct(heavy.all, 50)), "ms"),
		fig(fmt.Sprintf("old work per call: every state of the batch (%d pages of 1,000) p99", pages), ms(pct(heavy.all, 99)), "ms"),
		loadFigure("load average (1 min) at end"))
	return figs, nil
}

// batchPolls are the sorted latencies of one polled batch.
type batchPolls struct {
	batch, counts, job, all []time.Duration
}

// pollBatch submits a batch of n no-op jobs and polls it with four
// clients until every job has succeeded; with fullReader a fifth client
// reads every state of the batch, over and over, meanwhile.
func pollBatch(ctx context.Context, base string, n int, fullReader bool) (batchPolls, error) {
	var p batchPolls
	items := make([]contracts.BatchItem, n)
	for i := range items {
		items[i] = contracts.BatchItem{Command: []string{"true"}}
	}
	r, err := postBatch(ctx, base, "bench", items)
	if err != nil {
		return p, err
	}
	if r.Accepted != n {
		return p, fmt.Errorf("batch accepted %d of %d jobs", r.Accepted, n)
	}
	c := api(base, adminKey)
	one := r.Items[n/2].JobID
	var mu sync.Mutex
	var firstErr error
	var done bool
	var final contracts.BatchStatus
	stopped := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return done || firstErr != nil || ctx.Err() != nil
	}
	fail := func(err error) {
		mu.Lock()
		firstErr = cmp.Or(firstErr, err)
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for !stopped() {
				t0 := time.Now()
				st, err := c.Batch(ctx, r.BatchID, client.Page{})
				bl := time.Since(t0)
				t0 = time.Now()
				_, cerr := c.Batch(ctx, r.BatchID, client.Page{Limit: 1})
				cl := time.Since(t0)
				t0 = time.Now()
				_, jerr := c.Job(ctx, one)
				jl := time.Since(t0)
				if err := cmp.Or(err, cerr, jerr); err != nil {
					fail(err)
					return
				}
				mu.Lock()
				p.batch, p.counts, p.job = append(p.batch, bl), append(p.counts, cl), append(p.job, jl)
				if st.Counts[contracts.StatusSucceeded] == n {
					done, final = true, st
				}
				mu.Unlock()
			}
		})
	}
	if fullReader {
		wg.Go(func() {
			for !stopped() {
				t0 := time.Now()
				if err := readAllStates(ctx, c, r.BatchID, n); err != nil {
					fail(err)
					return
				}
				al := time.Since(t0)
				mu.Lock()
				p.all = append(p.all, al)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return p, firstErr
	}
	if final.Counts[contracts.StatusSucceeded] != n {
		return p, fmt.Errorf("batch counts %v, want %d succeeded", final.Counts, n)
	}
	if fullReader && len(p.all) == 0 {
		return p, fmt.Errorf("the batch of %d jobs ended before every state was read once", n)
	}
	for _, l := range [][]time.Duration{p.batch, p.counts, p.job, p.all} {
		slices.Sort(l)
	}
	return p, nil
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
