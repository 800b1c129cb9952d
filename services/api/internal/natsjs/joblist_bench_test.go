package natsjs_test

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
	"github.com/rdev-dev/rdev/services/api/internal/jobs"
	"github.com/rdev-dev/rdev/services/api/internal/natsjs"
)

// benchJobs is the size of the listed project.
const benchJobs = 100_000

// BenchmarkJobListing measures a page of GET /v1/projects/{p}/jobs at
// the index (what the handler calls) with 100,000 jobs in the project
// and 10,000 in another, each kind of page timed one by one for its p50
// and p99; the baseline, in the same run, is the cheapest read NATS
// answers: one key of the index (a KV get), which a listing read from
// the bucket per request could not beat.
func BenchmarkJobListing(b *testing.B) {
	_, _, js := natstest.Provisioned(b)
	ctx := b.Context()
	kv, err := js.KeyValue(ctx, contracts.BucketState)
	if err != nil {
		b.Fatal(err)
	}
	ids := fill(b, js, "bench", benchJobs)
	fill(b, js, "other", benchJobs/10)
	x := natsjs.NewJobIndex(kv)
	if err := x.Run(ctx); err != nil {
		b.Fatal(err)
	}
	loaded := time.Now()
	scope := []jobs.ListScope{{Project: "bench"}}
	if _, _, err := x.List(ctx, jobs.ListQuery{Scopes: scope, Limit: 1}); err != nil {
		b.Fatal(err)
	}
	b.Logf("index of %d jobs loaded in %s; load average %s", benchJobs+benchJobs/10, time.Since(loaded).Round(time.Millisecond), loadAvg())

	b.Run("BaselineKVGetOneKey", func(b *testing.B) {
		timed(b, func(i int) error {
			_, err := kv.Get(ctx, contracts.IndexKey("bench", ids[i%len(ids)]))
			return err
		})
	})
	for _, c := range []struct {
		name string
		q    jobs.ListQuery
	}{
		{"FirstPage", jobs.ListQuery{Limit: contracts.DefaultListLimit}},
		{"MaxPage", jobs.ListQuery{Limit: contracts.MaxListLimit}},
		{"MidCursor", jobs.ListQuery{Limit: contracts.DefaultListLimit, Cursor: ids[len(ids)/2]}},
		// 1 job in 100 is running: a page walks ~5,000 entries.
		{"RareStatus", jobs.ListQuery{Limit: contracts.DefaultListLimit, Status: contracts.StatusRunning}},
		// No job matches: the walk covers all 100,000.
		{"NoMatch", jobs.ListQuery{Limit: contracts.DefaultListLimit, BatchID: "none"}},
	} {
		b.Run(c.name, func(b *testing.B) {
			q := c.q
			q.Scopes = scope
			timed(b, func(int) error {
				_, _, err := x.List(ctx, q)
				return err
			})
		})
	}
}

// fill stores n index entries of project (one in 100 running, the rest
// succeeded) as the state store does, and returns their ids, oldest
// first.
func fill(b *testing.B, js jetstream.JetStream, project string, n int) []string {
	b.Helper()
	ids := make([]string, n)
	start := time.Now().Add(-time.Hour)
	for i := range ids {
		t := start.Add(time.Duration(i) * time.Millisecond)
		ids[i] = ulid.MustNew(ulid.Timestamp(t), ulid.DefaultEntropy()).String()
		st := contracts.StatusSucceeded
		if i%100 == 0 {
			st = contracts.StatusRunning
		}
		body, err := json.Marshal(contracts.JobSummary{V: contracts.Version, JobID: ids[i], Project: project,
			Kind: contracts.KindExec, Priority: contracts.PriorityNormal, Status: st, Attempt: 1, SubmittedAt: t, StateRevision: 1})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := js.PublishAsync("$KV."+contracts.BucketState+"."+contracts.IndexKey(project, ids[i]), body); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("index entries not stored within a minute")
	}
	return ids
}

// timed runs op b.N times, one at a time, and reports the p50 and p99 of
// its latency in milliseconds.
func timed(b *testing.B, op func(i int) error) {
	b.Helper()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		if err := op(i); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	at := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(at(0.50), "p50-ms")
	b.ReportMetric(at(0.99), "p99-ms")
}

// loadAvg is the machine's load average, for the reader of the figures.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}
