package api_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
)

// natsCLI builds the nats CLI v0.5.0 (natstest.CLI).
func natsCLI(t *testing.T) string { return natstest.CLI(t) }

// The nats CLI with a credential: `nats sub` receives the project's lines
// (and no other project's), and `nats pub` to a job subject is refused by
// the server.
func TestNATSCLIWithCredentials(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the nats CLI")
	}
	t.Parallel()
	natsCLIWithCredentials(t, natsCLI(t), setupCallout(t, 0))
}

// natsCLIWithCredentials runs the nats CLI bin with a credential of b's
// API: it follows demo's lines and may not publish a job.
func natsCLIWithCredentials(t *testing.T, bin string, b calloutBundle) {
	t.Helper()
	c := b.credential(t, "demo", b.admin2(t))
	conn := []string{"--server", b.nurl, "--token", c.Token}

	// Generous: the CLI's start and the server's callout on a loaded machine.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sub := exec.CommandContext(ctx, bin, append(conn, "sub", contracts.SubjectProjectOutput("demo"), "--count", "2")...)
	// One pipe for both: the CLI says it subscribed on stderr and prints
	// messages on stdout.
	stdout, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	sub.Stdout, sub.Stderr = w, w
	err = sub.Start()
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			lines <- s.Text()
		}
	}()
	// Publish once the CLI says it subscribed.
	var out []string
	for subscribed := false; !subscribed; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("nats sub ended before subscribing: %v\noutput %q", sub.Wait(), out)
			}
			out = append(out, l)
			subscribed = strings.Contains(l, "Subscribing on")
		case <-ctx.Done():
			t.Fatalf("nats sub never subscribed: output %q", out)
		}
	}
	// The CLI says it subscribes before the server has the subscription,
	// and a plain subscription replays nothing: publish a round (another
	// project's line first) until the CLI has had its two and exits.
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	seq := uint64(1)
read:
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				break read
			}
			out = append(out, l)
		case <-tick.C:
			b.line(t, "other", "o1", seq)
			b.line(t, "demo", "s1", seq)
			seq++
		case <-ctx.Done():
			t.Fatalf("nats sub got no two lines: output %q", out)
		}
	}
	if err := sub.Wait(); err != nil {
		t.Fatalf("nats sub: %v\noutput %q", err, out)
	}
	all := strings.Join(out, "\n")
	if strings.Count(all, "demo line") != 2 || strings.Contains(all, "other line") {
		t.Fatalf("nats sub printed:\n%s", all)
	}

	before := natstest.Msgs(t, b.writer, contracts.StreamJobs)
	pub := exec.CommandContext(ctx, bin, append(conn, "pub", contracts.SubjectJob(contracts.PriorityNormal, "demo"), `{"v":1}`)...)
	pubOut, _ := pub.CombinedOutput()
	if !strings.Contains(strings.ToLower(string(pubOut)), "permissions violation") {
		t.Errorf("nats pub to a job subject: the CLI did not report the server's refusal:\n%s", pubOut)
	}
	if n := natstest.Msgs(t, b.writer, contracts.StreamJobs); n != before {
		t.Fatalf("RDEV_JOBS holds %d messages after nats pub, %d before", n, before)
	}
}
