package main

// The SSE scenarios (idle, fanout, storm) need more connections than one process
// may hold files (20,000 here) and a baseline server beside rdev's, so
// rdevbench runs copies of itself as child processes, chosen by their
// first argument:
//
//	rdevbench sse-clients ...      SSE clients from one source address
//	rdevbench sse-broadcaster ...  the minimal Go SSE broadcaster (baseline)
//	rdevbench latency-skeleton     the least of rdev's path (latencyfloor)
//	rdevbench sse-printer ...      a job's command printing timed lines
//	rdevbench storm-client         the storm scenario's clients (order on stdin)
//
// A client child reports on its standard output, one word a line:
// "ready" once every connection is open and has seen its ready marker,
// "beat" once every one has seen a heartbeat since, and "result {json}"
// once every one has seen its final event or failed; then it exits.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// child runs the child named by args[0] and reports whether there was one.
func child(ctx context.Context, args []string) (bool, error) {
	if len(args) == 0 {
		return false, nil
	}
	switch args[0] {
	case "sse-clients":
		return true, sseClients(ctx, args[1:], os.Stdout)
	case "sse-broadcaster":
		return true, broadcaster(ctx, args[1:], os.Stdout)
	case "sse-printer":
		return true, printer(ctx, args[1:], os.Stdout)
	case "storm-client":
		return true, stormClient(os.Stdin, os.Stdout)
	case "latency-skeleton":
		return true, skeletonServe(ctx, os.Stdout)
	}
	return false, nil
}

// latencyHist counts latencies in buckets 2 % wide: bucket i holds
// latencies of about exp(i/50)-1 microseconds.
type latencyHist []uint64

const histBuckets = 1200 // up to exp(24) µs: hours

func (h latencyHist) add(d time.Duration) {
	us := max(float64(d.Microseconds()), 0)
	h[min(int(math.Log1p(us)*50), histBuckets-1)]++
}

func (h latencyHist) merge(o latencyHist) {
	for i := range o {
		h[i] += o[i]
	}
}

// quantile returns the q quantile (0..1) in milliseconds.
func (h latencyHist) quantile(q float64) float64 {
	var n uint64
	for _, c := range h {
		n += c
	}
	if n == 0 {
		return 0
	}
	want := uint64(math.Ceil(q * float64(n)))
	var seen uint64
	for i, c := range h {
		seen += c
		if seen >= want {
			return math.Expm1(float64(i+1)/50) / 1000
		}
	}
	return 0
}

// clientResult is what a client child reports at its end.
type clientResult struct {
	Conns   int    `json:"conns"`
	Final   int    `json:"final"`   // connections that saw the final event
	Failed  int    `json:"failed"`  // connections that ended without it
	Lines   uint64 `json:"lines"`   // timed lines received, all connections
	Dups    uint64 `json:"dups"`    // lines received again
	Missing uint64 `json:"missing"` // lines never received
	// First and Last are when the first and the last timed line arrived
	// (Unix nanoseconds).
	First int64       `json:"first"`
	Last  int64       `json:"last"`
	Hist  latencyHist `json:"hist"`
	Err   string      `json:"err,omitempty"`
}

