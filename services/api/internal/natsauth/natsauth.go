// Package natsauth lets direct NATS subscribers in with credentials the
// API minted: it serves the NATS server's auth callout
// ($SYS.REQ.USER.AUTH). A client connects with a token from POST
// /v1/projects/{p}/nats-credentials; the callout checks it against the
// access store (signature, expiry, the key that asked for it, the
// project and its incarnation, the project's allowed IPs) and answers
// with a user JWT, signed by the callout's issuer key, that carries
// natsserver.ReaderPermissions of the project (its events and output, its
// replay requests, the credential's own inbox) and expires with the token.
// The server disconnects the client when the JWT expires.
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
	// public key is the server's auth_callout issuer.
	Issuer nkeys.KeyPair
	// Account is the account a user is placed in: the server's
	// auth_callout account, "$G" (the global account) unless configured.
	Account string
	// Timeout bounds the access store look-ups of one request.
	Timeout time.Duration
	Log     *slog.Logger
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
	sub, err := nc.QueueSubscribe(Subject, queue, c.handle)
	if err != nil {
		return nil, fmt.Errorf("auth callout: subscribe %s: %w", Subject, err)
	}
	return sub, nil
}

func (c *Callout) handle(m *nats.Msg) {
	req, err := jwt.DecodeAuthorizationRequestClaims(string(m.Data))
	if err != nil {
		c.Log.Warn("undecodable auth callout request", "err", err)
		return // the server times the client out
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	defer cancel()
	user, reason := c.authorize(ctx, req, time.Now())
	resp := jwt.NewAuthorizationResponseClaims(req.UserNkey)
	resp.Audience = req.Server.ID
	if reason != "" {
		resp.Error = reason
		c.Log.Info("nats credential refused", "reason", reason, "client", req.ClientInformation.Host)
	} else {
		resp.Jwt = user
	}
	out, err := resp.Encode(c.Issuer)
	if err != nil {
		c.Log.Error("encode auth callout response", "err", err)
		return
	}
	if err := m.Respond([]byte(out)); err != nil {
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
	uc.Name = "rdev-reader:" + cred.Project
	uc.Audience = c.Account
	uc.Expires = cred.Expires.Unix()
	uc.Permissions = natsserver.ReaderPermissions(cred.Project, contracts.SubjectReaderInbox(cred.Project, cred.Nonce))
	out, err := uc.Encode(c.Issuer)
	if err != nil {
		return "", "encode user: " + err.Error()
	}
	return out, ""
}
