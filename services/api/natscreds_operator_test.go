package api_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology/natsserver"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
	"github.com/rdev-dev/rdev/services/api"
)

// operatorMode is how the callout is configured on rdev's account JWT.
type operatorMode struct {
	// signingKey: the API signs with a signing key of the account, not
	// the account's own key (what nsc users usually hand out).
	signingKey bool
	// xkey: the account sets an xkey, so the server encrypts its
	// requests and expects encrypted answers.
	xkey bool
	// noAccount: the API is not told the account (NATSCalloutAccount).
	noAccount bool
	// system: the API signs in as the system account's user too, and so
	// closes revoked credentials' connections.
	system bool
}

// setupOperator is setupCallout under decentralized auth
// (natstest.StartOperator: the callout configured on rdev's account JWT,
// a default sentinel so that a direct subscriber connects with the token
// alone as under rdev up). rdev's users sign in with user JWTs of rdev's
// account; the API's carries natsserver.Permissions(RoleAPI).
func setupOperator(t *testing.T, ttl time.Duration, mode operatorMode) calloutBundle {
	t.Helper()
	o := natstest.StartOperator(t, natstest.OperatorConfig{XKey: mode.xkey})
	issuer := o.AccountKey
	if mode.signingKey {
		issuer = o.SigningKey
	}
	seed := func(kp nkeys.KeyPair) []byte {
		if kp == nil {
			return nil
		}
		s, err := kp.Seed()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	account := o.Account
	if mode.noAccount {
		account = ""
	}
	return calloutWith(t, o.URL, func(r natsserver.Role) nats.Option { return nats.UserJWTAndSeed(o.User(r)) },
		api.Config{NATSCredentialTTL: ttl, NATSCalloutSeed: seed(issuer), NATSCalloutAccount: account, NATSCalloutXKeySeed: seed(o.XKey)}, mode.system)
}

// Under operator mode the same callout admits a minted credential with
// exactly the reader's permissions, and refuses a revoked key's and an
// expired one, whether the API signs with the account's key or a
// signing key of it, and with the account's requests in the clear or
// encrypted to its xkey.
func TestNATSCredentialsUnderOperatorMode(t *testing.T) {
	t.Parallel()
	for name, mode := range map[string]operatorMode{
		"account key":          {},
		"signing key and xkey": {signingKey: true, xkey: true},
		"signing key, no xkey": {signingKey: true},
		"account key and xkey": {xkey: true},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setupOperator(t, 0, mode)
			key := b.newKey(t, `{"name":"reader","scopes":["project:demo:read"]}`)
			c := b.credential(t, "demo", key.Key)
			r := b.mustConnect(t, c)

			b.readsOnlyItsProject(t, r)

			if resp, rb := b.do(t, http.MethodDelete, "/v1/keys/"+key.ID, "", nil); resp.StatusCode != http.StatusOK {
				t.Fatalf("revoke: %d %s", resp.StatusCode, rb)
			}
			refusedAtConnect(t, b, c, "a revoked key's credential")
			expired := b.credential(t, "demo", b.admin)
			expired.Token = b.signer(t).SignFor(access.NATSResource("demo", "expired-nonce"),
				access.Grant{KeyID: b.adminKeyID(t), Incarnation: b.incarnation(t, "demo")}, time.Now().Add(-time.Second))
			refusedAtConnect(t, b, expired, "an expired credential")
		})
	}
}

// The nats CLI with a credential under operator mode: a token alone (the
// default sentinel does the rest), as under rdev up.
func TestNATSCLIWithCredentialsUnderOperatorMode(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the nats CLI")
	}
	t.Parallel()
	natsCLIWithCredentials(t, natsCLI(t), setupOperator(t, 0, operatorMode{signingKey: true, xkey: true}))
}

// A signing key signs for its account only when the JWTs name the
// account: without NATSCalloutAccount the callout refuses (and logs which
// setting is missing) rather than answer what the server would refuse.
func TestNATSCredentialsUnderOperatorModeWithASigningKeyNeedTheAccount(t *testing.T) {
	t.Parallel()
	b := setupOperator(t, 0, operatorMode{signingKey: true, noAccount: true})
	refusedAtConnect(t, b, b.credential(t, "demo", b.admin2(t)), "a credential of a callout without its account")
}

