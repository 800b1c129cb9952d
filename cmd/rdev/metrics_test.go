package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology/natsserver"
	"github.com/rdev-dev/rdev/services/api/redistest"
)

// scrape reads GET /metrics.
func scrape(t testing.TB, base string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	must(t, err, "GET /metrics")
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d", resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	must(t, err, "parse /metrics")
	return fams
}

// value sums the samples of family name whose labels include want.
func value(fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	f, ok := fams[name]
	if !ok {
		return -1
	}
	var sum float64
next:
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(want); i += 2 {
			if labels[want[i]] != want[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum
}

// TestMetricsAfterKnownWorkload runs three jobs, one refused key and one
// rate-limited request against rdev up with Redis, and checks the exact
// counts at /metrics; then that every metric the Grafana dashboard and the
// alert rules use is exported.
func TestMetricsAfterKnownWorkload(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	n := startInProcess(t, "--redis-url", rs.URL(), "--priority-slots", "low=2")

	// One failed authentication, one request over a key's rate limit.
	req, _ := http.NewRequest(http.MethodGet, n.http+"/v1/projects", nil)
	req.Header.Set("Authorization", "Bearer rdev_nope_"+strings.Repeat("x", 43))
	resp, err := http.DefaultClient.Do(req)
	must(t, err, "unauthenticated request")
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bad key: %d, want 401", resp.StatusCode)
	}
	s, kb := call(t, http.MethodPost, n.http+"/v1/keys", map[string]any{"name": "limited", "scopes": []string{"read"},
		"rate_limit": map[string]int{"requests": 1, "window_seconds": 60}})
	if s != http.StatusCreated {
		t.Fatalf("create key: %d %s", s, kb)
	}
	var key contracts.Key
	must(t, json.Unmarshal(kb, &key), "decode key")
	var codes []int
	for range 2 {
		req, _ := http.NewRequest(http.MethodGet, n.http+"/v1/projects", nil)
		req.Header.Set("Authorization", "Bearer "+key.Key)
		resp, err := http.DefaultClient.Do(req)
		must(t, err, "limited request")
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
	}
	if !slices.Equal(codes, []int{http.StatusOK, http.StatusTooManyRequests}) {
		t.Fatalf("limited key: %v, want [200 429]", codes)
	}

	jobs := []map[string]any{
		{"command": []string{"sh", "-c", "printf 'a\\nb\\n'"}, "priority": "high"},
		{"command": []string{"sh", "-c", "echo x; exit 3"}, "priority": "normal"},
		{"command": []string{"sh", "-c", "echo c; echo e >&2"}, "priority": "low"},
	}
	for _, j := range jobs {
		r := submit(t, n.http, "metered", j)
		watch(t, n.http, r.EventsURL)
		waitFinal(t, n.http, r.JobID, 30*time.Second)
	}

	want := []struct {
		name   string
		labels []string
		value  float64
	}{
		{"rdev_api_jobs_submitted_total", []string{"priority", "high", "kind", "exec"}, 1},
		{"rdev_api_jobs_submitted_total", []string{"priority", "normal"}, 1},
		{"rdev_api_jobs_submitted_total", []string{"priority", "low"}, 1},
		{"rdev_api_auth_failures_total", []string{"status", "401"}, 1},
		{"rdev_api_ratelimit_rejections_total", nil, 1},
		{"rdev_queue_dispatches_total", []string{"priority", "high"}, 1},
		{"rdev_queue_dispatches_total", nil, 3},
		{"rdev_jobs_started_total", nil, 3},
		{"rdev_jobs_finished_total", []string{"status", "succeeded"}, 2},
		{"rdev_jobs_finished_total", []string{"status", "failed", "priority", "normal"}, 1},
		{"rdev_job_duration_seconds", nil, 3},
		{"rdev_job_dispatch_latency_seconds", nil, 3},
		{"rdev_jobs_retries_total", nil, 0},
		{"rdev_jobs_dead_letters_total", nil, 0},
		{"rdev_output_lines_total", []string{"fd", "stdout"}, 4},
		{"rdev_output_lines_total", []string{"fd", "stderr"}, 1},
		{"rdev_output_bytes_total", nil, 5},
		{"rdev_output_publish_errors_total", nil, 0},
		{"rdev_sse_events_total", []string{"kind", "output"}, 5},
		{"rdev_sse_events_total", []string{"kind", "status"}, 6}, // queued and started per job
		{"rdev_sse_events_total", []string{"kind", "complete"}, 3},
		{"rdev_sse_connections", nil, 0},
		{"rdev_sse_clients_dropped_total", nil, 0},
		{"rdev_queue_depth", nil, 0},
		{"rdev_queue_oldest_age_seconds", nil, 0},
		{"rdev_worker_jobs_active", nil, 0},
		{"rdev_worker_slots", []string{"kind", "shared"}, 4},
		{"rdev_worker_slots", []string{"kind", "high"}, 1},
		{"rdev_worker_priority_slots", []string{"priority", "low"}, 2},
		{"rdev_breaker_state", []string{"dependency", "redis_ratelimit"}, 0},
		{"rdev_breaker_state", []string{"dependency", "redis_cache"}, 0},
		{"rdev_dependency_degraded_total", nil, 0},
		{"rdev_nats_reconnects_total", nil, 0},
	}
	var fams map[string]*dto.MetricFamily
	var wrong []string
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_ = await.Poll(ctx, func() bool { // on a timeout, each wrong value is an error below
		fams = scrape(t, n.http)
		wrong = wrong[:0]
		for _, w := range want {
			if got := value(fams, w.name, w.labels...); got != w.value {
				wrong = append(wrong, fmt.Sprintf("%s%v = %v, want %v", w.name, w.labels, got, w.value))
			}
		}
		return len(wrong) == 0
	})
	for _, w := range wrong {
		t.Error(w)
	}
	if value(fams, "http_server_request_duration_seconds", "http_route", "/v1/projects/:project/commands", "http_response_status_code", "202") != 3 {
		t.Error("http.server.request.duration lacks the 3 submits under their route")
	}

	// Every metric the operator artefacts use is exported.
	for _, name := range artefactMetrics(t) {
		if _, ok := fams[name]; !ok {
			t.Errorf("dashboard or alert rules use %s, which /metrics does not export", name)
		}
	}
}

var metricName = regexp.MustCompile(`\b(rdev|http_server)_[a-z_]+\b`)

// artefactMetrics returns the metric families used by the Grafana
// dashboard's queries and the alert rules' expressions, after checking
// that both files are well formed.
func artefactMetrics(t testing.TB) []string {
	t.Helper()
	var exprs []string
	raw, err := os.ReadFile("../../deploy/grafana/rdev-dashboard.json")
	must(t, err, "read dashboard")
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	must(t, json.Unmarshal(raw, &dash), "parse dashboard")
	if dash.Title == "" || len(dash.Panels) == 0 {
		t.Fatal("dashboard has no title or panels")
	}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}

	raw, err = os.ReadFile("../../deploy/prometheus/rdev-alerts.yaml")
	must(t, err, "read alert rules")
	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true)
	must(t, dec.Decode(&rules), "parse alert rules")
	alerts := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("rule %+v: want alert, expr, labels.severity and annotations.summary", r)
			}
			if r.For != "" {
				if _, err := model.ParseDuration(r.For); err != nil {
					t.Errorf("rule %s: for %q: %v", r.Alert, r.For, err)
				}
			}
			alerts[r.Alert] = true
			exprs = append(exprs, r.Expr)
		}
	}
	for _, a := range []string{"RdevQueueAgeHigh", "RdevDeadLettersGrowing", "RdevWorkersAbsent", "RdevBreakerOpen"} {
		if !alerts[a] {
			t.Errorf("alert %s missing", a)
		}
	}

	seen := map[string]bool{}
	for _, e := range exprs {
		for _, m := range metricName.FindAllString(e, -1) {
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				if base, ok := strings.CutSuffix(m, suffix); ok && strings.HasSuffix(base, "_seconds") {
					m = base
				}
			}
			seen[m] = true
		}
	}
	names := make([]string, 0, len(seen))
	for m := range seen {
		names = append(names, m)
	}
	sort.Strings(names)
	return names
}

