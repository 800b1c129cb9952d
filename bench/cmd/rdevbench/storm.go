package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rdev-dev/rdev/bench/internal/proc"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// The storm scenario: cfg.stormClients SSE clients connect at once to two
// streamer processes, spread over cfg.stormStreams live jobs that printed
// stormLines lines each; then one streamer is killed with SIGKILL and
// started again on the same address, and all its clients reconnect at
// once with Last-Event-ID; then the jobs print stormMore lines more and
// end. Every client must get every line exactly once, in order, and no
// stream may fail (an error event).
//
// A process here may hold at most 20,000 files, so the clients run in
// child processes (`rdevbench storm-client`), each connecting from its
// own loopback address.

const (
	stormLines     = 50 // lines each job prints before the storm
	stormMore      = 10 // and after the reconnect
	stormPerChild  = 5000
	stormWait      = 10 * time.Minute // bounds each phase on a loaded machine
	stormGoFile    = "go"             // the jobs print the rest once it exists
	stormPollSleep = "1"              // seconds between a job's looks for it
)

// stormOrder tells a child which streams to open where.
type stormOrder struct {
	// Local is the loopback address the child connects from.
	Local string `json:"local"`
	// Clients are the child's clients: an events URL each.
	Clients []string `json:"clients"`
	// Victim is the base URL of the streamer that will be killed: its
	// clients report when all of them are back.
	Victim string `json:"victim"`
}

// stormReport is a child's report of a phase.
type stormReport struct {
	Phase string `json:"phase"` // caught, reconnected, done
	At    int64  `json:"at"`    // unix nanoseconds
	// Counts, in the done report.
	Failed     int64 `json:"failed"`     // error events
	Lost       int64 `json:"lost"`       // lines skipped
	Duplicated int64 `json:"duplicated"` // lines received again
	Reconnects int64 `json:"reconnects"` // connections made again after a drop
	Incomplete int64 `json:"incomplete"` // clients that never got their complete event
}