func sseClients(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("sse-clients", flag.ContinueOnError)
	conns := fs.Int("conns", 1, "connections")
	src := fs.String("src", "127.0.0.1", "source address")
	urls := fs.String("urls", "", "event stream URLs, comma separated; connection i opens URL i mod n")
	key := fs.String("key", "", "API key sent as a bearer token")
	ready := fs.String("ready", "", "a line holding this marks the connection ready")
	final := fs.String("final", "complete", "the event name that ends a stream")
	lines := fs.Uint64("lines", 0, "timed lines each connection must receive once (0: none counted)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	targets := strings.Split(*urls, ",")
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(*src)}, Timeout: time.Minute}
	tr := &http.Transport{DialContext: dialer.DialContext, MaxIdleConnsPerHost: -1, DisableCompression: true,
		ResponseHeaderTimeout: 5 * time.Minute}
	hc := &http.Client{Transport: tr}

	var nReady, nBeat, nEnded, nFailed atomic.Int64
	var mu sync.Mutex
	res := clientResult{Conns: *conns, Hist: make(latencyHist, histBuckets)}
	fail := func(err error) {
		nFailed.Add(1)
		mu.Lock()
		if res.Err == "" {
			res.Err = err.Error()
		}
		mu.Unlock()
	}
	open := make(chan struct{}, 64) // connections being opened at once
	one := func(i int) {
		// The slot is freed once the connection is ready or failed.
		release := sync.OnceFunc(func() { <-open })
		defer release()
		fail := func(err error) { release(); fail(err) }
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, targets[i%len(targets)], nil)
		if err != nil {
			fail(err)
			return
		}
		req.Header.Set("Accept", "text/event-stream")
		if *key != "" {
			req.Header.Set("Authorization", "Bearer "+*key)
		}
		resp, err := hc.Do(req)
		if err != nil {
			fail(err)
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			fail(fmt.Errorf("status %d", resp.StatusCode))
			return
		}
		size := 512
		if *lines > 0 {
			size = 16 << 10
		}
		br := bufio.NewReaderSize(resp.Body, size)
		var (
			isReady, beat, output bool
			last, n, dups, miss   uint64
			first, lastAt         int64
			hist                  latencyHist
		)
		if *lines > 0 {
			hist = make(latencyHist, histBuckets)
		}
		for {
			line, err := br.ReadSlice('\n')
			if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
				fail(fmt.Errorf("stream ended before %s: %w", *final, err))
				return
			}
			switch {
			case !isReady && bytes.Contains(line, []byte(*ready)):
				isReady = true
				nReady.Add(1)
				release()
			case isReady && !beat && bytes.HasPrefix(line, []byte(": ping")):
				beat = true
				nBeat.Add(1)
			case bytes.HasPrefix(line, []byte("event: ")):
				name := bytes.TrimSpace(line[len("event: "):])
				output = string(name) == contracts.SSEOutput
				if string(name) == *final {
					if *lines > 0 {
						miss += *lines - min(last, *lines)
						mu.Lock()
						res.Lines += n
						res.Dups += dups
						res.Missing += miss
						res.Hist.merge(hist)
						if first != 0 && (res.First == 0 || first < res.First) {
							res.First = first
						}
						res.Last = max(res.Last, lastAt)
						mu.Unlock()
					}
					nEnded.Add(1)
					return
				}
			case output && *lines > 0 && bytes.HasPrefix(line, []byte("data: ")):
				at, seq, ok := timedLine(line)
				if !ok {
					continue
				}
				now := time.Now().UnixNano()
				hist.add(time.Duration(now - at))
				n++
				if first == 0 {
					first = now
				}
				lastAt = now
				switch {
				case seq <= last:
					dups++
				default:
					miss += seq - last - 1
					last = seq
				}
			}
		}
	}
	var wg sync.WaitGroup
	go func() {
		for i := range *conns {
			open <- struct{}{}
			wg.Go(func() { one(i) })
		}
	}()
	say := func(s string) { fmt.Fprintln(stdout, s) }
	stage := 0
	for {
		r, b, e, f := nReady.Load(), nBeat.Load(), nEnded.Load(), nFailed.Load()
		all := int64(*conns)
		if stage == 0 && r+f >= all {
			say("ready")
			stage++
		}
		if stage == 1 && b+f >= all {
			say("beat")
			stage++
		}
		if e+f >= all {
			wg.Wait()
			res.Final, res.Failed = int(nEnded.Load()), int(nFailed.Load())
			b, err := json.Marshal(res)
			if err != nil {
				return err
			}
			say("result " + string(b))
			return nil
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// timedLine finds "<unix ns> <seq> " at the start of the text of an
// output line's data.
func timedLine(line []byte) (at int64, seq uint64, ok bool) {
	_, rest, found := bytes.Cut(line, []byte(`"text":"`))
	if !found {
		return 0, 0, false
	}
	f := bytes.SplitN(rest, []byte(" "), 3)
	if len(f) < 3 {
		return 0, 0, false
	}
	at, err1 := strconv.ParseInt(string(f[0]), 10, 64)
	seq, err2 := strconv.ParseUint(string(f[1]), 10, 64)
	return at, seq, err1 == nil && err2 == nil
}

// timedText is the text of timed line seq: the time it was due, its
// number and padding to size bytes. The time is when the line was due,
// not when it was made: a printer that falls behind its rate (starved of
// CPU, or a broadcaster whose fan-out holds its generator up) counts its
// lateness in the latency, as the rate was offered.
func timedText(seq uint64, size int, due time.Time) []byte {
	b := strconv.AppendInt(nil, due.UnixNano(), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, ' ')
	for len(b) < size {
		b = append(b, 'x')
	}
	return b
}

// pace calls f(i, due) for i = 1..n at rate a second, each at its due
// time or, when late, at once: the schedule does not drift.
func pace(ctx context.Context, n uint64, rate int, f func(uint64, time.Time) error) error {
	start := time.Now()
	for i := uint64(1); i <= n; i++ {
		due := start.Add(time.Duration(float64(i-1) / float64(rate) * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := f(i, due); err != nil {
			return err
		}
	}
	return nil
}

// printer is the command of the fan-out job: it waits until a file exists
// (the clients are connected), then prints timed lines at a rate.
func printer(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("sse-printer", flag.ContinueOnError)
	lines := fs.Uint64("lines", 1000, "lines to print")
	rate := fs.Int("rate", 1000, "lines a second")
	size := fs.Int("size", 100, "bytes of each line")
	wait := fs.String("wait", "", "print once this file exists")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for *wait != "" {
		if _, err := os.Stat(*wait); err == nil {
			break
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return pace(ctx, *lines, *rate, func(i uint64, due time.Time) error {
		_, err := stdout.Write(append(timedText(i, *size, due), '\n'))
		return err
	})
}

// broadcaster is the baseline: a minimal SSE broadcaster on net/http as a
// Go programmer would write one. Each client has a handler goroutine and
// a buffered channel; a generator encodes each event once and hands the
// same bytes to every client; a client whose channel is full is dropped.
// The handler writes what its channel holds and flushes once it is empty.
// One shared timer drives the heartbeats.
//
//	GET  /events         a stream: "connected", then lines, then "complete"
//	POST /start?lines=N&rate=R&size=S   prints N timed lines at R a second, then complete
//	POST /end            sends complete to every client
func broadcaster(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("sse-broadcaster", flag.ContinueOnError)
	heartbeat := fs.Duration("heartbeat", 15*time.Second, "heartbeat period")
	if err := fs.Parse(args); err != nil {
		return err
	}
	b := &hub{clients: map[chan []byte]struct{}{}, beat: make(chan struct{})}
	go func() {
		t := time.NewTicker(*heartbeat)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				b.mu.Lock()
				close(b.beat)
				b.beat = make(chan struct{})
				b.mu.Unlock()
			case <-ctx.Done():
				return
			}
		}
	}()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /events", b.serve)
	mux.HandleFunc("POST /end", func(w http.ResponseWriter, _ *http.Request) {
		b.send([]byte("event: complete\ndata: {}\n\n"))
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /start", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.ParseUint(r.URL.Query().Get("lines"), 10, 64)
		rate, _ := strconv.Atoi(r.URL.Query().Get("rate"))
		size, _ := strconv.Atoi(r.URL.Query().Get("size"))
		go func() {
			_ = pace(ctx, n, max(rate, 1), func(i uint64, due time.Time) error {
				data, err := json.Marshal(contracts.OutputLine{V: contracts.Version, StreamID: "bench", JobID: "bench",
					Attempt: 1, Seq: i, FD: contracts.Stdout, Text: string(timedText(i, size, due))})
				if err != nil {
					return err
				}
				ev := fmt.Appendf(nil, "id: %d\nevent: output\ndata: %s\n\n", i, data)
				b.send(ev)
				return nil
			})
			b.send([]byte("event: complete\ndata: {}\n\n"))
		}()
		w.WriteHeader(http.StatusAccepted)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	fmt.Fprintf(stdout, "rdev ready http=%s\n", ln.Addr())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

type hub struct {
	mu      sync.Mutex
	clients map[chan []byte]struct{}
	beat    chan struct{} // closed at the next heartbeat
}

func (b *hub) send(ev []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for c := range b.clients {
		select {
		case c <- ev:
		default: // too slow: dropped
			delete(b.clients, c)
			close(c)
		}
	}
}

func (b *hub) serve(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	c := make(chan []byte, 4096)
	b.mu.Lock()
	b.clients[c] = struct{}{}
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		if _, ok := b.clients[c]; ok {
			delete(b.clients, c)
			close(c)
		}
		b.mu.Unlock()
	}()
	if _, err := io.WriteString(w, "retry: 2000\n\nevent: connected\ndata: {}\n\n"); err != nil || rc.Flush() != nil {
		return
	}
	for {
		b.mu.Lock()
		beat := b.beat
		b.mu.Unlock()
		select {
		case ev, ok := <-c:
			if !ok {
				return
			}
			for more := true; more; {
				if _, err := w.Write(ev); err != nil {
					return
				}
				if bytes.HasPrefix(ev, []byte("event: complete")) {
					_ = rc.Flush()
					return
				}
				select {
				case ev, ok = <-c:
					if !ok {
						return
					}
				default:
					more = false
				}
			}
		case <-beat:
			if _, err := io.WriteString(w, ": ping\n\n"); err != nil {
				return
			}
		case <-r.Context().Done():
			return
		}
		if rc.Flush() != nil {
			return
		}
	}
}

// clientGroup is the client children of one measurement.
type clientGroup struct {
	cmds   []*exec.Cmd
	msgs   chan string // "<child> <line>"
	counts map[string]int
	res    clientResult
	nres   int
}

// startClients starts enough client children for conns connections, at
// most perChild each, each from its own loopback source address (from
// 127.0.<net>.1 on), with args added to every child's.
func startClients(ctx context.Context, conns, perChild, net3 int, args ...string) (*clientGroup, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	g := &clientGroup{msgs: make(chan string, 64), counts: map[string]int{}, res: clientResult{Hist: make(latencyHist, histBuckets)}}
	for i := 0; conns > 0; i++ {
		n := min(conns, perChild)
		conns -= n
		a := append([]string{"sse-clients", "-conns", strconv.Itoa(n), "-src", fmt.Sprintf("127.0.%d.%d", net3, i+1)}, args...)
		cmd := exec.CommandContext(ctx, self, a...)
		cmd.Stderr = os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		out, err := cmd.StdoutPipe()
		if err != nil {
			g.stop()
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			g.stop()
			return nil, err
		}
		g.cmds = append(g.cmds, cmd)
		go func() {
			sc := bufio.NewScanner(out)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				g.msgs <- sc.Text()
			}
			g.msgs <- "exited"
		}()
	}
	return g, nil
}

// wait waits until every child said word (its first word), within
// timeout; it merges the results of "result" lines.
func (g *clientGroup) wait(ctx context.Context, word string, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for g.counts[word] < len(g.cmds) {
		select {
		case m := <-g.msgs:
			w, rest, _ := strings.Cut(m, " ")
			g.counts[w]++
			switch w {
			case "exited":
				if g.counts["result"] < g.counts["exited"] {
					return errors.New("a client child exited before its result")
				}
			case "result":
				var r clientResult
				if err := json.Unmarshal([]byte(rest), &r); err != nil {
					return err
				}
				g.merge(r)
			}
		case <-t.C:
			return fmt.Errorf("%d of %d client processes said %q within %s", g.counts[word], len(g.cmds), word, timeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (g *clientGroup) merge(r clientResult) {
	s := &g.res
	s.Conns += r.Conns
	s.Final += r.Final
	s.Failed += r.Failed
	s.Lines += r.Lines
	s.Dups += r.Dups
	s.Missing += r.Missing
	if r.First != 0 && (s.First == 0 || r.First < s.First) {
		s.First = r.First
	}
	s.Last = max(s.Last, r.Last)
	s.Hist.merge(r.Hist)
	if s.Err == "" {
		s.Err = r.Err
	}
	g.nres++
}

// stop kills the children still running and waits for them.
func (g *clientGroup) stop() {
	for _, c := range g.cmds {
		_ = c.Process.Kill()
		_ = c.Wait()
	}
	g.cmds = nil
}
