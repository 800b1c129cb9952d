package natsconn_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/rdev-dev/rdev/cmd/rdev/internal/natsconn"
)

func TestSecretsNeverLogged(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	log.Info("nats", "auth", natsconn.Config{User: "api", Password: "pw-secret-1"})
	log.Info("nats", "auth", natsconn.Config{Token: "tok-secret-2"})
	if s := buf.String(); strings.Contains(s, "secret") || !strings.Contains(s, "user=api") {
		t.Fatalf("log %q: want the user and no secret", s)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, c := range []natsconn.Config{
		{User: "a", Token: "b"},
		{Creds: "a", NKey: "b"},
		{Password: "p"},
		{TLSCert: "c"},
	} {
		if _, err := c.Options(); err == nil {
			t.Errorf("%+v: accepted", c)
		}
	}
	if _, err := (natsconn.Config{User: "a", Password: "b", TLSCA: "ca.pem"}).Options(); err != nil {
		t.Error(err)
	}
}
