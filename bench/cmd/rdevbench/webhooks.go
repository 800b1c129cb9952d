package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// webhooks measures the notifier of `rdev up`: the delay from a job's
// terminal event being stored to the receiver getting its signed
// delivery, at a paced rate, and deliveries per second for a burst. The
// events are published as a worker publishes them (its NATS user), one
// job each, to one local receiver; the baseline, alternated with the
// paced run, is a plain POST of the same body from this process to the
// same receiver: what any HTTP delivery costs here.
func webhooks(ctx context.Context, e *env, cfg config) ([]figure, error) {
	dir, err := e.dataDir("webhooks")
	if err != nil {
		return nil, err
	}
	up, err := e.start(ctx, "webhooks-up", "up", "--http-addr", "127.0.0.1:0", "--nats-addr", "127.0.0.1:0", "--data-dir", dir,
		"--webhook-allow-cidrs", "127.0.0.0/8", "--webhook-concurrency", "64", "--without", "worker")
	if err != nil {
		return nil, err
	}
	rc, err := newBenchReceiver()
	if err != nil {
		return nil, err
	}
	defer rc.close()
	if err := createProject(ctx, up.HTTP, contracts.ProjectRequest{ID: "hooks"}); err != nil {
		return nil, err
	}
	body, _ := json.Marshal(contracts.WebhookRequest{URL: rc.url, Events: []contracts.WebhookEventType{contracts.WebhookJobSucceeded}})
	if err := adminPost(ctx, up.HTTP+"/v1/projects/hooks/webhooks", body); err != nil {
		return nil, fmt.Errorf("create webhook: %w", err)
	}
	nkey, err := nats.NkeyOptionFromSeed(seed(dir, "worker"))
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(up.NATS, nats.Name("rdevbench-webhooks"), nkey)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	publish := func(job string) (time.Time, error) {
		ev := contracts.Event{V: contracts.Version, Type: contracts.EventSucceeded, Status: contracts.StatusSucceeded, JobID: job,
			StreamID: "s" + job, Project: "hooks", Attempt: 1, Time: time.Now().UTC()}
		b, _ := json.Marshal(ev)
		t0 := time.Now()
		_, err := js.Publish(ctx, contracts.SubjectEvent("hooks", ev.StreamID, ev.Type), b)
		return t0, err
	}
	// Warm-up: the endpoint claimed, connections open.
	if _, err := publish("warmup"); err != nil {
		return nil, err
	}
	if _, err := rc.wait(ctx, "warmup", time.Minute); err != nil {
		return nil, fmt.Errorf("warm-up delivery: %w", err)
	}

	// Paced: cfg.webhookRate events a second for cfg.webhookEvents events.
	n, rate := cfg.webhookEvents, cfg.webhookRate
	every := time.Second / time.Duration(rate)
	sent := make(map[string]time.Time, n)
	var base []time.Duration
	client := &http.Client{}
	start := time.Now()
	for i := range n {
		job := "p" + strconv.Itoa(i)
		t0, err := publish(job)
		if err != nil {
			return nil, err
		}
		sent[job] = t0
		if i%10 == 0 { // the baseline, 1 in 10, interleaved
			d, err := plainPost(ctx, client, rc.url)
			if err != nil {
				return nil, err
			}
			base = append(base, d)
		}
		if wait := time.Until(start.Add(time.Duration(i+1) * every)); wait > 0 {
			time.Sleep(wait)
		}
	}
	var added []time.Duration
	for job, t0 := range sent {
		at, err := rc.wait(ctx, job, time.Minute)
		if err != nil {
			return nil, fmt.Errorf("paced run: %w", err)
		}
		added = append(added, at.Sub(t0))
	}
	offered := float64(n) / time.Since(start).Seconds()

	// Burst: every event at once; deliveries a second until the last.
	burst := cfg.webhookEvents
	t0 := time.Now()
	for i := range burst {
		if _, err := publish("b" + strconv.Itoa(i)); err != nil {
			return nil, err
		}
	}
	var last time.Time
	for i := range burst {
		at, err := rc.wait(ctx, "b"+strconv.Itoa(i), 2*time.Minute)
		if err != nil {
			return nil, fmt.Errorf("burst: %w", err)
		}
		if at.After(last) {
			last = at
		}
	}
	perSecond := float64(burst) / last.Sub(t0).Seconds()

	slices.Sort(added)
	slices.Sort(base)
	return []figure{
		fig("paced rate offered", offered, "events/s"),
		fig("event stored -> receiver p50", ms(pct(added, 50)), "ms"),
		target("event stored -> receiver p99", ms(pct(added, 99)), "ms", "<=", 50),
		fig("baseline plain POST p50", ms(pct(base, 50)), "ms"),
		fig("baseline plain POST p99", ms(pct(base, 99)), "ms"),
		fig("added over baseline p50", ms(pct(added, 50)-pct(base, 50)), "ms"),
		fig("added over baseline p99", ms(pct(added, 99)-pct(base, 99)), "ms"),
		fig("burst deliveries/s (one endpoint)", perSecond, "deliveries/s"),
		fig("events per run", float64(n), "count"),
	}, nil
}

func adminPost(ctx context.Context, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+adminKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("%d %s", resp.StatusCode, b)
	}
	return nil
}

func plainPost(ctx context.Context, c *http.Client, url string) (time.Duration, error) {
	t0 := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader([]byte(`{"v":1,"type":"baseline","data":{}}`)))
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return time.Since(t0), nil
}

// benchReceiver records when each job's delivery arrived.
type benchReceiver struct {
	url  string
	srv  *http.Server
	mu   sync.Mutex
	at   map[string]time.Time
	cond *sync.Cond
}

func newBenchReceiver() (*benchReceiver, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	rc := &benchReceiver{url: "http://" + l.Addr().String() + "/hook", at: map[string]time.Time{}}
	rc.cond = sync.NewCond(&rc.mu)
	rc.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		var p contracts.WebhookPayload
		if json.NewDecoder(r.Body).Decode(&p) == nil && p.Data.JobID != "" {
			rc.mu.Lock()
			if _, seen := rc.at[p.Data.JobID]; !seen {
				rc.at[p.Data.JobID] = now
			}
			rc.cond.Broadcast()
			rc.mu.Unlock()
		}
		w.WriteHeader(http.StatusNoContent)
	})}
	go func() { _ = rc.srv.Serve(l) }()
	return rc, nil
}

// wait returns when job's delivery arrived, waiting up to within.
func (rc *benchReceiver) wait(ctx context.Context, job string, within time.Duration) (time.Time, error) {
	deadline := time.Now().Add(within)
	stop := context.AfterFunc(ctx, func() { rc.mu.Lock(); rc.cond.Broadcast(); rc.mu.Unlock() })
	defer stop()
	timer := time.AfterFunc(within, func() { rc.mu.Lock(); rc.cond.Broadcast(); rc.mu.Unlock() })
	defer timer.Stop()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for {
		if at, ok := rc.at[job]; ok {
			return at, nil
		}
		if ctx.Err() != nil {
			return time.Time{}, ctx.Err()
		}
		if !time.Now().Before(deadline) {
			return time.Time{}, errors.New("no delivery for " + job + " within " + within.String())
		}
		rc.cond.Wait()
	}
}

func (rc *benchReceiver) close() { _ = rc.srv.Close() }