func storm(ctx context.Context, e *env, cfg config) ([]figure, error) {
	up, _, a, err := split(ctx, e, "storm", cfg.stormStreams)
	if err != nil {
		return nil, err
	}
	upDir, err := dataDirOf(up)
	if err != nil {
		return nil, err
	}
	// Streamer b signs in as streamer a does: with the streamer seed in
	// up's data directory.
	natsArgs := func(addr string) []string {
		return []string{"streamer", "--nats-url", up.NATS, "--nats-nkey", seed(upDir, "streamer"), "--http-addr", addr}
	}
	b, err := e.start(ctx, "storm-streamer-b", natsArgs("127.0.0.1:0")...)
	if err != nil {
		return nil, err
	}
	// The jobs may run as another user (a worker started as root runs
	// them as nobody), who cannot enter the run's private directories.
	goDir, err := os.MkdirTemp("", "rdevbench-storm-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(goDir)
	if err := os.Chmod(goDir, 0o755); err != nil {
		return nil, err
	}
	goFile := filepath.Join(goDir, stormGoFile)
	script := fmt.Sprintf("seq 1 %d; while [ ! -e %s ]; do sleep %s; done; seq %d %d", stormLines, goFile, stormPollSleep,
		stormLines+1, stormLines+stormMore)
	urls := make([]string, cfg.stormStreams)
	for i := range urls {
		r, err := submit(ctx, up.HTTP, "bench", []string{"sh", "-c", script}, 30*time.Minute)
		if err != nil {
			return nil, err
		}
		urls[i] = r.EventsURL
	}
	// Every job has printed its first lines before the storm: the clients
	// replay them.
	for _, u := range urls {
		if err := waitLines(ctx, a.HTTP, u, stormLines); err != nil {
			return nil, err
		}
	}

	// The clients: half on each streamer, the streams spread over both.
	var orders []stormOrder
	for i := 0; i < cfg.stormClients; i++ {
		if i%stormPerChild == 0 {
			orders = append(orders, stormOrder{Local: fmt.Sprintf("127.0.%d.%d", 1+len(orders)/250, 2+len(orders)%250), Victim: b.HTTP})
		}
		base := a.HTTP
		if i%2 == 1 {
			base = b.HTTP
		}
		u, err := rebase(urls[(i/2)%len(urls)], base)
		if err != nil {
			return nil, err
		}
		o := &orders[len(orders)-1]
		o.Clients = append(o.Clients, u)
	}
	loadStart := loadAvg()
	t0 := time.Now()
	reports := make(chan stormReport, 4*len(orders))
	children, err := startStormChildren(ctx, orders, reports)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, c := range children {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	}()
	wait := func(phase string) (time.Time, error) {
		var last time.Time
		deadline := time.After(stormWait)
		for n := 0; n < len(orders); {
			select {
			case r, ok := <-reports:
				if !ok {
					return last, errors.New("a storm client exited early")
				}
				if r.Phase != phase {
					return last, fmt.Errorf("storm client: %s before %s", r.Phase, phase)
				}
				if t := time.Unix(0, r.At); t.After(last) {
					last = t
				}
				n++
			case <-deadline:
				return last, fmt.Errorf("storm clients not %s within %s", phase, stormWait)
			case <-ctx.Done():
				return last, ctx.Err()
			}
		}
		return last, nil
	}
	caught, err := wait("caught")
	if err != nil {
		return nil, err
	}
	connectAll := caught.Sub(t0)
	fmt.Fprintf(os.Stderr, "  storm: %d clients connected and caught up in %s\n", cfg.stormClients, connectAll.Round(time.Millisecond))
	memA, errA := proc.ReadMem(a.PID())
	memB, errB := proc.ReadMem(b.PID())
	if err := errors.Join(errA, errB); err != nil {
		return nil, err
	}

	// kill -9 streamer b, start it again on its address.
	addr := strings.TrimPrefix(b.HTTP, "http://")
	tKill := time.Now()
	if err := syscall.Kill(b.PID(), syscall.SIGKILL); err != nil {
		return nil, err
	}
	for b.Alive() == nil {
		time.Sleep(10 * time.Millisecond) // the kernel reaps it within milliseconds
	}
	b2, err := e.start(ctx, "storm-streamer-b2", natsArgs(addr)...)
	if err != nil {
		return nil, err
	}
	back, err := wait("reconnected")
	if err != nil {
		return nil, err
	}
	reconnectAll := back.Sub(tKill)
	fmt.Fprintf(os.Stderr, "  storm: the killed streamer's clients back %s after kill -9\n", reconnectAll.Round(time.Millisecond))
	memB2, err := proc.ReadMem(b2.PID())
	if err != nil {
		return nil, err
	}

	if err := os.WriteFile(goFile, nil, 0o644); err != nil {
		return nil, err
	}
	var total stormReport
	deadline := time.After(stormWait)
	for n := 0; n < len(orders); {
		select {
		case r, ok := <-reports:
			if !ok {
				return nil, errors.New("a storm client exited early")
			}
			if r.Phase != "done" {
				continue
			}
			total.Failed += r.Failed
			total.Lost += r.Lost
			total.Duplicated += r.Duplicated
			total.Reconnects += r.Reconnects
			total.Incomplete += r.Incomplete
			n++
		case <-deadline:
			return nil, fmt.Errorf("storm clients not done within %s", stormWait)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err := errors.Join(a.Alive(), b2.Alive()); err != nil {
		return nil, err
	}
	return []figure{
		fig("clients", float64(cfg.stormClients), "count"),
		fig("streams", float64(cfg.stormStreams), "count"),
		fig("client processes", float64(len(orders)), "count"),
		fig("load average at the start (1 min)", loadStart, ""),
		fig("time until every client connected and caught up", connectAll.Seconds(), "s"),
		fig("time from kill -9 until every client of it is back", reconnectAll.Seconds(), "s"),
		fig("connections made again after a drop", float64(total.Reconnects), "count"),
		fig("streamer a VmRSS with its clients", float64(memA.RSS)/mib, "MiB"),
		fig("streamer b VmRSS with its clients", float64(memB.RSS)/mib, "MiB"),
		fig("streamer b VmRSS after its clients reconnected", float64(memB2.RSS)/mib, "MiB"),
		fig("load average at the end (1 min)", loadAvg(), ""),
		target("failed streams (error events)", float64(total.Failed), "count", "<=", 0),
		target("clients without their complete event", float64(total.Incomplete), "count", "<=", 0),
		target("lines lost", float64(total.Lost), "count", "<=", 0),
		target("lines duplicated", float64(total.Duplicated), "count", "<=", 0),
	}, nil
}

// dataDirOf returns the --data-dir a process was started with.
func dataDirOf(p *proc.Process) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.PID()))
	if err != nil {
		return "", err
	}
	args := strings.Split(string(b), "\x00")
	for i, a := range args {
		if a == "--data-dir" && i+1 < len(args) {
			return args[i+1], nil
		}
	}
	return "", fmt.Errorf("%s has no --data-dir", p.Name)
}

