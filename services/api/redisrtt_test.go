package api_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/services/api"
	"github.com/rdev-dev/rdev/services/api/redistest"
)

// An authenticated submit with the lookup cache and the per-key and
// per-project limits in Redis costs one Redis round trip: the limits are
// one script, and the key and project are found in the near cache. The
// commands are counted by Redis itself (MONITOR), leaving out those a
// script runs.
func TestSubmitCostsOneRedisRoundTrip(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	// A generous timeout: a slow answer on a loaded machine would count
	// as an outage and skip Redis, which is TestRedisOutage's subject.
	b := setupWith(t, api.Config{MaxBodyBytes: 64 << 10, RedisURL: rs.URL(), RedisTimeout: 5 * time.Second}, nil)
	if resp, rb := b.do(t, http.MethodPatch, "/v1/projects/demo", "application/json", []byte(`{"rate_limit":{"requests":1000000,"window_seconds":60}}`)); resp.StatusCode != http.StatusOK {
		t.Fatalf("project limit: %d %s", resp.StatusCode, rb)
	}
	k := b.newKey(t, `{"name":"rtt","scopes":["project:demo:submit"],"rate_limit":{"requests":1000000,"window_seconds":60}}`)
	submit := func() {
		t.Helper()
		if resp, rb := b.post(t, "/v1/projects/demo/commands", "application/json", []byte(`{"command":["true"]}`), bearer(k.Key)...); resp.StatusCode != http.StatusAccepted {
			t.Fatalf("submit: %d %s", resp.StatusCode, rb)
		}
	}
	submit() // the first fills the caches

	// A plain connection: MONITOR streams one line per command.
	opts := rs.Client(t).Options()
	conn, err := net.Dial(opts.Network, opts.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte("MONITOR\r\n")); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		r := bufio.NewReader(conn)
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			mu.Lock()
			got = append(got, l)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	// MONITOR answers OK before it streams: a PING from another client
	// shows it is on.
	probe := rs.Client(t)
	await.Within(t, 10*time.Second, "MONITOR to stream", func() bool {
		_ = probe.Ping(context.Background()).Err()
		mu.Lock()
		defer mu.Unlock()
		return len(got) > 1 // +OK, then the PING
	})
	const n = 100
	for range n {
		submit()
	}
	// The sentinel marks the end of what the submits sent.
	_ = probe.Echo(context.Background(), "rtt-end").Err()
	await.Within(t, 10*time.Second, "MONITOR to show the end", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.ContainsFunc(got, func(l string) bool { return strings.Contains(l, "rtt-end") })
	})
	mu.Lock()
	defer mu.Unlock()
	end := slices.IndexFunc(got, func(l string) bool { return strings.Contains(l, "rtt-end") })
	// Each command the API sent, and whether its script deleted.
	type sent struct {
		line string
		del  bool
	}
	var cmds []sent
	for _, l := range got[:end] {
		switch {
		case strings.Contains(l, " lua]"):
			// A script's commands are tagged [db lua] and follow it.
			if strings.Contains(l, `"DEL"`) && len(cmds) > 0 {
				cmds[len(cmds)-1].del = true
			}
		// A connection the pool opens says hello; the probe pings.
		case strings.Contains(l, `] "hello"`) || strings.Contains(l, `] "ping"`):
		default:
			cmds = append(cmds, sent{line: l})
		}
	}
	var limits, deletes int
	var other []string
	for _, c := range cmds {
		switch {
		case strings.Contains(c.line, `"rdev:rl:key:`):
			limits++
		case c.del:
			// The access watch drops entries as records change (the
			// setup's, a key's last_used_at written at most once a
			// minute): not a request's round trip.
			deletes++
		default:
			other = append(other, c.line)
		}
	}
	// A request finds the key and the project in the near cache unless
	// the watch dropped them: then it reads each again (a get, and a set
	// after the store's answer). A drop whose delete came just before the
	// window (the key's last_used_at written at the warm-up) refills the
	// key and the project once more inside it: 4 commands at most.
	if limits != n || len(other) > 2*deletes+4 {
		t.Fatalf("%d submits: %d limit checks, %d other commands after %d cache deletes; want %d limit checks and at most a get and a set per delete (and one refill of the key and the project):\n%s",
			n, limits, len(other), deletes, n, strings.Join(other, ""))
	}
	t.Logf("%d submits: %d limit checks, %d cache refills after %d deletes by the access watch", n, limits, len(other), deletes)
}

// Concurrent submits share Redis round trips: the API sends the limit
// checks waiting at one time as one pipeline (go-redis's automatic
// pipelining), so Redis reads fewer times than it runs checks. A plain
// client, one check per connection and round trip, makes Redis read at
// least once per check. Counted by Redis itself (INFO stats and
// commandstats).
func TestConcurrentSubmitsShareRedisRoundTrips(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	b := setupWith(t, api.Config{MaxBodyBytes: 64 << 10, RedisURL: rs.URL(), RedisTimeout: 5 * time.Second}, nil)
	k := b.newKey(t, `{"name":"pipelined","scopes":["project:demo:submit"],"rate_limit":{"requests":1000000,"window_seconds":60}}`)
	submit := func() error {
		resp, rb := b.post(t, "/v1/projects/demo/commands", "application/json", []byte(`{"command":["true"]}`), bearer(k.Key)...)
		if resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("submit: %d %s", resp.StatusCode, rb)
		}
		return nil
	}
	if err := submit(); err != nil { // the first fills the caches and loads the script
		t.Fatal(err)
	}
	probe := rs.Client(t)
	// counter reads a number from a section of INFO: a field's value, or
	// the calls of a commandstats field ("calls=N,usec=...").
	counter := func(section, field string) int64 {
		t.Helper()
		info, err := probe.InfoMap(context.Background(), section).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, fields := range info {
			if v, ok := fields[field]; ok {
				v, _, _ = strings.Cut(strings.TrimPrefix(v, "calls="), ",")
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					t.Fatalf("INFO %s %s %q: %v", section, field, v, err)
				}
				return n
			}
		}
		return 0
	}
	reads := func() int64 { return counter("stats", "total_reads_processed") }
	scripts := func() int64 {
		return counter("commandstats", "cmdstat_evalsha") + counter("commandstats", "cmdstat_eval")
	}
	reads0, scripts0 := reads(), scripts()

	const clients, each = 32, 10
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range clients {
		wg.Go(func() {
			for range each {
				if err := submit(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Every script Redis ran meanwhile counts: the submits' limit checks
	// and the lookup cache's (refills, the access watch's deletes), which
	// a plain client sends; the probe's INFO commands are a few reads more.
	read, made := reads()-reads0, scripts()-scripts0
	if made < clients*each {
		t.Fatalf("%d submits made %d limit checks", clients*each, made)
	}
	if read*4 > made*3 {
		t.Fatalf("%d concurrent scripts took %d reads by Redis; want fewer than 3 in 4 (pipelined)", made, read)
	}
	t.Logf("%d concurrent scripts, %d reads by Redis", made, read)
}
