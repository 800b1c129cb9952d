package sse_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/services/streamer/internal/sse"
)

// takenServer serves an event stream on a connection taken over from
// net/http: the handler returns at once and a goroutine of the test
// writes three events, waits for release, writes the last and ends the
// stream.
func takenServer(t *testing.T, release <-chan struct{}) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Access-Control-Allow-Origin", "*") // set by middleware before the handler
		w := sse.NewWriter(rw, 10*time.Second)
		if err := w.Take(r, 1500*time.Millisecond); err != nil {
			t.Error(err)
			return
		}
		if w.Conn() == nil {
			t.Error("the connection was not taken over")
			return
		}
		go func() {
			for i := range 3 {
				_ = w.Event(uint64(i+1), "output", []byte(strings.Repeat("x", 10*i)))
			}
			_ = w.Flush()
			<-release
			_ = w.Event(4, "complete", []byte("{}"))
			if err := w.Close(); err != nil {
				t.Error(err)
			}
		}()
	}))
	t.Cleanup(srv.Close)
	return srv
}

const takenBody = "retry: 1500\n\n" +
	"id: 1\nevent: output\ndata: \n\n" +
	"id: 2\nevent: output\ndata: xxxxxxxxxx\n\n" +
	"id: 3\nevent: output\ndata: xxxxxxxxxxxxxxxxxxxx\n\n" +
	"id: 4\nevent: complete\ndata: {}\n\n"

// readTaken checks the headers, reads the events flushed before release
// (they arrive while the stream is still open), releases the last one and
// reads the rest to the stream's end.
func readTaken(t *testing.T, resp *http.Response, release chan<- struct{}) {
	t.Helper()
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" ||
		resp.Header.Get("Access-Control-Allow-Origin") != "*" || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("status %d, headers %v", resp.StatusCode, resp.Header)
	}
	if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
		t.Fatalf("transfer encoding %v, want chunked", resp.TransferEncoding)
	}
	br := bufio.NewReader(resp.Body)
	first, _, _ := strings.Cut(takenBody, "id: 4")
	got := make([]byte, len(first))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != first {
		t.Fatalf("before release: %q, %v", got, err)
	}
	close(release)
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("reading to the end: %v", err)
	}
	if string(got)+string(rest) != takenBody {
		t.Fatalf("got %q\nwant %q", string(got)+string(rest), takenBody)
	}
}

func TestTakeWritesChunkedStream(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := takenServer(t, release)
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	// The stream's end closes the connection; a client told keep-alive
	// pools it and sends its next request into the close (a POST then
	// fails with a reset: seen in rdevbench priority). A proxy's own
	// connection to its client is its business.
	if !resp.Close {
		t.Fatalf("Connection %q: the client is not told the connection closes after the stream", resp.Header.Get("Connection"))
	}
	readTaken(t, resp, release)
}

// The dashboard may sit behind a reverse proxy under a path prefix: the
// taken-over stream passes through it as it is, event by event.
func TestTakenStreamThroughReverseProxy(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := takenServer(t, release)
	target, _ := url.Parse(srv.URL)
	proxy := httptest.NewServer(http.StripPrefix("/rdev", &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
	}}))
	t.Cleanup(proxy.Close)
	resp, err := proxy.Client().Get(proxy.URL + "/rdev/v1/streams/s/events")
	if err != nil {
		t.Fatal(err)
	}
	readTaken(t, resp, release)
}

// Where the response cannot be taken over, Take opens it as Open does.
func TestTakeFallsBackToOpen(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	w := sse.NewWriter(rec, time.Second)
	if err := w.Take(httptest.NewRequest(http.MethodGet, "/", nil), time.Second); err != nil {
		t.Fatal(err)
	}
	if w.Conn() != nil || rec.Body.String() != "retry: 1000\n\n" || !rec.Flushed {
		t.Fatalf("conn %v, body %q, flushed %v", w.Conn(), rec.Body.String(), rec.Flushed)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// A client that stops reading blocks a write past the timeout: the write
// fails with os.ErrDeadlineExceeded instead of holding its goroutine.
func TestTakenWriteTimesOut(t *testing.T) {
	t.Parallel()
	failed := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w := sse.NewWriter(rw, 200*time.Millisecond)
		if err := w.Take(r, time.Second); err != nil {
			failed <- err
			return
		}
		go func() {
			defer w.Close()
			data := []byte(strings.Repeat("x", 16<<10))
			for i := uint64(1); ; i++ { // until the socket buffers fill
				if err := w.Event(i, "output", data); err != nil {
					failed <- err
					return
				}
				if err := w.Flush(); err != nil {
					failed <- err
					return
				}
			}
		}()
	}))
	t.Cleanup(srv.Close)
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	select { // never read: generous, the machine may be loaded
	case err := <-failed:
		var ne net.Error
		if !errorsAs(err, &ne) || !ne.Timeout() {
			t.Fatalf("write failed with %v, want a timeout", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a write to a client that reads nothing did not time out")
	}
}
