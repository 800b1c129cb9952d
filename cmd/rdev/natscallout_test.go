package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/rdev-dev/rdev/cmd/rdev/internal/natsconn"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology/natsserver"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
)

// rdev api serves the auth callout of a server in operator mode from its
// flags as docs/nats.md tells an operator to set them: its user's
// --nats-creds, a signing key of rdev's account in
// --nats-callout-key-file, the account in --nats-callout-account, and the
// account's curve key in --nats-callout-xkey-file (both key files as
// nk -pubout writes them). A credential it mints follows its project
// live and is refused another project's output.
func TestAPIServesTheCalloutUnderOperatorMode(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	t.Parallel()
	o := natstest.StartOperator(t, natstest.OperatorConfig{XKey: true})
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		t.Helper()
		p := filepath.Join(dir, name)
		must(t, os.WriteFile(p, b, 0o600), "write %s", name)
		return p
	}
	nkFile := func(name string, kp nkeys.KeyPair) string {
		t.Helper()
		seed, err := kp.Seed()
		must(t, err, "seed")
		pub, err := kp.PublicKey()
		must(t, err, "public key")
		return write(name, []byte(string(seed)+"\n"+pub+"\n"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	must(t, run(ctx, []string{"provision", "--nats-url", o.URL, "--nats-creds", write("admin.creds", o.Creds(t, natsserver.RoleAdmin))},
		io.Discard, io.Discard), "rdev provision as admin")
	api := startProcess(t, "api", "--nats-url", o.URL, "--http-addr", "127.0.0.1:0",
		"--nats-creds", write("api.creds", o.Creds(t, natsserver.RoleAPI)),
		"--nats-callout-key-file", nkFile("callout.nk", o.SigningKey),
		"--nats-callout-account", o.Account,
		"--nats-callout-xkey-file", nkFile("callout-xkey.nk", o.XKey))
	lines, refusedElsewhere := followDirect(t, api.http, o.URL)

	writer, err := nats.Connect(o.URL, nats.UserJWTAndSeed(o.User(natsserver.RoleWorker)))
	must(t, err, "connect as the worker")
	defer writer.Close()
	must(t, writer.Publish(contracts.SubjectOutput("direct", "s1"), []byte(`{}`)), "publish a line")
	m, err := lines.NextMsg(20 * time.Second)
	must(t, err, "the project's line")
	if m.Subject != contracts.SubjectOutput("direct", "s1") {
		t.Fatalf("line on %s", m.Subject)
	}
	refusedElsewhere()
}

// followDirect creates the projects direct and elsewhere on the API at
// apiURL and connects to the NATS server at natsURL with a credential of
// direct, subscribed to both projects' output: it returns the
// subscription to direct's, and a check that waits for the server's
// refusal of elsewhere's.
func followDirect(t *testing.T, apiURL, natsURL string) (*nats.Subscription, func()) {
	t.Helper()
	for _, p := range []string{"direct", "elsewhere"} {
		if code, b := call(t, http.MethodPost, apiURL+"/v1/projects", map[string]string{"id": p}); code != http.StatusCreated {
			t.Fatalf("create project %s: %d %s", p, code, b)
		}
	}
	code, b := call(t, http.MethodPost, apiURL+"/v1/projects/direct/nats-credentials", nil)
	if code != http.StatusCreated {
		t.Fatalf("nats-credentials: %d %s", code, b)
	}
	c := mustJSON[contracts.NATSCredentials](t, b)
	errs := make(chan error, 8)
	nc, err := nats.Connect(natsURL, nats.Token(c.Token),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	must(t, err, "connect with the credential")
	t.Cleanup(nc.Close)
	lines, err := nc.SubscribeSync(contracts.SubjectProjectOutput("direct"))
	must(t, err, "subscribe")
	_, err = nc.SubscribeSync(contracts.SubjectProjectOutput("elsewhere"))
	must(t, err, "subscribe elsewhere")
	must(t, nc.Flush(), "flush")
	return lines, func() {
		t.Helper()
		select {
		case err := <-errs:
			if !errorsIsPermission(err) {
				t.Fatalf("subscribing elsewhere: %v, want a permissions violation", err)
			}
		case <-time.After(30 * time.Second): // generous: the machine is loaded
			t.Fatal("subscribing to another project's output was not refused")
		}
	}
}

// An nkey file is read as nk writes it (-pubout: the seed, then the
// public key) or as a bare seed.
func TestSeedLine(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"SXSEED\nXPUBLIC\n": "SXSEED",
		"  SASEED  \n":      "SASEED",
		"\nSASEED\r\nAPUB":  "SASEED",
		"SASEED":            "SASEED",
	} {
		if got := string(seedLine([]byte(in))); got != want {
			t.Errorf("seedLine(%q) = %q, want %q", in, got, want)
		}
	}
}

// The API signs in as the system user with one of its settings: a creds
// file (operator mode) before an nkey before a user and password; a user
// without a password is no setting (a chart's optional Secret key left
// out), so the API warns instead of failing to sign in.
func TestSystemAuth(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		flags apiFlags
		want  natsconn.Config
		ok    bool
	}{
		{"creds", apiFlags{NATSSystemCreds: "sys.creds", NATSSystemNKey: "sys.nk", NATSSystemUser: "system", NATSSystemPassword: "pw"},
			natsconn.Config{Creds: "sys.creds"}, true},
		{"nkey", apiFlags{NATSSystemNKey: "sys.nk", NATSSystemUser: "system", NATSSystemPassword: "pw"}, natsconn.Config{NKey: "sys.nk"}, true},
		{"password", apiFlags{NATSSystemUser: "system", NATSSystemPassword: "pw"}, natsconn.Config{User: "system", Password: "pw"}, true},
		{"user without password", apiFlags{NATSSystemUser: "system"}, natsconn.Config{User: "system"}, false},
		{"none", apiFlags{}, natsconn.Config{}, false},
	} {
		got, ok := c.flags.systemAuth(natsconn.Config{})
		if got != c.want || ok != c.ok {
			t.Errorf("%s: systemAuth = %+v, %v; want %+v, %v", c.name, got, ok, c.want, c.ok)
		}
	}
}
