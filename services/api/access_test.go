package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
	"github.com/rdev-dev/rdev/services/api"
	"github.com/rdev-dev/rdev/services/api/redistest"
)

// newKey creates a key through the API with the admin key.
func (b bundle) newKey(t *testing.T, body string) contracts.Key {
	t.Helper()
	resp, rb := b.post(t, "/v1/keys", "application/json", []byte(body))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create key: %d %s", resp.StatusCode, rb)
	}
	var k contracts.Key
	if err := json.Unmarshal(rb, &k); err != nil || !strings.HasPrefix(k.Key, "rdev_"+k.ID+"_") || bytes.Contains(rb, []byte(`"hash"`)) {
		t.Fatalf("key reply %s (%v): want the secret once and no hash", rb, err)
	}
	return k
}

func errCode(t *testing.T, body []byte) string {
	t.Helper()
	var eb contracts.ErrorBody
	if err := json.Unmarshal(body, &eb); err != nil || eb.Error.Message == "" {
		t.Fatalf("not an error body: %s", body)
	}
	return eb.Error.Code
}

func bearer(k string) []string { return []string{"Authorization", "Bearer " + k} }

// Every refusal the issue lists, each with its status and code, and none
// of them queues anything.
func TestAuthRefusals(t *testing.T) {
	t.Parallel()
	b := setup(t)
	submit := []byte(`{"command":["true"]}`)
	alpha := b.newKey(t, `{"name":"demo ci","scopes":["project:demo:submit","project:demo:read"]}`)
	readOnly := b.newKey(t, `{"name":"ro","scopes":["project:demo:read"]}`)
	walled := b.newKey(t, `{"name":"net","scopes":["admin"],"allowed_ips":["10.0.0.0/8"]}`)
	revoked := b.newKey(t, `{"name":"gone","scopes":["admin"]}`)
	if resp, rb := b.do(t, http.MethodDelete, "/v1/keys/"+revoked.ID, "", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke: %d %s", resp.StatusCode, rb)
	}
	// A job of project "other", for reads across projects.
	resp, rb := b.post(t, "/v1/projects/other/commands", "application/json", submit)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("admin submit: %d %s", resp.StatusCode, rb)
	}
	var otherJob contracts.SubmitResponse
	_ = json.Unmarshal(rb, &otherJob)
	queued := natstest.Msgs(t, b.js, contracts.StreamJobs)

	for _, tc := range []struct {
		name, method, path string
		header             []string
		body               []byte
		status             int
		code               string
	}{
		{"no key", "POST", "/v1/projects/demo/commands", []string{"Authorization", ""}, submit, 401, "missing_api_key"},
		{"not bearer", "POST", "/v1/projects/demo/commands", []string{"Authorization", "Basic " + alpha.Key}, submit, 401, "missing_api_key"},
		{"garbled key", "POST", "/v1/projects/demo/commands", bearer("rdev_%%%_zz"), submit, 401, "invalid_api_key"},
		{"wrong secret", "POST", "/v1/projects/demo/commands", bearer(alpha.Key + "x"), submit, 401, "invalid_api_key"},
		{"revoked key", "POST", "/v1/projects/demo/commands", bearer(revoked.Key), submit, 401, "revoked_api_key"},
		{"forbidden IP", "POST", "/v1/projects/demo/commands", bearer(walled.Key), submit, 403, "ip_not_allowed"},
		{"forged X-Forwarded-For", "POST", "/v1/projects/demo/commands", append(bearer(walled.Key), "X-Forwarded-For", "10.1.2.3"), submit, 403, "ip_not_allowed"},
		{"forged X-Real-IP", "POST", "/v1/projects/demo/commands", append(bearer(walled.Key), "X-Real-IP", "10.1.2.3"), submit, 403, "ip_not_allowed"},
		{"other project submit", "POST", "/v1/projects/other/commands", bearer(alpha.Key), submit, 403, "forbidden"},
		{"read-only submit", "POST", "/v1/projects/demo/commands", bearer(readOnly.Key), submit, 403, "forbidden"},
		{"other project's job", "GET", "/v1/jobs/" + otherJob.JobID, bearer(alpha.Key), nil, 404, "job_not_found"},
		{"other project", "GET", "/v1/projects/other", bearer(alpha.Key), nil, 403, "forbidden"},
		{"other project's audit", "GET", "/v1/projects/other/audit", bearer(alpha.Key), nil, 403, "forbidden"},
		{"global audit", "GET", "/v1/audit", bearer(alpha.Key), nil, 403, "forbidden"},
		{"list keys", "GET", "/v1/keys", bearer(alpha.Key), nil, 403, "forbidden"},
		{"create key", "POST", "/v1/keys", bearer(alpha.Key), []byte(`{"name":"x","scopes":["admin"]}`), 403, "forbidden"},
		{"create project", "POST", "/v1/projects", bearer(alpha.Key), []byte(`{"id":"mine"}`), 403, "forbidden"},
		{"unknown project (admin)", "POST", "/v1/projects/nowhere/commands", nil, submit, 404, "project_not_found"},
		{"oversized body", "POST", "/v1/projects/demo/commands", nil, []byte(`{"command":["` + strings.Repeat("a", 70<<10) + `"]}`), 413, "body_too_large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ct := ""
			if tc.body != nil {
				ct = "application/json"
			}
			resp, rb := b.do(t, tc.method, tc.path, ct, tc.body, tc.header...)
			if resp.StatusCode != tc.status || errCode(t, rb) != tc.code {
				t.Fatalf("%d %s, want %d %s", resp.StatusCode, rb, tc.status, tc.code)
			}
			if tc.status == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
	// The expiring key works, then stops (made here, just before use, so a
	// slow machine does not see it expire early).
	soon := b.newKey(t, `{"name":"soon","scopes":["admin"],"expires_at":"`+time.Now().Add(3*time.Second).UTC().Format(time.RFC3339Nano)+`"}`)
	if resp, rb := b.get(t, "/v1/projects", bearer(soon.Key)...); resp.StatusCode != http.StatusOK {
		t.Fatalf("key before expiry: %d %s", resp.StatusCode, rb)
	}
	await.Within(t, 10*time.Second, "the expired key refused with expired_api_key", func() bool {
		resp, rb := b.get(t, "/v1/projects", bearer(soon.Key)...)
		return resp.StatusCode == http.StatusUnauthorized && errCode(t, rb) == "expired_api_key"
	})
	if n := natstest.Msgs(t, b.js, contracts.StreamJobs); n != queued {
		t.Fatalf("refused requests queued %d jobs", n-queued)
	}
	// What the project key may do, it can.
	if resp, rb := b.post(t, "/v1/projects/demo/commands", "application/json", submit, bearer(alpha.Key)...); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("project key submit: %d %s", resp.StatusCode, rb)
	}
	resp, rb = b.get(t, "/v1/projects", bearer(alpha.Key)...)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(rb), `"id":"demo"`) || strings.Contains(string(rb), `"id":"other"`) {
		t.Fatalf("project key lists %d %s; want demo only", resp.StatusCode, rb)
	}
}

