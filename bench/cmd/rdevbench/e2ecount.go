package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// jsCounts is what JetStream stored, as the server keeps it: every
// stream's last sequence (a key-value bucket is a stream too, so a KV
// write counts) and every consumer's acknowledged messages.
type jsCounts struct {
	// stored is each stream's last sequence: one per message stored,
	// delete and purge markers included.
	stored map[string]uint64
	// acked is the acknowledgement floor summed over each stream's
	// consumers: one per message a consumer acknowledged (on a work
	// queue, a removal).
	acked map[string]uint64
}

// snapshot reads every stream's and consumer's counters.
func snapshot(ctx context.Context, js jetstream.JetStream) (jsCounts, error) {
	c := jsCounts{stored: map[string]uint64{}, acked: map[string]uint64{}}
	streams := js.ListStreams(ctx)
	for si := range streams.Info() {
		c.stored[si.Config.Name] = si.State.LastSeq
		s, err := js.Stream(ctx, si.Config.Name)
		if err != nil {
			return c, err
		}
		cons := s.ListConsumers(ctx)
		for ci := range cons.Info() {
			// Ordered consumers (the streamer's) acknowledge nothing.
			if ci.Config.AckPolicy != jetstream.AckNonePolicy {
				c.acked[si.Config.Name] += ci.AckFloor.Consumer
			}
		}
		if err := cons.Err(); err != nil {
			return c, err
		}
	}
	return c, streams.Err()
}

// wireTap counts the requests the rdev processes send the server, by
// kind: a copy of every message on the subjects of JetStream's API, its
// acknowledgements, key-value writes and rdev's own subjects (publishes
// to streams and control messages) reaches this subscriber, so each is
// one request a client made; replies to inboxes are not counted.
type wireTap struct {
	mu     sync.Mutex
	counts map[string]uint64
	subs   []*nats.Subscription
}

// tapKind names the request a subject carries.
func tapKind(subject string) string {
	switch {
	case strings.HasPrefix(subject, "$JS.API.DIRECT.GET."):
		return "JS direct get (KV read)"
	case strings.HasPrefix(subject, "$JS.API.CONSUMER.MSG.NEXT."):
		return "JS pull request (fetch)"
	case strings.HasPrefix(subject, "$JS.API."):
		// $JS.API.STREAM.INFO.X → STREAM.INFO
		parts := strings.Split(strings.TrimPrefix(subject, "$JS.API."), ".")
		return "JS API " + strings.Join(parts[:min(2, len(parts))], ".")
	case strings.HasPrefix(subject, "$JS.ACK."):
		parts := strings.Split(subject, ".")
		return "JS ack " + parts[min(2, len(parts)-1)]
	case strings.HasPrefix(subject, "$KV."):
		// $KV.<bucket>.<key kind>.… → KV write <bucket> <key kind>
		parts := strings.SplitN(subject, ".", 4)
		if len(parts) >= 3 {
			return "KV write " + parts[1] + " " + parts[2]
		}
		return "KV write"
	default:
		parts := strings.Split(subject, ".")
		if len(parts) >= 2 && parts[1] == "events" && len(parts) >= 5 {
			return "publish rdev.events.*.*." + parts[len(parts)-1]
		}
		if len(parts) >= 3 && parts[1] == "control" {
			return "publish rdev.control." + parts[2]
		}
		return "publish " + strings.Join(parts[:min(2, len(parts))], ".")
	}
}

func startTap(nc *nats.Conn) (*wireTap, error) {
	t := &wireTap{counts: map[string]uint64{}}
	for _, subj := range []string{"$JS.API.>", "$JS.ACK.>", "$KV.>", "rdev.>"} {
		s, err := nc.Subscribe(subj, func(m *nats.Msg) {
			k := tapKind(m.Subject)
			t.mu.Lock()
			t.counts[k]++
			t.mu.Unlock()
		})
		if err != nil {
			t.stop()
			return nil, err
		}
		_ = s.SetPendingLimits(-1, -1)
		t.subs = append(t.subs, s)
	}
	return t, nc.Flush()
}

func (t *wireTap) stop() {
	for _, s := range t.subs {
		_ = s.Unsubscribe()
	}
}

func (t *wireTap) snapshot() map[string]uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps.Clone(t.counts)
}

// countedBatch runs one batch of n no-op jobs on the rdev up whose data
// directory is dir, and returns per job: the messages each stream stored,
// the acknowledgements, and the requests the rdev processes sent the
// server, by kind. It waits for the server to settle after the batch's
// complete event (the finished-job audit copies come after it). The
// counting tap slows the run, so it is timed elsewhere.
func countedBatch(ctx context.Context, up, dir, base string, n int) ([]figure, error) {
	opt, err := nats.NkeyOptionFromSeed(seed(dir, "admin"))
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(up, opt)
	if err != nil {
		return nil, fmt.Errorf("connect as admin: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	tap, err := startTap(nc)
	if err != nil {
		return nil, err
	}
	defer tap.stop()
	before, err := snapshot(ctx, js)
	if err != nil {
		return nil, err
	}
	tap0 := tap.snapshot()
	if _, _, err := runBatch(ctx, base, n); err != nil {
		return nil, err
	}
	// Quiet: nothing stored for a second (bounded: 30 s, loaded machine).
	after, err := jsSettle(ctx, js)
	if err != nil {
		return nil, err
	}
	tap1 := tap.snapshot()

	var figs []figure
	perJob := func(v uint64) float64 { return float64(v) / float64(n) }
	var storedTotal, ackedTotal uint64
	for _, name := range slices.Sorted(maps.Keys(after.stored)) {
		d := after.stored[name] - before.stored[name]
		storedTotal += d
		if d > 0 {
			figs = append(figs, fig("  stored per job in "+name, perJob(d), "msgs"))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(after.acked)) {
		if d := after.acked[name] - before.acked[name]; d > 0 {
			ackedTotal += d
			figs = append(figs, fig("  acknowledged per job on "+name, perJob(d), "acks"))
		}
	}
	var reqTotal uint64
	var reqs []figure
	for _, k := range slices.Sorted(maps.Keys(tap1)) {
		d := tap1[k] - tap0[k]
		if d == 0 {
			continue
		}
		reqTotal += d
		reqs = append(reqs, fig("  requests per job: "+k, perJob(d), "req"))
	}
	head := []figure{
		fig(fmt.Sprintf("durable writes per job (%d-job counted batch): messages stored + acknowledgements", n), perJob(storedTotal+ackedTotal), "writes"),
		fig("  messages stored per job (every stream and KV bucket)", perJob(storedTotal), "msgs"),
		fig("requests to the server per job (JetStream API, KV, acks, publishes)", perJob(reqTotal), "req"),
	}
	return append(append(head, figs...), reqs...), nil
}

// jsSettle waits until no stream stored anything for a second, and returns
// the counters then.
func jsSettle(ctx context.Context, js jetstream.JetStream) (jsCounts, error) {
	deadline := time.Now().Add(30 * time.Second)
	last, err := snapshot(ctx, js)
	for err == nil {
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(time.Second):
		}
		var now jsCounts
		if now, err = snapshot(ctx, js); err != nil {
			break
		}
		if maps.Equal(now.stored, last.stored) && maps.Equal(now.acked, last.acked) {
			return now, nil
		}
		if time.Now().After(deadline) {
			return now, errors.New("JetStream still storing 30 s after the batch completed")
		}
		last = now
	}
	return last, err
}
