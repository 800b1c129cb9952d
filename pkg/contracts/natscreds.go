package contracts

import "time"

// NATSCredentials is the reply of POST /v1/projects/{p}/nats-credentials:
// a short-lived NATS credential with which a client reads one project's
// output and events straight from NATS (see docs/nats.md, direct
// subscribers). The NATS server asks the API (auth callout) whether to
// admit it at connect time, so a credential of a revoked key or a deleted
// project is refused; an open connection ends when the credential expires.
type NATSCredentials struct {
	// Token is what the client sends as its NATS token (nats.Token, the
	// nats CLI's --token). It is a secret: whoever holds it reads the
	// project until ExpiresAt.
	Token string `json:"token"`
	// InboxPrefix is the inbox prefix the client must use
	// (nats.CustomInboxPrefix, the nats CLI's --inbox-prefix): the only
	// inbox the credential may subscribe to, so replies (JetStream API
	// answers, consumer deliveries) reach it and nobody else's reach it.
	InboxPrefix string `json:"inbox_prefix"`
	// ExpiresAt is when the credential stops being admitted and its
	// connections are closed by the server.
	ExpiresAt time.Time `json:"expires_at"`
	// Subscribe lists the subjects the credential may subscribe to, its
	// inbox aside: the project's events and output.
	Subscribe []string `json:"subscribe"`
	// ConsumerFilters lists the filter subjects the credential may create
	// consumers on Stream with (one filter per consumer): the project's
	// output, its events, or both in one order.
	ConsumerFilters []string `json:"consumer_filters"`
	// Stream is the JetStream stream holding them, StreamOutput.
	Stream string `json:"stream"`
}
