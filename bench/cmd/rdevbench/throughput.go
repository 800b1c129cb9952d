package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/client"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// rawWindow is the baseline's limit of unacknowledged publishes; it is the
// worker's default output window, so both pipeline the same depth.
const rawWindow = 1024

// throughput measures how fast the lines of one command printing N lines
// reach one SSE client of `rdev up`, against the baseline of raw JetStream
// async publishes of messages the size of one OutputLine to the same NATS
// server.
func throughput(ctx context.Context, e *env, cfg config) ([]figure, error) {
	dir, err := e.dataDir("throughput")
	if err != nil {
		return nil, err
	}
	up, err := e.start(ctx, "throughput-up", "up", "--http-addr", "127.0.0.1:0", "--nats-addr", "127.0.0.1:0", "--data-dir", dir)
	if err != nil {
		return nil, err
	}
	n := cfg.lines
	payload := sampleLine(n)
	raw, err := rawPublish(ctx, up.NATS, seed(dir, "admin"), n, payload)
	if err != nil {
		return nil, fmt.Errorf("raw JetStream baseline: %w", err)
	}

	t0 := time.Now()
	a, err := submit(ctx, up.HTTP, "bench", []string{"seq", "1", strconv.Itoa(n)}, time.Hour)
	if err != nil {
		return nil, err
	}
	s, err := follow(ctx, up.HTTP, a.EventsURL)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	var first, last time.Time
	lines := 0
	var ev client.Event
	for {
		if ev, err = s.Next(); err != nil {
			return nil, fmt.Errorf("stream ended after %d lines without complete: %w", lines, err)
		}
		if ev.Name == contracts.SSEOutput {
			last = time.Now()
			if lines == 0 {
				first = last
			}
			lines++
		}
		if ev.Name == contracts.SSEComplete {
			break
		}
	}
	end := time.Since(t0)
	done, err := checkComplete(ev, uint64(n))
	if err != nil {
		return nil, err
	}
	if lines != n {
		return nil, fmt.Errorf("client got %d lines, want %d", lines, n)
	}
	rdev := float64(n) / last.Sub(first).Seconds()
	return []figure{
		fig("rdev first->last line at client", rdev, "lines/s"),
		fig("rdev submit->complete", float64(n)/end.Seconds(), "lines/s"),
		fig("rdev submit->complete time", end.Seconds(), "s"),
		// The job's duration ends when JetStream has acknowledged every
		// line: the producer's side alone, without the streamer.
		fig("rdev worker: lines stored / job duration", float64(n)/(float64(done.DurationMS)/1000), "lines/s"),
		fig("baseline raw JetStream PublishAsync", raw, "msgs/s"),
		fig("baseline message size", float64(len(payload)), "bytes"),
		target("ratio rdev / raw", rdev/raw, "x", ">=", 0.5),
		fig("lines", float64(n), "count"),
	}, nil
}

// sampleLine is an OutputLine as the worker would publish the middle line
// of `seq 1 n`, to size the baseline's messages.
func sampleLine(n int) []byte {
	b, _ := json.Marshal(contracts.OutputLine{
		V: contracts.OutputLineVersion, StreamID: "01M8EHXFWDNM0KGVR1F0JQPHHF", JobID: "01M8EHXFWDNM0KGVR1EZYXASN1", Attempt: 1,
		Seq: uint64(n / 2), FD: contracts.Stdout, Text: strconv.Itoa(n / 2), Time: time.Now().UTC(),
	})
	return b
}

// rawPublish publishes n copies of payload with JetStream PublishAsync to a
// file-backed stream it creates for the purpose on the server at url (as
// the admin of seedFile), and
// returns the rate from the first publish to the last acknowledgement.
func rawPublish(ctx context.Context, url, seedFile string, n int, payload []byte) (float64, error) {
	nkey, err := nats.NkeyOptionFromSeed(seedFile)
	if err != nil {
		return 0, err
	}
	return publishRate(ctx, url, []nats.Option{nkey}, 1, n, payload)
}

// publishRate is rawPublish to a stream of replicas replicas, connecting
// with opts.
func publishRate(ctx context.Context, url string, opts []nats.Option, replicas, n int, payload []byte) (float64, error) {
	nc, err := nats.Connect(url, append(opts, nats.Name("rdevbench-raw"))...)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	var failed atomic.Int64
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(rawWindow),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { failed.Add(1) }))
	if err != nil {
		return 0, err
	}
	const name = "RDEVBENCH_RAW"
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{"bench.raw"}, Storage: jetstream.FileStorage, Replicas: replicas})
	if err != nil {
		return 0, err
	}
	defer js.DeleteStream(context.WithoutCancel(ctx), name)

	t0 := time.Now()
	for range n {
		if _, err := js.PublishAsync("bench.raw", payload, jetstream.WithStallWait(10*time.Second)); err != nil {
			return 0, err
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	d := time.Since(t0)
	if f := failed.Load(); f > 0 {
		return 0, fmt.Errorf("%d of %d publishes failed", f, n)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	if info.State.Msgs != uint64(n) {
		return 0, errors.New("stream holds " + strconv.FormatUint(info.State.Msgs, 10) + " messages, want " + strconv.Itoa(n))
	}
	return float64(n) / d.Seconds(), nil
}
