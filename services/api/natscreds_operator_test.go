package api_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology/natsserver"
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
}

// setupOperator is setupCallout under decentralized auth: a real embedded
// NATS server in operator mode (trusted operator, a memory resolver
// preloaded with the system account and rdev's account, JetStream enabled
// for rdev's account), the callout configured on rdev's account JWT with
// the API's and the admin's user as its auth users, and a default
// sentinel, so that a direct subscriber connects with the token alone as
// under rdev up. rdev's users sign in with user JWTs of rdev's account;
// the API's carries natsserver.Permissions(RoleAPI).
func setupOperator(t *testing.T, ttl time.Duration, mode operatorMode) calloutBundle {
	t.Helper()
	create := func(f func() (nkeys.KeyPair, error)) (nkeys.KeyPair, string) {
		kp, err := f()
		if err != nil {
			t.Fatal(err)
		}
		pub, err := kp.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		return kp, pub
	}
	seed := func(kp nkeys.KeyPair) []byte {
		s, err := kp.Seed()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	encode := func(c interface {
		Encode(nkeys.KeyPair) (string, error)
	}, kp nkeys.KeyPair) string {
		s, err := c.Encode(kp)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	okp, opub := create(nkeys.CreateOperator)
	_, syspub := create(nkeys.CreateAccount)
	akp, apub := create(nkeys.CreateAccount)
	apiKP, apiPub := create(nkeys.CreateUser)
	adminKP, adminPub := create(nkeys.CreateUser)

	operator := jwt.NewOperatorClaims(opub)
	operator.SystemAccount = syspub
	encode(operator, okp) // fills in the issuer the server checks
	sys := jwt.NewAccountClaims(syspub)
	account := jwt.NewAccountClaims(apub)
	account.Name = "rdev"
	account.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	account.Authorization.AuthUsers.Add(apiPub, adminPub)
	issuer := akp
	if mode.signingKey {
		var spub string
		issuer, spub = create(nkeys.CreateAccount)
		account.SigningKeys.Add(spub)
	}
	var xseed []byte
	if mode.xkey {
		xkp, xpub := create(nkeys.CreateCurveKeys)
		account.Authorization.XKey = xpub
		xseed = seed(xkp)
	}
	resolver := &server.MemAccResolver{}
	for pub, claims := range map[string]string{syspub: encode(sys, okp), apub: encode(account, okp)} {
		if err := resolver.Store(pub, claims); err != nil {
			t.Fatal(err)
		}
	}
	user := func(pub string, perms jwt.Permissions, bearer bool) string {
		uc := jwt.NewUserClaims(pub)
		uc.Permissions = perms
		uc.BearerToken = bearer
		return encode(uc, akp)
	}
	// The sentinel: whoever connects without a user JWT is this bearer
	// user of rdev's account, allowed nothing, and so goes to the callout.
	nothing := jwt.Permissions{Pub: jwt.Permission{Deny: []string{">"}}, Sub: jwt.Permission{Deny: []string{">"}}}
	_, sentinelPub := create(nkeys.CreateUser)

	// The CONNECT of a user whose JWT carries rdev's least privilege (the
	// API's is about 7 KiB) exceeds the default 4 KiB control line.
	srv := startServer(t, &server.Options{Host: "127.0.0.1", Port: -1,
		JetStream: true, StoreDir: t.TempDir(), MaxControlLine: 16 << 10,
		TrustedOperators: []*jwt.OperatorClaims{operator}, SystemAccount: syspub, AccountResolver: resolver,
		DefaultSentinel: user(sentinelPub, nothing, true)})
	return calloutWith(t, srv.ClientURL(), func(r natsserver.Role) nats.Option {
		switch r {
		case natsserver.RoleAdmin:
			return nats.UserJWTAndSeed(user(adminPub, jwt.Permissions{}, false), string(seed(adminKP)))
		case natsserver.RoleAPI:
			return nats.UserJWTAndSeed(user(apiPub, userPermissions(natsserver.Permissions(r)), false), string(seed(apiKP)))
		}
		t.Fatalf("no user for %s", r)
		return nil
	}, api.Config{NATSCredentialTTL: ttl, NATSCalloutSeed: seed(issuer), NATSCalloutAccount: apub, NATSCalloutXKeySeed: xseed})
}

// userPermissions is p as a user JWT's permissions.
func userPermissions(p *server.Permissions) jwt.Permissions {
	var out jwt.Permissions
	out.Pub.Allow.Add(p.Publish.Allow...)
	out.Sub.Allow.Add(p.Subscribe.Allow...)
	if p.Response != nil {
		out.Resp = &jwt.ResponsePermission{MaxMsgs: p.Response.MaxMsgs, Expires: p.Response.Expires}
	}
	return out
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
	return calloutOn(t, srv.ClientURL(), creds, api.Config{NATSCalloutAccount: "RDEV", NATSCalloutXKeySeed: xseed})
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
