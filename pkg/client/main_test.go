package client_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rdev-dev/rdev/pkg/client"
	"github.com/rdev-dev/rdev/pkg/contracts/openapi/openapitest"
)

// adminKey is the bootstrap admin key of the rdev node the tests share.
const adminKey = "rdev-client-test-admin-0123456789abcdef"

// node is the base URL of the `rdev up` process the tests share; each
// test works in projects of its own.
var node string

// transport is every test client's, so its idle connections can be
// closed before goleak looks for leaked goroutines.
var transport = &http.Transport{}

// TestMain builds the rdev binary and runs `rdev up` on free ports for
// the tests, a real server rather than a stand-in.
func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	transport.CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	dir, err := os.MkdirTemp("", "rdev-client-test-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "rdev")
	build := exec.Command("go", "build", "-o", bin, "github.com/rdev-dev/rdev/cmd/rdev")
	if out, err := build.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("build rdev: %w\n%s", err, out)
	}
	up := exec.Command(bin, "up", "--http-addr", "127.0.0.1:0", "--nats-addr", "127.0.0.1:0",
		"--data-dir", filepath.Join(dir, "data"), "--drain-timeout", "5s", "--kill-grace", "200ms",
		"--webhook-allow-cidrs", "127.0.0.0/8") // the webhook tests' receivers listen on loopback
	// Jobs run as this user: the data directory is private to it.
	up.Env = append(os.Environ(), "RDEV_BOOTSTRAP_API_KEY="+adminKey, "RDEV_JOB_USER="+fmt.Sprint(os.Getuid()))
	logs, err := os.Create(filepath.Join(dir, "rdev.log"))
	if err != nil {
		return 0, err
	}
	defer logs.Close()
	up.Stderr = logs
	stdout, err := up.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := up.Start(); err != nil {
		return 0, err
	}
	exited := make(chan struct{})
	go func() { _ = up.Wait(); close(exited) }()
	defer func() {
		_ = up.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = up.Process.Kill()
			<-exited
		}
	}()
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "rdev ready") {
				ready <- sc.Text()
			}
		}
	}()
	select {
	case line := <-ready:
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "http="); ok {
				node = "http://" + v
			}
		}
	case <-exited:
		b, _ := os.ReadFile(logs.Name())
		return 0, fmt.Errorf("rdev up exited before it was ready:\n%s", b)
	case <-time.After(60 * time.Second):
		return 0, errors.New("rdev up not ready within 60s")
	}
	code := m.Run()
	if code != 0 {
		b, _ := os.ReadFile(logs.Name())
		fmt.Fprintf(os.Stderr, "rdev up's log:\n%s\n", b)
	}
	return code, nil
}

// newClient returns a client of the shared node with key.
func newClient(t testing.TB, key string, opts ...client.Option) *client.Client {
	t.Helper()
	opts = append([]client.Option{client.WithAPIKey(key), client.WithHTTPClient(&http.Client{Transport: openapitest.Transport(t, transport)})}, opts...)
	return client.New(node, opts...)
}

// ctx is a test's context, bounded so a hung server fails the test.
func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	t.Cleanup(cancel)
	return c
}

// cutTransport breaks the first cuts event-stream responses after n bytes
// each, as a network failure would, mid-event.
type cutTransport struct {
	n    int
	cuts atomic.Int32
}

func (c *cutTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := transport.RoundTrip(r)
	if err == nil && r.Header.Get("Accept") == "text/event-stream" && c.cuts.Add(-1) >= 0 {
		resp.Body = &cutBody{rc: resp.Body, left: c.n}
	}
	return resp, err
}

var errCut = errors.New("connection cut by the test")

type cutBody struct {
	rc   io.ReadCloser
	left int
}

func (b *cutBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errCut
	}
	if len(p) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= n
	return n, err
}

func (b *cutBody) Close() error { return b.rc.Close() }
