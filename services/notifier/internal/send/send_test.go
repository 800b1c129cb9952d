package send_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"go.uber.org/goleak"

	"github.com/rdev-dev/rdev/services/notifier/internal/send"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// hit is a receiver that counts its requests.
func hit(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		if h != nil {
			h(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func port(srv *httptest.Server) string { return srv.URL[strings.LastIndexByte(srv.URL, ':')+1:] }

func request(url string) send.Request {
	return send.Request{URL: url, ID: "msg_1", Body: []byte(`{}`), Secrets: [][]byte{[]byte("0123456789abcdef0123456789abcdef")}, Now: time.Now()}
}

// Every internal target is refused, checked against the address dialed:
// loopback (v4, v6, IPv4-mapped), link-local metadata, private, a name
// resolving to loopback, and a name whose answer changes between a check
// and the dial; no request reaches the receiver, and nothing is retried.
func TestInternalTargetsAreRefused(t *testing.T) {
	t.Parallel()
	srv, n := hit(t, nil)
	p := port(srv)
	var lookups atomic.Int64
	resolve := func(_ context.Context, host string) ([]netip.Addr, error) {
		switch host {
		case "loopback.test":
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		case "rebind.test": // public when checked first, loopback when dialed
			if lookups.Add(1) == 1 {
				return []netip.Addr{netip.MustParseAddr("93.184.215.14")}, nil
			}
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		}
		return nil, errors.New("no such host")
	}
	s := send.New(send.Config{Timeout: 5 * time.Second, Resolve: resolve})
	t.Cleanup(s.Close)
	// A check made before the dial (as a validating API would) sees a
	// public address; the dial does not reuse it.
	if ips, _ := resolve(context.Background(), "rebind.test"); !ips[0].IsGlobalUnicast() || ips[0].IsPrivate() {
		t.Fatal("the rebinding resolver's first answer should look public")
	}
	for _, url := range []string{
		"http://127.0.0.1:" + p,
		"http://[::1]:" + p,
		"http://[::ffff:127.0.0.1]:" + p,
		"http://169.254.169.254/latest/meta-data/",
		"http://10.0.0.1/",
		"http://100.64.0.1/",
		"http://[fe80::1]/",
		"http://224.0.0.1/",
		"http://loopback.test:" + p,
		"http://rebind.test:" + p,
		"ftp://127.0.0.1:" + p,
	} {
		res := s.Send(context.Background(), request(url))
		if !errors.Is(res.Err, send.ErrRefused) || res.Status != 0 {
			t.Errorf("%s: %d %v, want refused", url, res.Status, res.Err)
		}
	}
	if n.Load() != 0 {
		t.Errorf("%d requests reached the receiver", n.Load())
	}
}

// The allow-list lets an operator's internal receivers in, and only
// those: a redirect to another loopback address is not followed.
func TestAllowListAndRedirects(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skip("no 127.0.0.2 here:", err)
	}
	var targetHits atomic.Int64
	target := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { targetHits.Add(1) }))
	target.Listener = l
	target.Start()
	t.Cleanup(target.Close)
	redirector, n := hit(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL, http.StatusFound)
	})
	s := send.New(send.Config{Timeout: 5 * time.Second, Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	t.Cleanup(s.Close)
	res := s.Send(context.Background(), request(redirector.URL))
	if res.Err != nil || res.Status != http.StatusFound || n.Load() != 1 {
		t.Fatalf("allow-listed receiver: %d %v (%d requests)", res.Status, res.Err, n.Load())
	}
	if targetHits.Load() != 0 {
		t.Error("the redirect was followed")
	}
	if res := s.Send(context.Background(), request(target.URL)); !errors.Is(res.Err, send.ErrRefused) {
		t.Errorf("127.0.0.2 outside the allow-list: %d %v", res.Status, res.Err)
	}
}

// An attempt carries the specification's headers, signed once per
// secret; the answer's body is read up to its cap, Retry-After is read,
// and a slow receiver times out.
func TestAttempt(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", 64<<10)
	stop := make(chan struct{})
	srv, _ := hit(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-stop
			return
		}
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte(big))
	})
	t.Cleanup(func() { close(stop) }) // before the server closes
	s := send.New(send.Config{Timeout: 300 * time.Millisecond, Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	t.Cleanup(s.Close)
	req := request(srv.URL)
	req.Secrets = append(req.Secrets, []byte("another secret, rotated out....."))
	res := s.Send(context.Background(), req)
	if res.Status != 429 || res.RetryAfter != 7*time.Second || len(res.Body) != 4096 {
		t.Fatalf("answer %d, retry after %s, %d body bytes", res.Status, res.RetryAfter, len(res.Body))
	}
	for i, sec := range req.Secrets {
		wh, _ := standardwebhooks.NewWebhookRaw(sec)
		if err := wh.Verify(req.Body, res.Sent); err != nil {
			t.Errorf("signature %d: %v", i, err)
		}
	}
	if res := s.Send(context.Background(), request(srv.URL+"/slow")); res.Err == nil || errors.Is(res.Err, send.ErrRefused) {
		t.Errorf("slow receiver: %d %v, want a timeout", res.Status, res.Err)
	}
}
