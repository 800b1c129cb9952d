package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// tracingCost measures what tracing every job at 100% costs: two `rdev up`
// nodes, one exporting every span over OTLP/HTTP to a local collector that
// discards them (the sampler's default, parent-based always-on: every
// trace), one with tracing unconfigured (ids propagate, nothing is
// recorded). Submit throughput is measured on APIs alone (as in the auth
// scenario), lines/s on full nodes; rounds alternate so drift hits both.
func tracingCost(ctx context.Context, e *env, cfg config) ([]figure, error) {
	collector, spans, err := discardingCollector(e)
	if err != nil {
		return nil, err
	}
	type side struct {
		name, api, full string
		submits         int
		elapsed         time.Duration
		rates, lines    []float64 // per round
	}
	sides := []*side{{name: "tracing off"}, {name: "tracing on (100%, OTLP)"}}
	for i, s := range sides {
		var extra []string
		if i == 1 {
			extra = []string{"--otlp-endpoint", collector}
		}
		for _, role := range []string{"api", "full"} {
			dir, err := e.dataDir("tracing")
			if err != nil {
				return nil, err
			}
			args := []string{"up", "--http-addr", "127.0.0.1:0", "--nats-addr", "127.0.0.1:0", "--data-dir", dir}
			if role == "api" {
				args = append(args, "--without", "worker,streamer")
			}
			p, err := e.start(ctx, fmt.Sprintf("tracing-%d-%s", i, role), append(args, extra...)...)
			if err != nil {
				return nil, err
			}
			if _, err := api(p.HTTP, adminKey).CreateProject(ctx, contracts.ProjectRequest{ID: "bench"}); err != nil {
				return nil, fmt.Errorf("create project: %w", err)
			}
			if role == "api" {
				s.api = p.HTTP
			} else {
				s.full = p.HTTP
			}
		}
	}

	const clients = 64
	submits := func(s *side, n int) error {
		c := api(s.api, adminKey)
		var failed atomic.Value
		work := make(chan struct{})
		var wg sync.WaitGroup
		t0 := time.Now()
		for range clients {
			wg.Go(func() {
				for range work {
					if _, err := c.SubmitCommand(ctx, "bench", contracts.CommandRequest{Command: []string{"true"}}); err != nil {
						failed.CompareAndSwap(nil, err)
					}
				}
			})
		}
		for range n {
			work <- struct{}{}
		}
		close(work)
		wg.Wait()
		s.elapsed += time.Since(t0)
		s.submits += n
		s.rates = append(s.rates, float64(n)/time.Since(t0).Seconds())
		if err, _ := failed.Load().(error); err != nil {
			return err
		}
		return nil
	}
	lines := func(s *side, n int) error {
		a, err := submit(ctx, s.full, "bench", []string{"seq", "1", strconv.Itoa(n)}, time.Hour)
		if err != nil {
			return err
		}
		st, err := follow(ctx, s.full, a.EventsURL)
		if err != nil {
			return err
		}
		defer st.Close()
		var first, last time.Time
		got := 0
		for {
			ev, err := st.Next()
			if err != nil {
				return fmt.Errorf("stream ended after %d lines: %w", got, err)
			}
			if ev.Name == contracts.SSEOutput {
				last = time.Now()
				if got == 0 {
					first = last
				}
				got++
			}
			if ev.Name == contracts.SSEComplete {
				break
			}
		}
		if got != n {
			return fmt.Errorf("client got %d lines, want %d", got, n)
		}
		s.lines = append(s.lines, float64(n)/last.Sub(first).Seconds())
		return nil
	}

	n := cfg.authRequests / 2
	for _, s := range sides { // warm-up
		if err := submits(s, min(1000, n)); err != nil {
			return nil, err
		}
		if err := lines(s, min(10_000, cfg.lines)); err != nil {
			return nil, err
		}
		s.submits, s.elapsed, s.lines, s.rates = 0, 0, nil, nil
	}
	const rounds = 5
	for range rounds {
		for _, s := range sides {
			if err := submits(s, n); err != nil {
				return nil, err
			}
			if err := lines(s, cfg.lines/5); err != nil {
				return nil, err
			}
		}
	}
	// The machine is shared: each round's on/off pair ran back to back, so
	// the cost is the median of the rounds' ratios.
	costs := func(get func(*side) []float64) float64 {
		var r []float64
		for i := range rounds {
			r = append(r, 1-get(sides[1])[i]/get(sides[0])[i])
		}
		return median(r) * 100
	}
	var figs []figure
	for _, s := range sides {
		figs = append(figs, fig("submits/s, "+s.name+" (all rounds)", float64(s.submits)/s.elapsed.Seconds(), "req/s"),
			fig("lines/s at the SSE client, "+s.name+" (median round)", median(s.lines), "lines/s"))
	}
	figs = append(figs,
		fig("OTLP trace export requests received by the collector", float64(spans.Load()), "count"),
		target("submit throughput cost of tracing (median of rounds)", costs(func(s *side) []float64 { return s.rates }), "%", "<=", 10),
		target("lines/s cost of tracing (median of rounds)", costs(func(s *side) []float64 { return s.lines }), "%", "<=", 10))
	return figs, nil
}

// discardingCollector is an OTLP/HTTP endpoint that reads and drops every
// export (an empty protobuf body is a valid, successful reply) and counts
// the trace exports.
func discardingCollector(e *env) (string, *atomic.Int64, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	var traces atomic.Int64
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/v1/traces" {
			traces.Add(1)
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	})}
	go func() { _ = srv.Serve(ln) }()
	e.cleanup = append(e.cleanup, func() { srv.Close() })
	return "http://" + ln.Addr().String(), &traces, nil
}

// median is the middle value of v (the upper one of an even count).
func median(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}
