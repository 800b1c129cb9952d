package main

import (
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/api"
	"github.com/rdev-dev/rdev/services/streamer"
	"github.com/rdev-dev/rdev/services/worker"
)

// Without flags or environment, rdev up runs with the services' own
// defaults (and the topology's, from pkg/contracts): the flags take them
// from there.
func TestFlagDefaultsAreTheServices(t *testing.T) {
	var c cli
	parser, err := newParser(&c, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// An inherited RDEV_* variable would hide the default (not parallel:
	// t.Setenv restores it).
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "RDEV_") {
			t.Setenv(name, "")
			must(t, os.Unsetenv(name), "unset %s", name)
		}
	}
	if _, err := parser.Parse([]string{"up"}); err != nil {
		t.Fatal(err)
	}
	a, w, s := c.Up.API, c.Up.Worker, c.Up.Streamer
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"max-body-bytes", a.MaxBodyBytes, int64(api.DefaultMaxBodyBytes)},
		{"default-job-timeout", a.DefaultTimeout, api.DefaultJobTimeout},
		{"max-job-timeout", a.MaxTimeout, api.DefaultMaxJobTimeout},
		{"redis-timeout", a.RedisTimeout, api.DefaultRedisTimeout},
		{"key-rate-window", a.KeyRateWindow, api.DefaultKeyRateWindow},
		{"stream-token-ttl", a.StreamTokenTTL, api.DefaultTokenTTL},
		{"concurrency", w.Concurrency, worker.DefaultConcurrency},
		{"fair-every", w.FairEvery, worker.DefaultFairEvery},
		{"high-slots", w.HighSlots, worker.DefaultHighSlots},
		{"ack-wait", w.AckWait, worker.DefaultAckWait},
		{"drain-timeout", w.DrainTimeout, worker.DefaultDrainTimeout},
		{"kill-grace", w.KillGrace, worker.DefaultKillGrace},
		{"executor", w.Executor, worker.DefaultExecutor},
		{"retry-base", w.RetryBase, worker.DefaultRetryBase},
		{"retry-cap", w.RetryCap, worker.DefaultRetryCap},
		{"slot-delay", w.SlotDelay, worker.DefaultSlotDelay},
		{"kube-qps", w.K8s.KubeQPS, float32(worker.DefaultKubeQPS)},
		{"kube-burst", w.K8s.KubeBurst, worker.DefaultKubeBurst},
		{"pod-ready-timeout", w.K8s.PodReadyTimeout, worker.DefaultPodReadyTimeout},
		{"unavailable-delay", w.K8s.UnavailableDelay, worker.DefaultUnavailableDelay},
		{"sse-heartbeat", s.SSEHeartbeat, streamer.DefaultHeartbeat},
		{"cors-origin", s.CORSOrigins[0], streamer.DefaultAllowOrigin},
		{"sse-unavailable-after", s.UnavailableAfter, streamer.DefaultUnavailableAfter},
		{"output-max-age", c.Up.Topology.OutputMaxAge, contracts.DefaultOutputMaxAge},
		{"state-ttl", c.Up.Topology.StateTTL, contracts.DefaultStateTTL},
	} {
		if tc.got != tc.want {
			t.Errorf("--%s defaults to %v, want the service's %v", tc.name, tc.got, tc.want)
		}
	}
	for d, want := range map[time.Duration]string{24 * time.Hour: "24h", 10 * time.Minute: "10m", 90 * time.Second: "1m30s", 500 * time.Millisecond: "500ms"} {
		if got := duration(d); got != want {
			t.Errorf("duration(%s) = %q, want %q", d, got, want)
		}
	}
}
