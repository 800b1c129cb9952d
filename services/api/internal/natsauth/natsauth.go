// Package natsauth lets direct NATS subscribers in with credentials the
// API minted: it serves the NATS server's auth callout
// ($SYS.REQ.USER.AUTH). A client connects with a token from POST
// /v1/projects/{p}/nats-credentials; the callout checks it against the
// access store (signature, expiry, the key that asked for it, the
// project and its incarnation, the project's allowed IPs) and answers
// with a user JWT, signed by the callout's issuer key, that carries
// natsserver.ReaderPermissions of the project (its events and output, its
// replay requests, the credential's own inbox) and expires with the token.
// The server disconnects the client when the JWT expires; before that,
// a Sweeper closes the connections of credentials revoked since.
//
// The same callout serves a server configured with an authorization
// block (auth_callout: the issuer is the block's account nkey, users land
// in the named account, "$G" by default) and a server in operator mode
// (the callout configured on rdev's account JWT: the issuer is the
// account's key or one of its signing keys, and users land in that
// account). An account or block that sets an xkey has the server encrypt
// its requests; the callout then decrypts them and encrypts its answers.
package natsauth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/topology/natsserver"
)

// Subject is where the NATS server asks the callout.
const Subject = natsserver.AuthCalloutSubject

// queue shares the requests among API replicas: one answers each.
const queue = "rdev-api-auth"

// Minter makes credential tokens.
type Minter struct {
	Signer *access.Signer
	// TTL is how long a credential and the connections it opens last.
	TTL time.Duration
}

// Mint returns a credential for project, issued to the key keyID and
// bound to the project's incarnation.
func (m Minter) Mint(project, incarnation, keyID string, now time.Time) (contracts.NATSCredentials, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return contracts.NATSCredentials{}, fmt.Errorf("nonce: %w", err)
	}
	nonce := hex.EncodeToString(b[:])
	exp := now.Add(m.TTL).Truncate(time.Second)
	inbox := contracts.SubjectReaderInbox(project, nonce)
	return contracts.NATSCredentials{
		Token:       m.Signer.SignFor(access.NATSResource(project, nonce), access.Grant{KeyID: keyID, Incarnation: incarnation}, exp),
		ExpiresAt:   exp.UTC(),
		Subscribe:   []string{contracts.SubjectProjectEvents(project), contracts.SubjectProjectOutput(project), inbox + ".>"},
		Publish:     []string{contracts.SubjectProjectReplay(project)},
		InboxPrefix: inbox,
	}, nil
}

// Callout answers the NATS server's authorization requests.
type Callout struct {
	// Gate checks a token against the access store.
	Gate *access.StreamGate
	// Issuer signs the user JWTs and responses: the account key whose
	// public key is the server's auth_callout issuer; in operator mode
	// the key of rdev's account (Account) or one of its signing keys.
	Issuer nkeys.KeyPair
	// Account is the account a user is placed in: the server's
	// auth_callout account by name, "$G" (the global account) unless
	// configured; in operator mode rdev's account by its public key
	// (A…), which is also the account whose JWT configures the callout.
	Account string
	// XKey is the curve key (X…) whose public key the server's
	// auth_callout (or the account JWT) names as its xkey: the server
	// then encrypts each request to it, and the answer is encrypted back
	// to the server. Nil: requests are expected in the clear.
	XKey nkeys.KeyPair
	// Timeout bounds the access store look-ups of one request.
	Timeout time.Duration
	Log     *slog.Logger

	// operator is operator mode: Account is an account's public key.
	operator bool
	// issuerAccount is Account when Issuer is a signing key of it
	// (operator mode): the JWTs then say whose key signed them.
	issuerAccount string
	// issuer is Issuer's public key.
	issuer string
}

// Subscribe starts answering on nc until the subscription is drained or
// nc closed.
func (c *Callout) Subscribe(nc *nats.Conn) (*nats.Subscription, error) {
	if c.Account == "" {
		c.Account = "$G"
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Second
	}
	c.operator = nkeys.IsValidPublicAccountKey(c.Account)
	pub, err := c.Issuer.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("auth callout: issuer key: %w", err)
	}
	c.issuer = pub
	if c.operator && pub != c.Account {
		c.issuerAccount = c.Account
	}
	sub, err := nc.QueueSubscribe(Subject, queue, c.handle)
	if err != nil {
		return nil, fmt.Errorf("auth callout: subscribe %s: %w", Subject, err)
	}
	return sub, nil
}

