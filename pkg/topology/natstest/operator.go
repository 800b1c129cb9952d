package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/rdev-dev/rdev/pkg/topology/natsserver"
)

// Operator is an embedded NATS server under decentralized auth (operator
// mode), set up as docs/nats.md's "Operator configuration" tells an
// operator to with nsc: a trusted operator, a memory resolver preloaded
// with the system account and rdev's account, JetStream enabled for
// rdev's account, the auth callout configured on rdev's account JWT with
// every role user as an auth user, and a default sentinel (a bearer user
// allowed nothing) so that a client with a token alone goes to the
// callout.
type Operator struct {
	// URL is the server's client URL.
	URL string
	// Account is rdev's account's public key (A…).
	Account string
	// AccountKey is rdev's account's own key.
	AccountKey nkeys.KeyPair
	// SigningKey is a signing key of rdev's account.
	SigningKey nkeys.KeyPair
	// XKey is the curve key the account JWT names as the callout's
	// xkey; nil unless OperatorConfig.XKey.
	XKey nkeys.KeyPair

	users map[natsserver.Role]operatorUser
}

type operatorUser struct {
	jwt  string
	seed string
}

// OperatorConfig says how rdev's account configures the callout.
type OperatorConfig struct {
	// XKey: the account sets an xkey, so the server encrypts its
	// requests to the callout and expects encrypted answers.
	XKey bool
}

// StartOperator starts an operator-mode server; t.Cleanup stops it.
func StartOperator(tb testing.TB, cfg OperatorConfig) *Operator {
	tb.Helper()
	create := func(f func() (nkeys.KeyPair, error)) (nkeys.KeyPair, string) {
		kp, err := f()
		if err != nil {
			tb.Fatal(err)
		}
		pub, err := kp.PublicKey()
		if err != nil {
			tb.Fatal(err)
		}
		return kp, pub
	}
	encode := func(c interface {
		Encode(nkeys.KeyPair) (string, error)
	}, kp nkeys.KeyPair) string {
		s, err := c.Encode(kp)
		if err != nil {
			tb.Fatal(err)
		}
		return s
	}
	okp, opub := create(nkeys.CreateOperator)
	syskp, syspub := create(nkeys.CreateAccount)
	o := &Operator{users: map[natsserver.Role]operatorUser{}}
	o.AccountKey, o.Account = create(nkeys.CreateAccount)
	sk, skpub := create(nkeys.CreateAccount)
	o.SigningKey = sk

	operator := jwt.NewOperatorClaims(opub)
	operator.SystemAccount = syspub
	encode(operator, okp) // fills in the issuer the server checks
	account := jwt.NewAccountClaims(o.Account)
	account.Name = "rdev"
	account.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	account.SigningKeys.Add(skpub)
	if cfg.XKey {
		var xpub string
		o.XKey, xpub = create(nkeys.CreateCurveKeys)
		account.Authorization.XKey = xpub
	}
	user := func(pub string, perms jwt.Permissions, bearer bool) string {
		uc := jwt.NewUserClaims(pub)
		uc.Permissions = perms
		uc.BearerToken = bearer
		return encode(uc, o.AccountKey)
	}
	for _, r := range natsserver.Roles() {
		kp, pub := create(nkeys.CreateUser)
		seed, err := kp.Seed()
		if err != nil {
			tb.Fatal(err)
		}
		o.users[r] = operatorUser{jwt: user(pub, userPermissions(natsserver.Permissions(r)), false), seed: string(seed)}
		account.Authorization.AuthUsers.Add(pub)
	}
	// The API's system user (natsserver.RoleSystem), a user of the
	// system account: it lists connections and closes revoked ones.
	{
		kp, pub := create(nkeys.CreateUser)
		seed, err := kp.Seed()
		if err != nil {
			tb.Fatal(err)
		}
		uc := jwt.NewUserClaims(pub)
		uc.Permissions = userPermissions(natsserver.Permissions(natsserver.RoleSystem))
		o.users[natsserver.RoleSystem] = operatorUser{jwt: encode(uc, syskp), seed: string(seed)}
	}
	resolver := &server.MemAccResolver{}
	for pub, claims := range map[string]string{syspub: encode(jwt.NewAccountClaims(syspub), okp), o.Account: encode(account, okp)} {
		if err := resolver.Store(pub, claims); err != nil {
			tb.Fatal(err)
		}
	}
	_, sentinel := create(nkeys.CreateUser)
	nothing := jwt.Permissions{Pub: jwt.Permission{Deny: []string{">"}}, Sub: jwt.Permission{Deny: []string{">"}}}
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		JetStream: true, StoreDir: tb.TempDir(),
		// The CONNECT of a user whose JWT carries rdev's least privilege
		// (the API's is about 7 KiB) exceeds the default 4 KiB.
		MaxControlLine:   16 << 10,
		TrustedOperators: []*jwt.OperatorClaims{operator}, SystemAccount: syspub, AccountResolver: resolver,
		DefaultSentinel: user(sentinel, nothing, true)})
	if err != nil {
		tb.Fatal(err)
	}
	go srv.Start()
	tb.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(30 * time.Second) {
		tb.Fatal("the NATS server is not ready")
	}
	o.URL = srv.ClientURL()
	return o
}

// User is role's user JWT and nkey seed (nats.UserJWTAndSeed): a user of
// rdev's account with natsserver.Permissions(role); RoleSystem's is a
// user of the system account.
func (o *Operator) User(r natsserver.Role) (userJWT, seed string) {
	u := o.users[r]
	return u.jwt, u.seed
}

// Creds is role's credentials file contents (nats --creds, rdev
// --nats-creds).
func (o *Operator) Creds(tb testing.TB, r natsserver.Role) []byte {
	tb.Helper()
	u := o.users[r]
	b, err := jwt.FormatUserConfig(u.jwt, []byte(u.seed))
	if err != nil {
		tb.Fatal(err)
	}
	return b
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