// loadAvg is the machine's one-minute load average.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f, _ := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	return f
}

// rebase points an events URL at another streamer.
func rebase(eventsURL, base string) (string, error) {
	u, err := url.Parse(eventsURL)
	if err != nil {
		return "", err
	}
	b, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	u.Scheme, u.Host = b.Scheme, b.Host
	return u.String(), nil
}

// waitLines reads a stream until it has n lines.
func waitLines(ctx context.Context, base, eventsURL string, n uint64) error {
	s, err := follow(ctx, base, eventsURL)
	if err != nil {
		return err
	}
	defer s.Close()
	for got := uint64(0); got < n; {
		ev, err := s.Next()
		if err != nil {
			return fmt.Errorf("job's first lines: %w", err)
		}
		if ev.Name == contracts.SSEOutput {
			got++
		}
	}
	return nil
}

func startStormChildren(ctx context.Context, orders []stormOrder, reports chan<- stormReport) ([]*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var cmds []*exec.Cmd
	var wg sync.WaitGroup
	for _, o := range orders {
		in, err := json.Marshal(o)
		if err != nil {
			return cmds, err
		}
		cmd := exec.CommandContext(ctx, self, "storm-client")
		cmd.Stdin = strings.NewReader(string(in))
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			return cmds, err
		}
		if err := cmd.Start(); err != nil {
			return cmds, err
		}
		cmds = append(cmds, cmd)
		wg.Go(func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				var r stormReport
				if json.Unmarshal(sc.Bytes(), &r) == nil {
					reports <- r
				}
			}
		})
	}
	go func() { wg.Wait(); close(reports) }()
	return cmds, nil
}

// stormClient runs a storm client child: it reads a stormOrder from in
// and writes stormReports to w.
func stormClient(in io.Reader, w io.Writer) error {
	var o stormOrder
	if err := json.NewDecoder(in).Decode(&o); err != nil {
		return fmt.Errorf("read order: %w", err)
	}
	out := json.NewEncoder(w)
	var mu sync.Mutex
	report := func(r stormReport) {
		r.At = time.Now().UnixNano()
		mu.Lock()
		defer mu.Unlock()
		_ = out.Encode(r)
	}
	victims := 0
	for _, u := range o.Clients {
		if strings.HasPrefix(u, o.Victim+"/") {
			victims++
		}
	}
	var (
		caught, back                   sync.WaitGroup
		failed, lost, dup, reconn, inc atomic.Int64
		done                           sync.WaitGroup
	)
	caught.Add(len(o.Clients))
	back.Add(victims)
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(o.Local)}, Timeout: time.Minute}
	for _, u := range o.Clients {
		victim := strings.HasPrefix(u, o.Victim+"/")
		done.Go(func() {
			c := stormConn{url: u, dialer: dialer}
			r := c.run(caught.Done, func() {
				if victim {
					back.Done()
				}
			})
			failed.Add(c.failed)
			lost.Add(c.lost)
			dup.Add(c.dup)
			reconn.Add(c.reconnects)
			if !r {
				inc.Add(1)
			}
		})
	}
	caught.Wait()
	report(stormReport{Phase: "caught"})
	back.Wait()
	report(stormReport{Phase: "reconnected"})
	done.Wait()
	report(stormReport{Phase: "done", Failed: failed.Load(), Lost: lost.Load(), Duplicated: dup.Load(),
		Reconnects: reconn.Load(), Incomplete: inc.Load()})
	return nil
}

