package streamer_test

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/streamer"
)

// The measurement of TestFollowedStreamCost at a larger scale, for
// docs/performance.md ("Scale of the work"):
//
//	go test -run TestFollowedStreamCost -count=1 . -args -streamcost.streams=2000 -streamcost.profile=/tmp/streamcost
//
// writes /tmp/streamcost.before.heap and /tmp/streamcost.after.heap (every
// allocation sampled), to read with
//
//	go tool pprof -sample_index=inuse_space -top -diff_base /tmp/streamcost.before.heap /tmp/streamcost.after.heap
var (
	costStreams = flag.Int("streamcost.streams", 0, "TestFollowedStreamCost: streams followed, one client each (default 200)")
	costOwn     = flag.Bool("streamcost.own", false, "TestFollowedStreamCost: every stream with a consumer of its own instead of on the shared live feed")
	costProfile = flag.String("streamcost.profile", "", "TestFollowedStreamCost: write heap profiles before and with the streams open to <this>.before.heap and <this>.after.heap")
)

// memPoint is the process's memory at one moment.
type memPoint struct {
	m          runtime.MemStats
	goroutines int
	rss        int64 // VmRSS, bytes; -1 where /proc is missing
}

func readMem(gc bool) memPoint {
	if gc {
		runtime.GC()
		runtime.GC() // the second shrinks the stacks the first found idle
	}
	var p memPoint
	runtime.ReadMemStats(&p.m)
	p.goroutines = runtime.NumGoroutine()
	p.rss = vmRSS()
	return p
}

// vmRSS returns the process's resident set from /proc, or -1.
func vmRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return -1
			}
			return kb << 10
		}
	}
	return -1
}

// perStream is what one stream added between two points, in bytes (and
// goroutines).
type perStream struct {
	goroutines                          float64
	rss, heapInuse, heapAlloc, stack    float64
	heapIdleKept, sys, heapObjectsCount float64
}

func diff(a, b memPoint, n int) perStream {
	d := func(x, y uint64) float64 { return (float64(y) - float64(x)) / float64(n) }
	return perStream{
		goroutines:       float64(b.goroutines-a.goroutines) / float64(n),
		rss:              float64(b.rss-a.rss) / float64(n),
		heapInuse:        d(a.m.HeapInuse, b.m.HeapInuse),
		heapAlloc:        d(a.m.HeapAlloc, b.m.HeapAlloc),
		stack:            d(a.m.StackInuse, b.m.StackInuse),
		heapIdleKept:     d(a.m.HeapIdle-a.m.HeapReleased, b.m.HeapIdle-b.m.HeapReleased),
		sys:              d(a.m.Sys-a.m.HeapReleased, b.m.Sys-b.m.HeapReleased),
		heapObjectsCount: d(a.m.HeapObjects, b.m.HeapObjects),
	}
}

func (p perStream) String() string {
	kib := func(v float64) string { return fmt.Sprintf("%.1f KiB", v/1024) }
	return fmt.Sprintf("%.2f goroutines, VmRSS %s, HeapInuse %s (HeapAlloc %s, %.0f objects), StackInuse %s, heap idle not returned %s, Sys-released %s",
		p.goroutines, kib(p.rss), kib(p.heapInuse), kib(p.heapAlloc), p.heapObjectsCount, kib(p.stack), kib(p.heapIdleKept), kib(p.sys))
}

// samplePeaks samples the process's memory every 50 ms until the
// function it returns is called, which returns the highest of each
// figure seen (each at its own moment).
func samplePeaks() func() memPoint {
	stop, done := make(chan struct{}), make(chan memPoint)
	go func() {
		var peak memPoint
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			p := readMem(false)
			peak.rss = max(peak.rss, p.rss)
			peak.goroutines = max(peak.goroutines, p.goroutines)
			peak.m.HeapInuse = max(peak.m.HeapInuse, p.m.HeapInuse)
			peak.m.StackInuse = max(peak.m.StackInuse, p.m.StackInuse)
			select {
			case <-tick.C:
			case <-stop:
				done <- peak
				return
			}
		}
	}()
	return func() memPoint {
		close(stop)
		return <-done
	}
}

