package api_test

import (
	"bytes"
	"context"
	"flag"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/services/api"
	"github.com/rdev-dev/rdev/services/api/redistest"
)

var (
	profileSubmits = flag.Int("submit-profile", 0, "TestSubmitProfile: submits to send (0 skips it); run with -cpuprofile")
	profileRedis   = flag.Bool("submit-profile-redis", false, "TestSubmitProfile: the Redis cache and key and project limits, else in process without limits")
)

// TestSubmitProfile is a load to profile, not a check: authenticated
// submits from 32 clients, with the hot path in Redis or in process
// (docs/performance.md, the auth scenario's profile). Run it alone:
//
//	go test -run TestSubmitProfile -submit-profile 20000 [-submit-profile-redis] -cpuprofile cpu.out .
func TestSubmitProfile(t *testing.T) {
	if *profileSubmits == 0 {
		t.Skip("a profiling load: -submit-profile N runs it")
	}
	cfg := api.Config{MaxBodyBytes: 64 << 10, RedisTimeout: 5 * time.Second}
	// redisCPU is redis-server's CPU time so far (0 without Redis): it
	// runs the scripts, outside the profile.
	redisCPU := func() time.Duration { return 0 }
	if *profileRedis {
		rs := redistest.Start(t)
		cfg.RedisURL = rs.URL()
		rc := rs.Client(t)
		redisCPU = func() time.Duration {
			info, err := rc.InfoMap(context.Background(), "cpu").Result()
			if err != nil {
				t.Fatal(err)
			}
			var total float64
			for _, f := range []string{"used_cpu_sys", "used_cpu_user"} {
				v, _ := strconv.ParseFloat(info["CPU"][f], 64)
				total += v
			}
			return time.Duration(total * float64(time.Second))
		}
	}
	b := setupWith(t, cfg, nil)
	key := `{"name":"prof","scopes":["project:demo:submit"]}`
	if *profileRedis {
		if resp, rb := b.do(t, http.MethodPatch, "/v1/projects/demo", "application/json", []byte(`{"rate_limit":{"requests":1000000,"window_seconds":10}}`)); resp.StatusCode != http.StatusOK {
			t.Fatalf("project limit: %d %s", resp.StatusCode, rb)
		}
		key = `{"name":"prof","scopes":["project:demo:submit"],"rate_limit":{"requests":1000000,"window_seconds":10}}`
	}
	k := b.newKey(t, key)
	// A plain client: the bundle's checks every reply against the spec.
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	work := make(chan struct{})
	var wg sync.WaitGroup
	t0, cpu0 := time.Now(), redisCPU()
	for range 32 {
		wg.Go(func() {
			for range work {
				req, _ := http.NewRequest(http.MethodPost, b.url+"/v1/projects/demo/commands", bytes.NewReader([]byte(`{"command":["true"]}`)))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+k.Key)
				resp, err := hc.Do(req)
				if err != nil {
					t.Error(err)
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted {
					t.Errorf("submit: %d", resp.StatusCode)
				}
			}
		})
	}
	for range *profileSubmits {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	hc.CloseIdleConnections()
	t.Logf("%d submits in %s: %.0f/s; redis-server CPU %s per submit", *profileSubmits, time.Since(t0).Round(time.Millisecond),
		float64(*profileSubmits)/time.Since(t0).Seconds(), (redisCPU()-cpu0)/time.Duration(*profileSubmits))
}
