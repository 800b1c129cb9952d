package contracts

import "time"

// NATSCredentials is the reply of POST /v1/projects/{p}/nats-credentials:
// a short-lived NATS credential with which a client reads one project's
// output and events straight from NATS (see docs/nats.md, direct
// subscribers). The NATS server asks the API (auth callout) whether to
// admit it at connect time, so a credential of a revoked key or a deleted
// project is refused; an open connection ends when the credential expires.
// It subscribes and publishes nothing: NATS checks neither a request's
// reply subject nor a consumer's deliver subject, so a credential that
// could send a JetStream request could have the server write its
// project's messages into any subject of rdev's account. Replay goes
// through the HTTP API (GET /v1/projects/{p}/events, a stream's events).
type NATSCredentials struct {
	// Token is what the client sends as its NATS token (nats.Token, the
	// nats CLI's --token). It is a secret: whoever holds it reads the
	// project until ExpiresAt.
	Token string `json:"token"`
	// ExpiresAt is when the credential stops being admitted and its
	// connections are closed by the server.
	ExpiresAt time.Time `json:"expires_at"`
	// Subscribe lists the subjects the credential may subscribe to: the
	// project's events and output, live.
	Subscribe []string `json:"subscribe"`
}