func (c *Callout) handle(m *nats.Msg) {
	data := m.Data
	// The server sends its own xkey with a request it encrypted.
	serverXKey := m.Header.Get(server.AuthRequestXKeyHeader)
	if serverXKey != "" {
		if c.XKey == nil {
			c.Log.Error("encrypted auth callout request, and the API has no xkey (--nats-callout-xkey-file)")
			return // the server times the client out
		}
		var err error
		if data, err = c.XKey.Open(m.Data, serverXKey); err != nil {
			c.Log.Warn("undecryptable auth callout request", "err", err)
			return
		}
	}
	req, err := jwt.DecodeAuthorizationRequestClaims(string(data))
	if err != nil {
		c.Log.Warn("undecodable auth callout request", "err", err)
		return // the server times the client out
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	defer cancel()
	// The request's subject is the server's auth_callout issuer, or in
	// operator mode the callout account: the server refuses an answer
	// signed for another, so say which setting is wrong.
	var user, reason string
	switch {
	case c.operator && req.Subject != c.Account:
		reason = "auth callout of account " + req.Subject + ", the API places users in " + c.Account
		c.Log.Error("auth callout request of another account", "account", req.Subject, "configured", c.Account)
	case !c.operator && req.Subject != c.issuer:
		reason = "auth callout of issuer or account " + req.Subject + ", the API's key is " + c.issuer
		c.Log.Error("auth callout request for another issuer: the server's auth_callout issuer is not the API's key,"+
			" or under operator mode --nats-callout-account is not set to the account", "subject", req.Subject, "issuer", c.issuer)
	default:
		user, reason = c.authorize(ctx, req, time.Now())
	}
	resp := jwt.NewAuthorizationResponseClaims(req.UserNkey)
	resp.Audience = req.Server.ID
	resp.IssuerAccount = c.issuerAccount
	if reason != "" {
		resp.Error = reason
		c.Log.Info("nats credential refused", "reason", reason, "client", req.ClientInformation.Host)
	} else {
		resp.Jwt = user
	}
	enc, err := resp.Encode(c.Issuer)
	if err != nil {
		c.Log.Error("encode auth callout response", "err", err)
		return
	}
	out := []byte(enc)
	if serverXKey != "" {
		if out, err = c.XKey.Seal(out, serverXKey); err != nil {
			c.Log.Error("encrypt auth callout response", "err", err)
			return
		}
	}
	if err := m.Respond(out); err != nil {
		c.Log.Warn("answer auth callout", "err", err)
	}
}

// authorize returns the user JWT for req, or why it is refused (which the
// server logs; the client only learns that authorization failed).
func (c *Callout) authorize(ctx context.Context, req *jwt.AuthorizationRequestClaims, now time.Time) (string, string) {
	tok := req.ConnectOptions.Token
	cred, ok := access.ParseNATSCredential(tok)
	if !ok {
		return "", "not an rdev NATS credential"
	}
	client, _ := netip.ParseAddr(req.ClientInformation.Host)
	// Admit checks the MAC, the expiry and that the key is still good;
	// Allow that the project still exists in the incarnation the
	// credential was issued for, and its allowed IPs.
	r, err := c.Gate.Admit(ctx, tok, "", client, access.NATSResource(cred.Project, cred.Nonce))
	if err == nil && !r.Bound {
		err = errors.New("unbound token")
	}
	if err == nil {
		err = c.Gate.Allow(ctx, r, cred.Project, r.Grant.Incarnation, client)
	}
	if err != nil {
		return "", "credential refused: " + err.Error()
	}
	uc := jwt.NewUserClaims(req.UserNkey)
	// The name identifies the credential on its connections, for the
	// Sweeper (CONNZ reports it as the connection's user).
	uc.Name = reader{project: cred.Project, incarnation: r.Grant.Incarnation, keyID: r.Grant.KeyID}.userName()
	uc.Audience = c.Account
	uc.IssuerAccount = c.issuerAccount
	uc.Expires = cred.Expires.Unix()
	uc.Permissions = natsserver.ReaderPermissions(cred.Project, contracts.SubjectReaderInbox(cred.Project, cred.Nonce))
	out, err := uc.Encode(c.Issuer)
	if err != nil {
		return "", "encode user: " + err.Error()
	}
	return out, ""
}
