package streamer_test

import (
	"bufio"
	"fmt"
	"net"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/await"
)

// TestIdleConnectionCost holds the memory of an idle event stream down:
// its connection taken over from net/http (no request goroutine, no
// background read, no net/http buffers), one goroutine whose stack the
// runtime shrinks to 4 KiB. It measures the whole
// process, so it does not run in parallel with other tests.
func TestIdleConnectionCost(t *testing.T) { //nolint:paralleltest // measures the process
	f := setup(t, options{})
	j := f.newJob(t)
	j.line(t, 1)
	tok := url.QueryEscape(f.signer.Sign(access.StreamResource(j.streamID), time.Now().Add(time.Hour)))
	addr := strings.TrimPrefix(f.base, "http://")
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET /v1/streams/%s/events?token=%s HTTP/1.1\r\nHost: x\r\n\r\n", j.streamID, tok)
		br := bufio.NewReader(c)
		for { // until the stream is live: its first line came
			l, err := br.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(l, `line 1`) {
				return c
			}
		}
	}
	for range 20 { // warm up
		dial().Close()
	}
	await.Until(t, "warm-up streams closed", func() bool { return f.svc.Stats().Clients == 0 })
	measure := func() (runtime.MemStats, int) {
		runtime.GC()
		runtime.GC() // the second shrinks the stacks the first found idle
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m, runtime.NumGoroutine()
	}
	m0, g0 := measure()
	const n = 500
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		conns = append(conns, dial())
	}
	m1, g1 := measure()
	goroutines := float64(g1-g0) / n
	stack := float64(int64(m1.StackInuse)-int64(m0.StackInuse)) / n
	heap := float64(int64(m1.HeapInuse)-int64(m0.HeapInuse)) / n
	t.Logf("per idle stream: %.2f goroutines, %.0f B of stack, %.0f B of heap (with the test's client side)", goroutines, stack, heap)
	if goroutines > 1.05 {
		t.Errorf("%.2f goroutines per idle stream, want 1", goroutines)
	}
	if !raceEnabled && stack > 4.5*1024 {
		t.Errorf("%.0f B of stack per idle stream, want 4 KiB: is the waiting goroutine deeper than 1,200 bytes?", stack)
	}
	// The heap is logged, not checked: what other goroutines of the test
	// process (the NATS server) hold at the moment moves it by KiBs.
	// Every stream notices its client hanging up.
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	await.Until(t, "streams closed", func() bool { return f.svc.Stats().Clients == 0 })
}
