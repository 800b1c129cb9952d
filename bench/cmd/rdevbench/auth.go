package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// authCost measures what the Redis-backed hot path costs a submit: two
// `rdev up` APIs (no worker, no streamer) on their own embedded NATS, one
// with the lookup cache and the per-key and per-project rate limiters in a
// local redis-server, one with the cache in process and no rate limits.
// Both authenticate every request with a project key. The rounds
// alternate between the two, so drift on a shared machine hits both.
func authCost(ctx context.Context, e *env, cfg config) ([]figure, error) {
	sock, err := startRedis(ctx, e)
	if err != nil {
		return nil, err
	}
	type side struct {
		name, base, key string
		lat             []time.Duration
		elapsed         time.Duration
	}
	var sides []*side
	for _, s := range []struct {
		name  string
		extra []string
	}{
		{"in-process cache, no rate limits", nil},
		{"Redis cache + Redis key and project rate limits", []string{"--redis-url", "unix://" + sock, "--key-rate-limit", "1000000", "--key-rate-window", "10s"}},
	} {
		dir, err := e.dataDir("auth")
		if err != nil {
			return nil, err
		}
		args := append([]string{"up", "--without", "worker,streamer", "--http-addr", "127.0.0.1:0", "--nats-addr", "127.0.0.1:0", "--data-dir", dir}, s.extra...)
		p, err := e.start(ctx, "auth-"+fmt.Sprint(len(sides)), args...)
		if err != nil {
			return nil, err
		}
		project := contracts.ProjectRequest{ID: "bench"}
		if s.extra != nil {
			project.RateLimit = &contracts.RateLimit{Requests: 1_000_000, WindowSeconds: 10}
		}
		admin := api(p.HTTP, adminKey)
		if _, err := admin.CreateProject(ctx, project); err != nil {
			return nil, fmt.Errorf("create project: %w", err)
		}
		k, err := admin.CreateKey(ctx, contracts.KeyRequest{Name: "bench", Scopes: []string{"project:bench:submit"}})
		if err != nil {
			return nil, fmt.Errorf("create key: %w", err)
		}
		sides = append(sides, &side{name: s.name, base: p.HTTP, key: k.Key})
	}

	const clients = 64 // enough to saturate the API on this machine: a closed loop with few clients measures latency, not throughput
	round := func(s *side, n int) error {
		c := api(s.base, s.key)
		var mu sync.Mutex
		var firstErr error
		work := make(chan struct{})
		var wg sync.WaitGroup
		t0 := time.Now()
		for range clients {
			wg.Go(func() {
				local := make([]time.Duration, 0, n/clients+1)
				for range work {
					start := time.Now()
					_, err := c.SubmitCommand(ctx, "bench", contracts.CommandRequest{Command: []string{"true"}})
					if err != nil {
						mu.Lock()
						firstErr = cmp.Or(firstErr, err)
						mu.Unlock()
						continue
					}
					local = append(local, time.Since(start))
				}
				mu.Lock()
				s.lat = append(s.lat, local...)
				mu.Unlock()
			})
		}
		for range n {
			work <- struct{}{}
		}
		close(work)
		wg.Wait()
		s.elapsed += time.Since(t0)
		return firstErr
	}
	// Warm both (connections, caches, JIT of the JetStream stores).
	for _, s := range sides {
		if err := round(s, min(1000, cfg.authRequests)); err != nil {
			return nil, err
		}
		s.lat, s.elapsed = nil, 0
	}
	for range 3 {
		for _, s := range sides {
			if err := round(s, cfg.authRequests); err != nil {
				return nil, err
			}
		}
	}
	var figs []figure
	rate := map[string]float64{}
	for _, s := range sides {
		slices.Sort(s.lat)
		rate[s.name] = float64(len(s.lat)) / s.elapsed.Seconds()
		figs = append(figs,
			fig("submits/s, "+s.name, rate[s.name], "req/s"),
			fig("submit p99, "+s.name, ms(pct(s.lat, 99)), "ms"))
	}
	cost := 1 - rate[sides[1].name]/rate[sides[0].name]
	figs = append(figs, target("throughput cost of Redis cache and limiters", cost*100, "%", "<=", 20))
	return figs, nil
}

// startRedis runs a redis-server without persistence on a unix socket in
// the scenario's directory and waits until it answers PING.
func startRedis(ctx context.Context, e *env) (string, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return "", errors.New("the auth scenario needs redis-server (apt-get install redis-server)")
	}
	dir, err := os.MkdirTemp("", "rdevbench-redis-") // short: unix socket paths are limited
	if err != nil {
		return "", err
	}
	sock := filepath.Join(dir, "redis.sock")
	logf, err := os.Create(filepath.Join(e.logs, "auth-redis.log"))
	if err != nil {
		return "", err
	}
	cmd := exec.Command(bin, "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return "", err
	}
	go func() { _ = cmd.Wait(); logf.Close(); os.RemoveAll(dir) }()
	e.cleanup = append(e.cleanup, func() { _ = cmd.Process.Kill() })
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		c, err := net.Dial("unix", sock)
		if err != nil {
			continue
		}
		_, _ = c.Write([]byte("PING\r\n"))
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if line == "+PONG\r\n" {
			return sock, nil
		}
	}
	return "", errors.New("redis-server did not answer within 10s")
}
