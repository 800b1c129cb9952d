package api_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology"
	"github.com/rdev-dev/rdev/pkg/topology/natsserver"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
	"github.com/rdev-dev/rdev/services/api"
)

// A submit whose job JetStream cannot take is answered 503 unavailable;
// once the queue is back, the retry with the same idempotency key is
// accepted and the job queued exactly once. Before issue 10 the failed
// submit kept the key but dropped the job, so every retry answered 503
// for the key's lifetime.
func TestIdempotencyKeyUsableAfterAFailedSubmit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	// The work queue goes away: the key is claimed and the state stored,
	// the enqueue fails.
	must(t, b.js.DeleteStream(ctx, contracts.StreamJobs))
	single := []byte(`{"command":["true"],"idempotency_key":"deploy-7"}`)
	batch := []byte(`[{"command":["echo","1"],"idempotency_key":"b-1"},{"command":["echo","2"],"idempotency_key":"b-2"}]`)
	for range 2 {
		if resp, rb := b.post(t, "/v1/projects/demo/commands", "application/json", single); resp.StatusCode != http.StatusServiceUnavailable ||
			errCode(t, rb) != "unavailable" || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("submit without a work queue: %d %s, want 503 unavailable", resp.StatusCode, rb)
		}
		// The batch record can be stored: a plain batch is answered
		// item by item.
		resp, rb := b.post(t, "/v1/projects/demo/batches", "application/json", batch)
		var br contracts.BatchResponse
		must(t, json.Unmarshal(rb, &br))
		if resp.StatusCode != http.StatusAccepted || br.Accepted != 0 || len(br.Items) != 2 ||
			br.Items[0].Error == nil || br.Items[0].Error.Code != "unavailable" || br.Items[1].Error == nil || br.Items[1].Error.Code != "unavailable" {
			t.Fatalf("batch without a work queue: %d %s, want every item unavailable", resp.StatusCode, rb)
		}
	}
	_, err := topology.Ensure(ctx, b.js, topology.Config{})
	must(t, err)

	resp, rb := b.post(t, "/v1/projects/demo/commands", "application/json", single)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("retry once the queue is back: %d %s, want 202", resp.StatusCode, rb)
	}
	var sr contracts.SubmitResponse
	must(t, json.Unmarshal(rb, &sr))
	resp, rb = b.post(t, "/v1/projects/demo/batches", "application/json", batch)
	var br contracts.BatchResponse
	must(t, json.Unmarshal(rb, &br))
	if resp.StatusCode != http.StatusAccepted || br.Accepted != 2 {
		t.Fatalf("batch retry once the queue is back: %d %s, want 2 accepted", resp.StatusCode, rb)
	}
	// Again: the same jobs, nothing queued twice.
	resp, rb = b.post(t, "/v1/projects/demo/commands", "application/json", single)
	var again contracts.SubmitResponse
	must(t, json.Unmarshal(rb, &again))
	if resp.StatusCode != http.StatusAccepted || again.JobID != sr.JobID || resp.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("second retry: %d %s, want job %s replayed", resp.StatusCode, rb, sr.JobID)
	}
	if n := natstest.Msgs(t, b.js, contracts.StreamJobs); n != 3 {
		t.Fatalf("%d jobs queued, want 3", n)
	}
	_, jb := b.get(t, "/v1/jobs/"+sr.JobID)
	var st contracts.JobState
	must(t, json.Unmarshal(jb, &st))
	if st.Status != contracts.StatusQueued || st.IdempotencyKey != "deploy-7" {
		t.Fatalf("job after the retry: %s", jb)
	}
}

// While NATS is down a submit is answered 503 unavailable at once; when
// it is back (same store), the same idempotency key is accepted.
func TestSubmitDuringANATSOutage(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr, dir := ln.Addr().String(), t.TempDir()
	ln.Close()
	srv, err := natsserver.Start(natsserver.Config{Addr: addr, StoreDir: dir})
	must(t, err)
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	// As cmd/rdev connects the API: no reconnect buffer.
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond), nats.ReconnectBufSize(-1))
	must(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	must(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = topology.Ensure(ctx, js, topology.Config{})
	must(t, err)
	b := setupWith(t, api.Config{MaxBodyBytes: 64 << 10}, js)

	srv.Shutdown()
	srv.WaitForShutdown()
	body := []byte(`{"command":["true"],"idempotency_key":"during-outage"}`)
	for range 2 {
		t0 := time.Now()
		resp, rb := b.post(t, "/v1/projects/demo/commands", "application/json", body)
		if resp.StatusCode != http.StatusServiceUnavailable || errCode(t, rb) != "unavailable" {
			t.Fatalf("submit with NATS down: %d %s, want 503 unavailable", resp.StatusCode, rb)
		}
		if d := time.Since(t0); d > 3*time.Second {
			t.Fatalf("submit with NATS down took %s", d)
		}
	}
	srv, err = natsserver.Start(natsserver.Config{Addr: addr, StoreDir: dir})
	must(t, err)
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, rb := b.post(t, "/v1/projects/demo/commands", "application/json", body)
		if resp.StatusCode == http.StatusAccepted {
			break
		}
		if resp.StatusCode != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("submit after NATS came back: %d %s", resp.StatusCode, rb)
		}
	}
	if n := natstest.Msgs(t, js, contracts.StreamJobs); n != 1 {
		t.Fatalf("%d jobs queued, want 1", n)
	}
}