// stormConn is one client: it reads its stream to the complete event,
// reconnecting with Last-Event-ID whenever the connection drops.
type stormConn struct {
	url    string
	dialer *net.Dialer

	lastID                        string
	next                          uint64 // the line expected next
	failed, lost, dup, reconnects int64
}

// run returns whether the client got its complete event. caught is called
// once it has the lines stored before the storm; back once it is
// connected again after its first drop.
func (c *stormConn) run(caught, back func()) bool {
	c.next = 1
	var caughtOnce, backOnce sync.Once
	dropped := false
	deadline := time.Now().Add(3 * stormWait)
	for time.Now().Before(deadline) {
		complete, err := c.once(func() {
			if dropped {
				dropped = false
				c.reconnects++
				backOnce.Do(back)
			}
		}, func() {
			if c.next > stormLines {
				caughtOnce.Do(caught)
			}
		})
		if complete {
			caughtOnce.Do(caught)
			backOnce.Do(back)
			return true
		}
		if err != nil {
			dropped = true
			// As EventSource does: the streamer's retry: (2s), here with
			// jitter; retrying sooner turns a storm into a flood.
			time.Sleep(time.Second + rand.N(2*time.Second))
		}
	}
	caughtOnce.Do(caught)
	backOnce.Do(back)
	return false
}

// once reads one connection; connected is called once its response
// arrives, line after each output line.
func (c *stormConn) once(connected, line func()) (bool, error) {
	u, err := url.Parse(c.url)
	if err != nil {
		return false, err
	}
	conn, err := c.dialer.Dial("tcp", u.Host)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	req := "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\nAccept: text/event-stream\r\n"
	if c.lastID != "" {
		req += "Last-Event-ID: " + c.lastID + "\r\n"
	}
	if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
		return false, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("status %d", resp.StatusCode)
	}
	connected()
	br := bufio.NewReader(resp.Body)
	var name, data, id string
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return false, err
		}
		l = strings.TrimRight(l, "\r\n")
		switch {
		case strings.HasPrefix(l, "id:"):
			id = strings.TrimSpace(l[3:])
		case strings.HasPrefix(l, "event:"):
			name = strings.TrimSpace(l[6:])
		case strings.HasPrefix(l, "data:"):
			data = strings.TrimSpace(l[5:])
		case l == "" && name != "":
			if id != "" {
				c.lastID = id
			}
			switch name {
			case contracts.SSEOutput:
				var ol contracts.OutputLine
				if err := json.Unmarshal([]byte(data), &ol); err != nil {
					return false, err
				}
				switch {
				case ol.Seq < c.next:
					c.dup++
				case ol.Seq > c.next:
					c.lost += int64(ol.Seq - c.next)
					c.next = ol.Seq + 1
				default:
					c.next++
				}
				line()
			case contracts.SSEComplete:
				if c.next != stormLines+stormMore+1 {
					c.lost += int64(stormLines + stormMore + 1 - c.next)
				}
				return true, nil
			case contracts.SSEError:
				c.failed++
				return false, errors.New("error event: " + data)
			}
			name, data, id = "", "", ""
		}
	}
}