// A revoked key stops working on another API replica (its own cache) at
// once: the replica learns of the change from the access bucket's watch.
func TestRevokeReachesEveryReplicaWithinASecond(t *testing.T) {
	t.Parallel()
	_, _, js := natstest.Provisioned(t)
	cfg := api.Config{MaxBodyBytes: 64 << 10}
	a := setupWith(t, cfg, js)
	b := setupWith(t, cfg, js)
	k := a.newKey(t, `{"name":"k","scopes":["project:demo:read"]}`)
	warm := func() {
		for _, r := range []bundle{a, b} {
			if resp, rb := r.get(t, "/v1/projects/demo", bearer(k.Key)...); resp.StatusCode != http.StatusOK {
				t.Fatalf("before revoke: %d %s", resp.StatusCode, rb)
			}
		}
	}
	// The first use on each replica writes the key's last-used time, and
	// that write drops the writer's own cache entry. Wait for both writes
	// (key history: created, used on a, used on b), then warm the caches
	// again, so only the watch can tell b of the revocation.
	warm()
	akv, err := js.KeyValue(context.Background(), contracts.BucketAccess)
	if err != nil {
		t.Fatal(err)
	}
	await.Within(t, 5*time.Second, "both last-used writes (3 revisions of the key)", func() bool {
		h, err := akv.History(context.Background(), "key."+k.ID)
		return err == nil && len(h) == 3
	})
	warm()
	revokedAt := time.Now()
	if resp, rb := a.do(t, http.MethodDelete, "/v1/keys/"+k.ID, "", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke: %d %s", resp.StatusCode, rb)
	}
	if resp, _ := a.get(t, "/v1/projects/demo", bearer(k.Key)...); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the revoking replica still accepts the key: %d", resp.StatusCode)
	}
	await.Within(t, time.Until(revokedAt.Add(time.Second)), "the other replica to refuse the revoked key", func() bool {
		resp, _ := b.get(t, "/v1/projects/demo", bearer(k.Key)...)
		return resp.StatusCode == http.StatusUnauthorized
	})
}