// TestReadyzFollowsNATS runs a worker alone with --http-addr against an
// external NATS server, stops the server and starts it again on the same
// port and storage: /readyz goes 503 and back to 200, and the reconnect
// is counted.
func TestReadyzFollowsNATS(t *testing.T) {
	t.Parallel()
	store := t.TempDir()
	srv, err := natsserver.Start(natsserver.Config{Addr: "127.0.0.1:0", StoreDir: store})
	must(t, err, "start NATS")
	addr := srv.Addr().(*net.TCPAddr)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			srv.Shutdown()
			srv.WaitForShutdown()
		}
	})

	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	logs := &logWriter{t: t}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"worker", "--nats-url", srv.ClientURL(), "--http-addr", "127.0.0.1:0",
			"--data-dir", t.TempDir(), "--drain-timeout", "1s"}, pw, logs)
		pw.Close()
	}()
	n := readReady(t, pr, done)
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("worker did not stop")
		}
		logs.close()
	})

	ready := func() int {
		resp, err := http.Get(n.http + "/readyz")
		must(t, err, "GET /readyz")
		resp.Body.Close()
		return resp.StatusCode
	}
	waitReady := func(want int) {
		t.Helper()
		await.Within(t, 15*time.Second, fmt.Sprintf("/readyz to answer %d", want), func() bool { return ready() == want })
	}
	waitReady(http.StatusOK)
	// The worker reports its slots once it takes jobs.
	await.Within(t, 10*time.Second, "rdev_worker_slots to become 4", func() bool {
		return value(scrape(t, n.http), "rdev_worker_slots", "kind", "shared") == 4
	})

	srv.Shutdown()
	srv.WaitForShutdown()
	stopped = true
	waitReady(http.StatusServiceUnavailable)

	srv, err = natsserver.Start(natsserver.Config{Addr: addr.String(), StoreDir: store})
	must(t, err, "restart NATS")
	stopped = false
	waitReady(http.StatusOK)
	var c, w float64
	reconnected, cancelReconnected := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancelReconnected()
	if await.Poll(reconnected, func() bool {
		fams := scrape(t, n.http)
		c, w = value(fams, "rdev_nats_reconnects_total", "connection", "control"), value(fams, "rdev_nats_reconnects_total", "connection", "worker")
		return c == 1 && w == 1
	}) != nil {
		t.Fatalf("rdev_nats_reconnects_total control=%v worker=%v, want 1 and 1", c, w)
	}
}