// Under operator mode too the server closes a connection when its
// credential expires (the user JWT the callout issued expires with it).
func TestNATSCredentialConnectionEndsAtExpiryUnderOperatorMode(t *testing.T) {
	t.Parallel()
	setupOperator(t, 2*time.Second, operatorMode{signingKey: true, xkey: true}).connectionEndsAtExpiry(t)
}

// setupServerConfXKey is setupCallout with a server configured from a
// file as deploy/nats/server.conf is, but with rdev's users in a named
// account (RDEV) and an auth_callout that names that account and an
// xkey: the server encrypts its requests, and the callout places users
// in RDEV.
func setupServerConfXKey(t *testing.T) calloutBundle {
	t.Helper()
	creds, err := natsserver.EnsureCredentials(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// Every role is a user of RDEV (the permissions file defines the
	// five, and the server refuses one it does not use) and an auth user.
	var users, authUsers []string
	for _, u := range creds.Users() {
		users = append(users, fmt.Sprintf("{nkey: %s, permissions: $%s}", u.NKey, natsserver.PermissionsVar(u.Role)))
		authUsers = append(authUsers, u.NKey)
	}
	xkp, err := nkeys.CreateCurveKeys()
	if err != nil {
		t.Fatal(err)
	}
	xpub, _ := xkp.PublicKey()
	xseed, _ := xkp.Seed()
	dir := t.TempDir()
	conf := fmt.Sprintf(`listen: "127.0.0.1:-1"
jetstream { store_dir: %q }
%s
accounts {
  RDEV {
    jetstream: enabled
    users: [
      %s
    ]
  }
}
authorization {
  auth_callout {
    issuer: %s
    account: RDEV
    auth_users: [%s]
    xkey: %s
  }
}
`, filepath.Join(dir, "js"), natsserver.PermissionsConf(), strings.Join(users, "\n      "),
		creds.CalloutIssuer, strings.Join(authUsers, ", "), xpub)
	path := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, opts)
	return calloutOn(t, srv.ClientURL(), creds, api.Config{NATSCalloutAccount: "RDEV", NATSCalloutXKeySeed: xseed}, false)
}

// With a server's authorization block too, the callout answers requests
// encrypted to its xkey and places users in the auth_callout account the
// block names, where rdev's subjects are.
func TestNATSCredentialsUnderServerConfigWithXKeyAndAccount(t *testing.T) {
	t.Parallel()
	b := setupServerConfXKey(t)
	b.readsOnlyItsProject(t, b.mustConnect(t, b.credential(t, "demo", b.admin2(t))))
}

// readsOnlyItsProject checks that r, connected with a credential of demo,
// follows demo's output live and is refused another project's output,
// publishing a job and publishing to the callout subject.
func (b calloutBundle) readsOnlyItsProject(t *testing.T, r *reader) {
	t.Helper()
	live, err := r.nc.SubscribeSync(contracts.SubjectProjectOutput("demo"))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	b.line(t, "other", "o1", 1)
	b.line(t, "demo", "s1", 1)
	if m, err := live.NextMsg(20 * time.Second); err != nil || m.Subject != contracts.SubjectOutput("demo", "s1") {
		t.Fatalf("live line: %v %v", m, err)
	}
	if _, err := r.nc.SubscribeSync(contracts.SubjectProjectOutput("other")); err != nil {
		t.Fatal(err)
	}
	r.refused(t, "subscribe to another project's output", contracts.SubjectProjectOutput("other"))
	for _, subj := range []string{contracts.SubjectJob(contracts.PriorityNormal, "demo"), natsserver.AuthCalloutSubject} {
		if err := r.nc.Publish(subj, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		r.refused(t, "publish "+subj, subj)
	}
}

// startServer runs a NATS server with opts until the test ends.
func startServer(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	opts.NoLog, opts.NoSigs = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(30 * time.Second) {
		t.Fatal("the NATS server is not ready")
	}
	return srv
}
