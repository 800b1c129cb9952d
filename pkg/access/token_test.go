package access_test

import (
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/access"
)

// ParseNATSCredential reads what a NATS credential claims and nothing
// else passes for one: not a stream token, not an unbound token, not junk.
func TestParseNATSCredential(t *testing.T) {
	t.Parallel()
	s := access.NewSigner([]byte("0123456789abcdef0123456789abcdef"))
	exp := time.Unix(1_900_000_000, 0)
	g := access.Grant{KeyID: "k1", Incarnation: "i1"}
	c, ok := access.ParseNATSCredential(s.SignFor(access.NATSResource("demo", "n1"), g, exp))
	if !ok || c.Project != "demo" || c.Nonce != "n1" || !c.Expires.Equal(exp) {
		t.Fatalf("ParseNATSCredential = %+v, %v", c, ok)
	}
	for name, tok := range map[string]string{
		"stream token":  s.SignFor(access.StreamResource("s1"), g, exp),
		"unbound token": s.Sign(access.NATSResource("demo", "n1"), exp),
		"no nonce":      s.SignFor("nats:demo", g, exp),
		"junk":          "not.a-token",
		"empty":         "",
	} {
		if c, ok := access.ParseNATSCredential(tok); ok {
			t.Errorf("%s parsed as %+v", name, c)
		}
	}
}
