// Package natsconn turns rdev's NATS client settings (credentials and TLS
// for an external server or cluster) into nats.go options.
package natsconn

import (
	"errors"
	"log/slog"

	"github.com/nats-io/nats.go"
)

// Config is how a process signs in to NATS. At most one of Creds, NKey,
// User or Token is set; none connects anonymously (a server without
// authorization).
type Config struct {
	// Creds is a JWT + nkey credentials file (decentralized auth: nsc).
	Creds string
	// NKey is a file holding an nkey seed (SU…), e.g. one `rdev up` wrote.
	NKey string
	// User and Password sign in with a static user.
	User, Password string
	// Token signs in with a token.
	Token string
	// TLSCA verifies the server; TLSCert and TLSKey are a client
	// certificate, for servers that verify clients.
	TLSCA, TLSCert, TLSKey string
}

// Validate reports settings that contradict each other.
func (c Config) Validate() error {
	n := 0
	for _, set := range []bool{c.Creds != "", c.NKey != "", c.User != "", c.Token != ""} {
		if set {
			n++
		}
	}
	switch {
	case n > 1:
		return errors.New("NATS credentials: choose one of --nats-creds, --nats-nkey, --nats-user or --nats-token")
	case c.Password != "" && c.User == "":
		return errors.New("NATS credentials: --nats-password needs --nats-user")
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return errors.New("NATS TLS: --nats-tls-cert and --nats-tls-key go together")
	}
	return nil
}

// Options are the nats.go options for c.
func (c Config) Options() ([]nats.Option, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var opts []nats.Option
	switch {
	case c.Creds != "":
		opts = append(opts, nats.UserCredentials(c.Creds))
	case c.NKey != "":
		o, err := nats.NkeyOptionFromSeed(c.NKey)
		if err != nil {
			return nil, err
		}
		opts = append(opts, o)
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	case c.Token != "":
		opts = append(opts, nats.Token(c.Token))
	}
	if c.TLSCA != "" {
		opts = append(opts, nats.RootCAs(c.TLSCA))
	}
	if c.TLSCert != "" {
		opts = append(opts, nats.ClientCert(c.TLSCert, c.TLSKey))
	}
	return opts, nil
}

// LogValue shows which credentials are used, never their secrets.
func (c Config) LogValue() slog.Value {
	var attrs []slog.Attr
	add := func(k, v string) {
		if v != "" {
			attrs = append(attrs, slog.String(k, v))
		}
	}
	add("creds", c.Creds)
	add("nkey", c.NKey)
	add("user", c.User)
	add("password", mask(c.Password))
	add("token", mask(c.Token))
	add("tls_ca", c.TLSCA)
	add("tls_cert", c.TLSCert)
	add("tls_key", c.TLSKey)
	if len(attrs) == 0 {
		return slog.StringValue("anonymous")
	}
	return slog.GroupValue(attrs...)
}

func mask(s string) string {
	if s == "" {
		return ""
	}
	return "***"
}
