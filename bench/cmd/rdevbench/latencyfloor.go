package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rdev-dev/rdev/bench/internal/proc"
	"github.com/rdev-dev/rdev/pkg/topology/natsserver"
)

// latencyFloor measures submit → first output line at the client through
// a skeleton of rdev's path, in a process of its own (rdevbench
// latency-skeleton) on the embedded server rdev up uses, against a bare
// fork/exec of the same `echo hi` alternating with it: how much of the latency scenario's overhead any
// design with rdev's durable steps pays on this machine, whatever its
// code. The steps on the way to the first line are rdev's:
//
//   - an HTTP POST whose handler stores the job's state, then the job
//     (two JetStream round trips, one after the other) and answers 202;
//   - a worker waiting in a pull request, which claims the job by
//     compare-and-set on its state before it starts the command and
//     publishes each line the command prints as it reads it;
//   - an SSE endpoint the client opens after the 202, on a connection of
//     its own as rdev's client does (rdev's streamer closes a stream's
//     connection at its end), reading the job's lines with an ordered
//     consumer from the first.
//
// No authentication, validation, audit, index, events, telemetry or
// output batching: those are rdev's own cost.
func latencyFloor(ctx context.Context, e *env, cfg config) ([]figure, error) {
	// A process of its own, as rdev up is: the client's requests wake
	// another process's threads, not goroutines of its own runtime.
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	p, err := proc.Start(ctx, "latency-skeleton", self, filepath.Join(e.logs, "latency-skeleton.log"), "latency-skeleton")
	if err != nil {
		return nil, err
	}
	defer p.Stop()
	sk := &skeleton{base: p.HTTP}
	hc := &http.Client{Transport: &http.Transport{}}
	streams := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	var floor, base, accepted []time.Duration
	for i := range cfg.latencyWarmup + cfg.latencyRuns {
		t0 := time.Now()
		if err := exec.CommandContext(ctx, "echo", "hi").Run(); err != nil {
			return nil, fmt.Errorf("baseline echo: %w", err)
		}
		b := time.Since(t0)
		f, a, err := sk.firstLine(ctx, hc, streams)
		if err != nil {
			return nil, fmt.Errorf("run %d: %w", i, err)
		}
		if i >= cfg.latencyWarmup {
			floor, base, accepted = append(floor, f), append(base, b), append(accepted, a)
		}
	}
	slices.Sort(floor)
	slices.Sort(base)
	slices.Sort(accepted)
	figs := append(percentiles("skeleton submit->first line", floor), fig("baseline fork/exec p50", ms(pct(base, 50)), "ms"))
	// As the latency scenario's overhead, less the tail: the difference
	// of two p99s of 300 runs says little.
	for _, p := range []float64{50, 90} {
		figs = append(figs, fig(fmt.Sprintf("skeleton overhead p%g", p), ms(pct(floor, p)-pct(base, p)), "ms"))
	}
	figs = append(figs, fig("skeleton phase p50: client POST until 202", ms(pct(accepted, 50)), "ms"))
	return append(figs, fig("runs (after warm-up)", float64(len(floor)), "count")), nil
}

// skeleton is the least of rdev's path: an API, a worker and a streamer
// on one embedded server (rdevbench latency-skeleton), at base.
type skeleton struct{ base string }