func writeHeapProfile(t *testing.T, path string) {
	t.Helper()
	runtime.GC()
	writeProfile(t, "heap", path, 0)
}

func writeProfile(t *testing.T, name, path string, debug int) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup(name).WriteTo(f, debug); err != nil {
		t.Fatal(err)
	}
}

// TestFollowedStreamCost measures what a followed stream on the shared
// live feed costs the streamer: many streams, one idle client each (its
// job started, no line yet), opened at once as the scale benchmark opens
// them. It logs the cost per stream right after they opened (what the
// benchmark's VmRSS figure sees) and once the garbage collector has run
// (what the streams hold), and bounds the second: one goroutine per
// stream, the client's. It measures the whole process, so it does not run
// in parallel with other tests; the figures include the test's own side
// of each connection (a socket).
func TestFollowedStreamCost(t *testing.T) { //nolint:paralleltest // measures the process
	n := *costStreams
	if n <= 0 {
		n = 200
	}
	if *costProfile != "" {
		runtime.MemProfileRate = 512
		defer func() { runtime.MemProfileRate = 512 << 10 }()
	}
	// Every feed on the shared one, as past --sse-shared-feed-after.
	// The default heartbeat, as in the benchmark: the fixture's 100 ms
	// would send replays waiting their turn to read (ReadWait is the
	// heartbeat) through a retry each.
	cfg := streamer.Config{SharedFeedAfter: -1, Heartbeat: streamer.DefaultHeartbeat}
	if *costOwn {
		cfg.SharedFeedAfter = n + 100
	}
	f := setup(t, options{cfg: cfg})
	addr := strings.TrimPrefix(f.base, "http://")

	// The client side costs the process as little as it can: one
	// goroutine sends every request, then reads each stream in turn up to
	// its history's end (the started event: its replay is over, it waits
	// live), so that what the figures hold is the streamer's.
	request := func(j *job, token string) net.Conn {
		c, err := net.DialTimeout("tcp", addr, waitFor)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET /v1/streams/%s/events?token=%s HTTP/1.1\r\nHost: x\r\n\r\n", j.streamID, token)
		return c
	}
	waitLive := func(c net.Conn, j *job) error {
		_ = c.SetReadDeadline(time.Now().Add(stormWait))
		defer c.SetReadDeadline(time.Time{})
		br := bufio.NewReaderSize(c, 256)
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return fmt.Errorf("stream %s before its started event: %w", j.streamID, err)
			}
			if strings.HasPrefix(l, "event: "+contracts.SSEStatus) {
				return nil // the rest of the event, buffered, is dropped
			}
		}
	}
	newStreams := func(k int) ([]*job, []string) {
		jobs, tokens := make([]*job, k), make([]string, k)
		for i := range jobs {
			jobs[i] = f.newJob(t)
			jobs[i].event(t, contracts.EventStarted, 0)
			tokens[i] = url.QueryEscape(f.signer.Sign(access.StreamResource(jobs[i].streamID), time.Now().Add(time.Hour)))
		}
		return jobs, tokens
	}
	openAll := func(jobs []*job, tokens []string, sent ...func()) []net.Conn {
		conns := make([]net.Conn, len(jobs))
		for i, j := range jobs {
			conns[i] = request(j, tokens[i])
		}
		for _, f := range sent {
			f()
		}
		for i, c := range conns {
			if err := waitLive(c, jobs[i]); err != nil {
				t.Fatal(err)
			}
		}
		return conns
	}
	closeAll := func(conns []net.Conn) {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}

	jobs, tokens := newStreams(n)
	// Warm up: the shared feed running (it lingers 30 s once its last
	// stream left), pools and caches filled.
	warm := openAll(newStreams(20))
	closeAll(warm)
	await.Within(t, stormWait, "warm-up streams closed", func() bool { st := f.svc.Stats(); return st.Clients == 0 && st.Hubs == 0 })

	if *costProfile != "" {
		writeHeapProfile(t, *costProfile+".before.heap")
	}
	before := readMem(true)
	peaks := samplePeaks()
	conns := openAll(jobs, tokens, func() {
		if *costProfile != "" { // where the goroutines of the opening streams wait
			writeProfile(t, "goroutine", *costProfile+".opening.goroutines", 1)
		}
	})
	defer closeAll(conns)
	await.Within(t, stormWait, "every stream's hub running", func() bool {
		st := f.svc.Stats()
		return st.Clients == int64(n) && st.Hubs == n && st.FeedsShared+st.FeedsOwn == int64(n)
	})
	peak := peaks()
	burst := readMem(false)
	held := readMem(true)
	if *costProfile != "" {
		writeHeapProfile(t, *costProfile+".after.heap")
	}
	t.Logf("%d streams, per stream, right after they opened: %v", n, diff(before, burst, n))
	t.Logf("%d streams, per stream, after GC: %v", n, diff(before, held, n))
	t.Logf("%d streams, per stream, peak while they opened: VmRSS %.1f KiB, HeapInuse %.1f KiB, StackInuse %.1f KiB, %.2f goroutines",
		n, float64(peak.rss-before.rss)/1024/float64(n), (float64(peak.m.HeapInuse)-float64(before.m.HeapInuse))/1024/float64(n),
		(float64(peak.m.StackInuse)-float64(before.m.StackInuse))/1024/float64(n), float64(peak.goroutines-before.goroutines)/float64(n))
	t.Logf("process: before %d MiB VmRSS, %d MiB heap in use, %d KiB stacks; opened %d MiB VmRSS; after GC %d MiB VmRSS, %d MiB heap in use, %d KiB stacks",
		before.rss>>20, before.m.HeapInuse>>20, before.m.StackInuse>>10, burst.rss>>20, held.rss>>20, held.m.HeapInuse>>20, held.m.StackInuse>>10)

	// What the streams hold: the client's goroutine (its stack shrunk to
	// 4 KiB, see TestIdleConnectionCost) and no other; a quiet stream's
	// hub on the shared feed has none. The heap is bounded loosely: the
	// NATS server in this process moves it by KiBs per stream.
	d := diff(before, held, n)
	switch {
	case *costOwn: // the consumers' goroutines and memory are the NATS server's, in this process too
	case d.goroutines > 1.05:
		t.Errorf("%.2f goroutines per followed stream, want 1: the client's", d.goroutines)
	case raceEnabled: // the race detector deepens every frame and adds to the heap
	case d.stack > 5*1024:
		t.Errorf("%.0f B of stack per followed stream, want 4 KiB: the client's goroutine's", d.stack)
	case d.heapAlloc > 20*1024:
		t.Errorf("%.0f B of live heap per followed stream, want under 20 KiB (about 6 measured)", d.heapAlloc)
	}

	// Each stream still works: a line, then the end.
	for _, j := range jobs {
		j.line(t, 1)
		j.event(t, contracts.EventSucceeded, 1)
	}
	for i, c := range conns {
		b, err := readToEnd(c)
		if err != nil {
			t.Fatalf("stream %s: %v after %q", jobs[i].streamID, err, b)
		}
		if !bytes.Contains(b, []byte(`"seq":1`)) || !bytes.Contains(b, []byte("event: "+contracts.SSEComplete)) {
			t.Fatalf("stream %s: got %q, want line 1 and the complete event", jobs[i].streamID, b)
		}
	}
	closeAll(conns)
	await.Within(t, stormWait, "streams closed", func() bool { st := f.svc.Stats(); return st.Clients == 0 && st.Hubs == 0 })
}

// readToEnd reads a stream to the end the server gives it (the last
// chunk, then the close).
func readToEnd(c net.Conn) ([]byte, error) {
	var b bytes.Buffer
	_, err := b.ReadFrom(c)
	return b.Bytes(), err
}