// Two API replicas share Redis: a burst of requests from one key is held
// to exactly the key's limit across both, with the RateLimit headers and
// Retry-After on refusals.
func TestRateLimitIsExactAcrossReplicas(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	_, _, js := natstest.Provisioned(t)
	// A generous Redis timeout: under a loaded test machine a slow answer
	// would count as an outage and be let through (fail open), which is
	// TestRedisOutage's subject, not this test's.
	cfg := api.Config{MaxBodyBytes: 64 << 10, RedisURL: rs.URL(), RedisTimeout: 5 * time.Second}
	a := setupWith(t, cfg, js)
	b := setupWith(t, cfg, js)
	const limit, burst = 100, 10_000
	k := a.newKey(t, `{"name":"burst","scopes":["project:demo:read"],"rate_limit":{"requests":`+strconv.Itoa(limit)+`,"window_seconds":3600}}`)

	// Open both replicas' Redis connection pools first with an unlimited
	// key: a cold pool dialling 64 connections at once can overflow a busy
	// redis-server's accept backlog, and a refused connection is a Redis
	// outage (fail open) — another test's subject, not this one's.
	warm := a.newKey(t, `{"name":"warm","scopes":["project:demo:read"]}`)
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() { []bundle{a, b}[i%2].get(t, "/v1/projects/demo", bearer(warm.Key)...) })
	}
	wg.Wait()

	var ok, limited, other atomic.Int64
	work := make(chan bundle)
	for range 32 {
		wg.Go(func() {
			for r := range work {
				resp, rb := r.get(t, "/v1/projects/demo", bearer(k.Key)...)
				switch resp.StatusCode {
				case http.StatusOK:
					ok.Add(1)
				case http.StatusTooManyRequests:
					limited.Add(1)
					if errCode(t, rb) != "rate_limited" || resp.Header.Get("Retry-After") == "" ||
						resp.Header.Get("RateLimit-Limit") != strconv.Itoa(limit) || resp.Header.Get("RateLimit-Remaining") != "0" {
						t.Errorf("429 without its headers: %v %s", resp.Header, rb)
					}
				default:
					other.Add(1)
				}
			}
		})
	}
	for i := range burst {
		work <- []bundle{a, b}[i%2]
	}
	close(work)
	wg.Wait()
	if ok.Load() != limit || limited.Load() != burst-limit || other.Load() != 0 {
		t.Fatalf("allowed %d, limited %d, other %d; want exactly %d allowed", ok.Load(), limited.Load(), other.Load(), limit)
	}
}

// Redis dies mid-test: with the default fail-open policy the API keeps
// answering (unlimited, with a warning), with fail-closed it answers 503;
// never a hang. When Redis is back, limits apply again.
func TestRedisOutage(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	_, _, js := natstest.Provisioned(t)
	// A killed Redis refuses at once; the generous timeout only keeps a
	// CPU-starved but live Redis (CI under -race) from counting as down.
	open := setupWith(t, api.Config{MaxBodyBytes: 64 << 10, RedisURL: rs.URL(), RedisTimeout: time.Second}, js)
	closed := setupWith(t, api.Config{MaxBodyBytes: 64 << 10, RedisURL: rs.URL(), RedisTimeout: time.Second, RateLimitFailClosed: true}, js)
	k := open.newKey(t, `{"name":"k","scopes":["project:demo:read"],"rate_limit":{"requests":3,"window_seconds":3600}}`)
	for range 3 {
		if resp, _ := open.get(t, "/v1/projects/demo", bearer(k.Key)...); resp.StatusCode != http.StatusOK {
			t.Fatal(resp.StatusCode)
		}
	}
	if resp, _ := closed.get(t, "/v1/projects/demo", bearer(k.Key)...); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("fourth request across replicas: %d, want 429", resp.StatusCode)
	}
	rs.Kill()
	for range 5 {
		start := time.Now()
		resp, rb := open.get(t, "/v1/projects/demo", bearer(k.Key)...)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("fail-open with Redis down: %d %s", resp.StatusCode, rb)
		}
		// A request makes at most a cache and a limiter call, each bounded
		// by RedisTimeout; a hang is anything far beyond that.
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("fail-open request took %s: a hang", d)
		}
		resp, rb = closed.get(t, "/v1/projects/demo", bearer(k.Key)...)
		if resp.StatusCode != http.StatusServiceUnavailable || errCode(t, rb) != "unavailable" {
			t.Fatalf("fail-closed with Redis down: %d %s", resp.StatusCode, rb)
		}
	}
	rs.Restart() // empty: the counts start again
	await.Within(t, 10*time.Second, "limits applied again after Redis came back", func() bool {
		resp, _ := open.get(t, "/v1/projects/demo", bearer(k.Key)...)
		return resp.StatusCode == http.StatusTooManyRequests
	})
}
