package contracts

import "time"

// NATSCredentials is the reply of POST /v1/projects/{p}/nats-credentials:
// a short-lived NATS credential with which a client reads one project's
// output and events straight from NATS (see docs/nats.md, direct
// subscribers). The NATS server asks the API (auth callout) whether to
// admit it at connect time, so a credential of a revoked key or a deleted
// project is refused; an open connection ends when the credential expires.
// It may subscribe to the project's events and output, and to its own
// inbox; it publishes only replay requests of the project
// (SubjectReplay), which a streamer answers on that inbox. It sends no
// JetStream request: NATS checks neither a request's reply subject nor a
// consumer's deliver subject, so a credential that could send one could
// have the server write its project's messages into any subject of
// rdev's account; the streamer checks the reply subject of a replay
// request itself.
type NATSCredentials struct {
	// Token is what the client sends as its NATS token (nats.Token, the
	// nats CLI's --token). It is a secret: whoever holds it reads the
	// project until ExpiresAt.
	Token string `json:"token"`
	// ExpiresAt is when the credential stops being admitted and its
	// connections are closed by the server.
	ExpiresAt time.Time `json:"expires_at"`
	// Subscribe lists the subjects the credential may subscribe to: the
	// project's events and output, live, and InboxPrefix+".>".
	Subscribe []string `json:"subscribe"`
	// Publish lists the subjects the credential may publish to: replay
	// requests of the project's streams (rdev.replay.<project>.*).
	Publish []string `json:"publish"`
	// InboxPrefix is the credential's private inbox
	// (_rdev_reader.<project>.<nonce>): the client library's inbox prefix
	// (nats.CustomInboxPrefix, the nats CLI's --inbox-prefix), so that
	// replies to its replay requests arrive. No other credential may
	// subscribe to it.
	InboxPrefix string `json:"inbox_prefix"`
}
