package main

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/contracts/seal"
)

// rdev keygen prints every secret compose needs, fresh each time: a valid
// bootstrap key, a password per NATS user, a matching callout pair, and a
// secrets key.
func TestKeygen(t *testing.T) {
	t.Parallel()
	parse := func() map[string]string {
		out, err := keygen(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		env := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if strings.HasPrefix(l, "#") {
				continue
			}
			k, v, ok := strings.Cut(l, "=")
			if !ok || v == "" {
				t.Fatalf("line %q is not NAME=value", l)
			}
			env[k] = v
		}
		return env
	}
	a, b := parse(), parse()
	for _, k := range []string{"RDEV_BOOTSTRAP_API_KEY", "RDEV_NATS_ADMIN_PASSWORD", "RDEV_NATS_API_PASSWORD", "RDEV_NATS_WORKER_PASSWORD",
		"RDEV_NATS_STREAMER_PASSWORD", "RDEV_NATS_NOTIFIER_PASSWORD", "RDEV_NATS_SYSTEM_PASSWORD", "RDEV_NATS_CALLOUT_ISSUER", "RDEV_NATS_CALLOUT_KEY",
		"RDEV_SECRETS_KEY"} {
		if a[k] == "" || a[k] == b[k] {
			t.Errorf("%s: %q, then %q: want a fresh value each time", k, a[k], b[k])
		}
		if strings.Contains(k, "PASSWORD") && (len(a[k]) < 32 || a[k][0] < 'A') {
			t.Errorf("%s %q: want 32+ letters and digits, a letter first", k, a[k])
		}
	}
	if key, err := base64.StdEncoding.DecodeString(a["RDEV_SECRETS_KEY"]); err != nil || len(key) != seal.KeySize {
		t.Errorf("RDEV_SECRETS_KEY %q: want the base64 of %d bytes (%v)", a["RDEV_SECRETS_KEY"], seal.KeySize, err)
	}
	if !access.ValidBootstrapSecret(a["RDEV_BOOTSTRAP_API_KEY"]) {
		t.Errorf("bootstrap key %q is not valid", a["RDEV_BOOTSTRAP_API_KEY"])
	}
	kp, err := nkeys.FromSeed([]byte(a["RDEV_NATS_CALLOUT_KEY"]))
	if err != nil {
		t.Fatal(err)
	}
	if pub, _ := kp.PublicKey(); pub != a["RDEV_NATS_CALLOUT_ISSUER"] || !nkeys.IsValidPublicAccountKey(pub) {
		t.Errorf("callout key's public key %s, issuer %s: want the same account key", pub, a["RDEV_NATS_CALLOUT_ISSUER"])
	}
}