// skeletonServe runs the skeleton until ctx ends (rdevbench
// latency-skeleton), its store in a temporary directory.
func skeletonServe(ctx context.Context, stdout io.Writer) error {
	dir, err := os.MkdirTemp("", "rdevbench-skeleton-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	base, stop, err := startSkeleton(ctx, dir)
	if err != nil {
		return err
	}
	defer stop()
	fmt.Fprintf(stdout, "rdev ready http=%s\n", base)
	<-ctx.Done()
	return nil
}

// endLine marks the end of a job's lines in its output subject.
const endLine = "\x00end"

// startSkeleton starts the skeleton's server, worker and HTTP endpoints;
// it returns the HTTP address and what stops them.
func startSkeleton(ctx context.Context, dir string) (string, func(), error) {
	srv, err := natsserver.Start(natsserver.Config{StoreDir: dir})
	if err != nil {
		return "", nil, err
	}
	var closers []func()
	closeAll := func() {
		for _, c := range slices.Backward(closers) {
			c()
		}
	}
	closers = append(closers, func() { srv.Shutdown(); srv.WaitForShutdown() })
	ok := false
	defer func() {
		if !ok {
			closeAll()
		}
	}()
	conn := func() (jetstream.JetStream, error) {
		nc, err := nats.Connect("", nats.InProcessServer(natsserver.NewInProcess(srv)))
		if err != nil {
			return nil, err
		}
		closers = append(closers, nc.Close)
		return jetstream.New(nc)
	}
	apiJS, err := conn()
	if err != nil {
		return "", nil, err
	}
	workerJS, err := conn()
	if err != nil {
		return "", nil, err
	}
	streamJS, err := conn()
	if err != nil {
		return "", nil, err
	}
	if _, err := apiJS.CreateStream(ctx, jetstream.StreamConfig{Name: "JOBS", Subjects: []string{"jobs"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage}); err != nil {
		return "", nil, err
	}
	if _, err := apiJS.CreateStream(ctx, jetstream.StreamConfig{Name: "OUT", Subjects: []string{"out.>"},
		Storage: jetstream.FileStorage, AllowDirect: true}); err != nil {
		return "", nil, err
	}
	apiKV, err := apiJS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "state", Storage: jetstream.FileStorage})
	if err != nil {
		return "", nil, err
	}
	workerKV, err := workerJS.KeyValue(ctx, "state")
	if err != nil {
		return "", nil, err
	}
	cons, err := workerJS.CreateOrUpdateConsumer(ctx, "JOBS", jetstream.ConsumerConfig{Durable: "worker", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		return "", nil, err
	}

	wctx, stopWorker := context.WithCancel(ctx)
	var working sync.WaitGroup
	working.Go(func() { skeletonWorker(wctx, workerJS, workerKV, cons) })
	closers = append(closers, func() { stopWorker(); working.Wait() })

	var ids atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("POST /jobs", func(w http.ResponseWriter, r *http.Request) {
		var command []string
		body, err := io.ReadAll(r.Body)
		if err == nil {
			command = strings.Fields(string(body))
		}
		if len(command) == 0 {
			http.Error(w, "a command, please", http.StatusBadRequest)
			return
		}
		id := "j" + strconv.FormatInt(ids.Add(1), 10)
		rev, err := apiKV.Create(r.Context(), id, []byte(`{"status":"queued"}`))
		if err == nil {
			_, err = apiJS.Publish(r.Context(), "jobs", []byte(id+" "+strconv.FormatUint(rev, 10)+" "+strings.Join(command, " ")))
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, id)
	})
	mux.HandleFunc("GET /events/{id}", func(w http.ResponseWriter, r *http.Request) {
		skeletonStream(w, r, streamJS)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	closers = append(closers, func() { _ = hs.Close() })
	ok = true
	return ln.Addr().String(), closeAll, nil
}

// skeletonWorker runs jobs one at a time from a waiting pull request.
func skeletonWorker(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, cons jetstream.Consumer) {
	for ctx.Err() == nil {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			continue
		}
		for msg := range batch.Messages() {
			f := strings.Fields(string(msg.Data()))
			rev, _ := strconv.ParseUint(f[1], 10, 64)
			if _, err := kv.Update(ctx, f[0], []byte(`{"status":"running"}`), rev); err != nil {
				_ = msg.Term()
				continue
			}
			subject := "out." + f[0]
			cmd := exec.CommandContext(ctx, f[2], f[3:]...)
			out, err := cmd.StdoutPipe()
			if err == nil {
				err = cmd.Start()
			}
			if err == nil {
				lines := bufio.NewScanner(out)
				for lines.Scan() {
					if _, err := js.Publish(ctx, subject, lines.Bytes()); err != nil {
						break
					}
				}
				_ = cmd.Wait() // the end marker goes either way
			}
			_, _ = kv.Put(ctx, f[0], []byte(`{"status":"ended"}`))
			_, _ = js.Publish(ctx, subject, []byte(endLine))
			_ = msg.DoubleAck(ctx)
		}
	}
}

// skeletonStream sends a job's lines as SSE data events from the first,
// and ends after the last.
func skeletonStream(w http.ResponseWriter, r *http.Request, js jetstream.JetStream) {
	c, err := js.OrderedConsumer(r.Context(), "OUT", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"out." + r.PathValue("id")}})
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	flush := http.NewResponseController(w).Flush
	_ = flush()
	msgs, err := c.Messages()
	if err != nil {
		return
	}
	defer msgs.Stop()
	for {
		m, err := msgs.Next()
		if err != nil {
			return
		}
		if string(m.Data()) == endLine {
			return
		}
		_, _ = fmt.Fprintf(w, "data: %s\n\n", m.Data())
		if flush() != nil {
			return
		}
	}
}

// firstLine submits `echo hi`, opens its events after the 202 and returns
// the time from before the submit to the first line's arrival, and to the
// 202; it reads
// the stream to its end so the next run starts on a quiet system.
func (s *skeleton) firstLine(ctx context.Context, hc, streams *http.Client) (first, accepted time.Duration, err error) {
	t0 := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.base+"/jobs", strings.NewReader("echo hi"))
	if err != nil {
		return 0, 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, 0, err
	}
	id, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, 0, fmt.Errorf("submit: %w", err)
	}
	if resp.StatusCode != http.StatusAccepted {
		return 0, 0, fmt.Errorf("submit: %s %s", resp.Status, id)
	}
	accepted = time.Since(t0)
	req, err = http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/events/"+string(id), nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err = streams.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	for {
		line, err := rd.ReadBytes('\n')
		if err != nil {
			if errors.Is(err, io.EOF) && first > 0 {
				return first, accepted, nil
			}
			return 0, 0, fmt.Errorf("events of %s: %w", id, err)
		}
		if first == 0 && bytes.HasPrefix(line, []byte("data: ")) {
			first = time.Since(t0)
			if got := string(bytes.TrimSpace(line[len("data: "):])); got != "hi" {
				return 0, 0, fmt.Errorf("first line %q, want hi", got)
			}
		}
	}
}
