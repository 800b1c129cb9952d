package access_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/access"
)

type keyMap map[string]access.Key

func (m keyMap) Key(_ context.Context, id string) (access.Key, error) {
	k, ok := m[id]
	if !ok {
		return access.Key{}, fmt.Errorf("key %s: %w", id, access.ErrNotFound)
	}
	return k, nil
}

func code(err error) string {
	var e *access.Error
	if errors.As(err, &e) {
		return e.Code
	}
	if err == nil {
		return "ok"
	}
	return "other: " + err.Error()
}

func TestAuthenticate(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	past, future := now.Add(-time.Minute), now.Add(time.Hour)
	secret := access.NewSecret("K1")
	boot := strings.Repeat("b", 40)
	keys := keyMap{
		"K1":                  {ID: "K1", Hash: access.HashSecret(secret), Scopes: []string{"project:alpha:submit"}},
		"K2":                  {ID: "K2", Hash: access.HashSecret(access.NewSecret("K2")), Scopes: []string{"admin"}},
		"EXP":                 {ID: "EXP", Hash: access.HashSecret("rdev_EXP_x"), ExpiresAt: &past, Scopes: []string{"admin"}},
		"LIVE":                {ID: "LIVE", Hash: access.HashSecret("rdev_LIVE_x"), ExpiresAt: &future, Scopes: []string{"admin"}},
		"REV":                 {ID: "REV", Hash: access.HashSecret("rdev_REV_x"), RevokedAt: &past, Scopes: []string{"admin"}},
		"NET":                 {ID: "NET", Hash: access.HashSecret("rdev_NET_x"), AllowedIPs: []string{"10.0.0.0/8", "2001:db8::/32"}, Scopes: []string{"admin"}},
		access.BootstrapKeyID: {ID: access.BootstrapKeyID, Hash: access.HashSecret(boot), Scopes: []string{"admin"}},
	}
	local := netip.MustParseAddr("127.0.0.1")
	for _, tc := range []struct {
		name, secret, ip, want string
	}{
		{"valid", secret, "127.0.0.1", "ok"},
		{"missing", "", "127.0.0.1", "missing_api_key"},
		{"garbled", "not-a-key", "127.0.0.1", "invalid_api_key"},
		{"right id wrong secret", access.NewSecret("K1"), "127.0.0.1", "invalid_api_key"},
		{"another key's id", strings.Replace(secret, "K1", "K2", 1), "127.0.0.1", "invalid_api_key"},
		{"unknown id", access.NewSecret("NOPE"), "127.0.0.1", "invalid_api_key"},
		{"huge", "rdev_K1_" + strings.Repeat("x", 5000), "127.0.0.1", "invalid_api_key"},
		{"expired", "rdev_EXP_x", "127.0.0.1", "expired_api_key"},
		{"not yet expired", "rdev_LIVE_x", "127.0.0.1", "ok"},
		{"revoked", "rdev_REV_x", "127.0.0.1", "revoked_api_key"},
		{"allowed v4", "rdev_NET_x", "10.1.2.3", "ok"},
		{"allowed v4-mapped", "rdev_NET_x", "::ffff:10.1.2.3", "ok"},
		{"allowed v6", "rdev_NET_x", "2001:db8::1", "ok"},
		{"forbidden ip", "rdev_NET_x", "192.168.1.1", "ip_not_allowed"},
		{"bootstrap", boot, "127.0.0.1", "ok"},
		{"bootstrap wrong", strings.Repeat("c", 40), "127.0.0.1", "invalid_api_key"},
	} {
		ip := local
		if tc.ip != "" {
			ip = netip.MustParseAddr(tc.ip)
		}
		_, err := access.Authenticate(context.Background(), keys, tc.secret, ip, now)
		if got := code(err); got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestPrincipalScopes(t *testing.T) {
	t.Parallel()
	p := access.NewPrincipal(access.Key{Scopes: []string{"project:alpha:submit", "project:beta:read"}})
	checks := []struct {
		project string
		role    access.Role
		want    bool
	}{
		{"alpha", access.RoleSubmit, true}, {"alpha", access.RoleRead, false},
		{"beta", access.RoleRead, true}, {"beta", access.RoleSubmit, false},
		{"gamma", access.RoleRead, false},
	}
	for _, c := range checks {
		if got := p.Can(c.project, c.role); got != c.want {
			t.Errorf("Can(%s,%s) = %v, want %v", c.project, c.role, got, c.want)
		}
	}
	if ids, all := p.Projects(); all || strings.Join(ids, ",") != "alpha,beta" {
		t.Errorf("Projects = %v %v", ids, all)
	}
	ro := access.NewPrincipal(access.Key{Scopes: []string{"read"}})
	if !ro.Can("any", access.RoleRead) || ro.Can("any", access.RoleSubmit) || ro.Admin() {
		t.Error("a read key must read everything and nothing more")
	}
	admin := access.NewPrincipal(access.Key{Scopes: []string{"admin"}})
	if !admin.Can("any", access.RoleSubmit) || !admin.Admin() {
		t.Error("admin may do everything")
	}
	proj := access.Project{ID: "alpha", AllowedIPs: []string{"10.0.0.0/8"}}
	if err := access.Authorize(p, proj, access.RoleSubmit, netip.MustParseAddr("10.0.0.1")); err != nil {
		t.Errorf("authorized request refused: %v", err)
	}
	if got := code(access.Authorize(p, proj, access.RoleSubmit, netip.MustParseAddr("11.0.0.1"))); got != "ip_not_allowed" {
		t.Errorf("project IP check: %s", got)
	}
	if got := code(access.Authorize(p, proj, access.RoleRead, netip.MustParseAddr("10.0.0.1"))); got != "forbidden" {
		t.Errorf("missing role: %s", got)
	}
}

func TestNormalizeScopes(t *testing.T) {
	t.Parallel()
	got, err := access.NormalizeScopes([]string{"project:b:read", "admin", "project:b:read"})
	if err != nil || strings.Join(got, " ") != "admin project:b:read" {
		t.Errorf("got %v %v", got, err)
	}
	for _, bad := range [][]string{nil, {"root"}, {"project:Bad:read"}, {"project:a:write"}, {"project:a"}, {"project:a:read:x"}} {
		if _, err := access.NormalizeScopes(bad); code(err) != "invalid_scopes" {
			t.Errorf("%v: %v", bad, err)
		}
	}
}

func TestSecretsAndIDs(t *testing.T) {
	t.Parallel()
	a, b := access.NewSecret("ABC"), access.NewSecret("ABC")
	if a == b || !strings.HasPrefix(a, "rdev_ABC_") || len(a) != len("rdev_ABC_")+43 {
		t.Errorf("secrets %q %q", a, b)
	}
	if access.KeyIDOf(a) != "ABC" || access.KeyIDOf("whatever-string") != access.BootstrapKeyID ||
		access.KeyIDOf("rdev_a.b_x") != access.BootstrapKeyID {
		t.Error("KeyIDOf")
	}
	if access.ValidBootstrapSecret(strings.Repeat("a", 31)) || !access.ValidBootstrapSecret(strings.Repeat("a", 32)) ||
		access.ValidBootstrapSecret(strings.Repeat("a", 31)+" ") || access.ValidBootstrapSecret(strings.Repeat("é", 32)) {
		t.Error("ValidBootstrapSecret")
	}
}

func TestTokens(t *testing.T) {
	t.Parallel()
	now := time.Now()
	s := access.NewSigner([]byte("0123456789abcdef0123456789abcdef"))
	tok := s.Sign(access.StreamResource("S1"), now.Add(time.Minute))
	if err := s.Verify(tok, access.StreamResource("S1"), now); err != nil {
		t.Fatalf("valid token refused: %v", err)
	}
	if got := code(s.Verify(tok, access.StreamResource("S2"), now)); got != "invalid_token" {
		t.Errorf("token for another stream: %s", got)
	}
	if got := code(s.Verify(tok, access.StreamResource("S1"), now.Add(time.Minute))); got != "expired_token" {
		t.Errorf("expired: %s", got)
	}
	other := access.NewSigner([]byte("another secret of thirty-two b!!"))
	if got := code(other.Verify(tok, access.StreamResource("S1"), now)); got != "invalid_token" {
		t.Errorf("other secret: %s", got)
	}
	// Flip one character in each half: the MAC must catch it.
	for i := range tok {
		if tok[i] == '.' {
			continue
		}
		bad := []byte(tok)
		bad[i] ^= 1
		if s.Verify(string(bad), access.StreamResource("S1"), now) == nil {
			t.Fatalf("tampered token at %d accepted", i)
		}
	}
}

func TestProjectNormalize(t *testing.T) {
	t.Parallel()
	p := access.Project{ID: "alpha", AllowedIPs: []string{"10.1.2.3", "10.0.0.0/8", "2001:db8::1/32"}}
	if err := access.NormalizeProject(&p); err != nil {
		t.Fatal(err)
	}
	if strings.Join(p.AllowedIPs, ",") != "10.1.2.3/32,10.0.0.0/8,2001:db8::/32" || p.Name != "alpha" {
		t.Errorf("normalized %+v", p)
	}
	for _, tc := range []struct {
		p    access.Project
		code string
	}{
		{access.Project{ID: "Alpha"}, "invalid_project"},
		{access.Project{ID: "a", AllowedIPs: []string{"10.0.0.0/33"}}, "invalid_allowed_ips"},
		{access.Project{ID: "a", AllowedIPs: []string{"fe80::1%eth0"}}, "invalid_allowed_ips"},
		{access.Project{ID: "a", DefaultPriority: "urgent"}, "invalid_priority"},
		{access.Project{ID: "a", RateLimit: &access.RateLimit{Requests: 0, WindowSeconds: 1}}, "invalid_rate_limit"},
		{access.Project{ID: "a", MaxConcurrentJobs: -1}, "invalid_max_concurrent_jobs"},
		{access.Project{ID: "a", Name: "red\x1b[31m"}, "invalid_name"},
		{access.Project{ID: "a", Name: "two\nlines"}, "invalid_name"},
	} {
		if got := code(access.NormalizeProject(&tc.p)); got != tc.code {
			t.Errorf("%+v: %s, want %s", tc.p, got, tc.code)
		}
	}
}

type projectMap map[string]access.Project

func (m projectMap) Project(_ context.Context, id string) (access.Project, error) {
	p, ok := m[id]
	if !ok {
		return access.Project{}, fmt.Errorf("project %s: %w", id, access.ErrNotFound)
	}
	return p, nil
}

// Admin keys are exempt from a project's allowed IPs wherever a project
// is reached, the API (Authorize) and the streamer (StreamGate) alike;
// other keys and stream tokens are not. An admin key's own allowed IPs
// still apply.
func TestAdminsExemptFromProjectIPs(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	walled := access.Project{ID: "walled", AllowedIPs: []string{"10.0.0.0/8"}}
	keys := keyMap{}
	secrets := map[string]string{}
	for id, k := range map[string]access.Key{
		"ADM":  {Scopes: []string{"admin"}},
		"ADMN": {Scopes: []string{"admin"}, AllowedIPs: []string{"192.168.0.0/16"}},
		"RALL": {Scopes: []string{"read"}},
		"PROJ": {Scopes: []string{"project:walled:read"}},
	} {
		secrets[id] = access.NewSecret(id)
		k.ID, k.Hash = id, access.HashSecret(secrets[id])
		keys[id] = k
	}
	signer := access.NewSigner([]byte(strings.Repeat("s", 32)))
	gate := &access.StreamGate{Signer: signer, Keys: keys, Projects: projectMap{"walled": walled}, Now: func() time.Time { return now }}
	resource := access.StreamResource("S1")
	outside, inside := netip.MustParseAddr("192.168.1.1"), netip.MustParseAddr("10.1.2.3")
	for _, tc := range []struct {
		name, key string
		client    netip.Addr
		want      string
	}{
		{"admin outside", "ADM", outside, "ok"},
		{"admin with own ips, outside the project's", "ADMN", outside, "ok"},
		{"admin outside its own ips", "ADMN", inside, "ip_not_allowed"},
		{"read-all outside", "RALL", outside, "ip_not_allowed"},
		{"read-all inside", "RALL", inside, "ok"},
		{"project key outside", "PROJ", outside, "ip_not_allowed"},
		{"project key inside", "PROJ", inside, "ok"},
		{"token outside", "", outside, "ip_not_allowed"},
		{"token inside", "", inside, "ok"},
	} {
		token := ""
		if tc.key == "" {
			token = signer.Sign(resource, now.Add(time.Hour))
		}
		r, err := gate.Admit(context.Background(), token, secrets[tc.key], tc.client, resource)
		if err == nil {
			err = gate.Allow(context.Background(), r, walled.ID, walled.Incarnation, tc.client)
		}
		if got := code(err); got != tc.want {
			t.Errorf("stream gate, %s: got %s, want %s", tc.name, got, tc.want)
		}
		if tc.key == "" {
			continue
		}
		p, err := access.Authenticate(context.Background(), keys, secrets[tc.key], tc.client, now)
		if err == nil {
			err = access.Authorize(p, walled, access.RoleRead, tc.client)
		}
		if got := code(err); got != tc.want {
			t.Errorf("authorize, %s: got %s, want %s", tc.name, got, tc.want)
		}
	}
}

// A stream token is bound to the key that asked for it and to the
// project's incarnation: it stops opening streams once the key is revoked
// or expired, or the project is deleted or created again.
func TestBoundTokens(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	past := now.Add(-time.Minute)
	keys := keyMap{
		"LIVE": {ID: "LIVE", Scopes: []string{"project:p:read"}},
		"REV":  {ID: "REV", Scopes: []string{"project:p:read"}, RevokedAt: &past},
		"EXP":  {ID: "EXP", Scopes: []string{"project:p:read"}, ExpiresAt: &past},
	}
	projects := projectMap{"p": {ID: "p", Incarnation: "I2"}}
	signer := access.NewSigner([]byte(strings.Repeat("s", 32)))
	gate := &access.StreamGate{Signer: signer, Keys: keys, Projects: projects, Now: func() time.Time { return now }}
	res := access.StreamResource("S1")
	client := netip.MustParseAddr("127.0.0.1")
	for _, tc := range []struct {
		name, key, project, incarnation, want string
	}{
		{"live key, same incarnation", "LIVE", "p", "I2", "ok"},
		{"revoked key", "REV", "p", "I2", "invalid_token"},
		{"expired key", "EXP", "p", "I2", "invalid_token"},
		{"deleted key", "GONE", "p", "I2", "invalid_token"},
		{"project created again", "LIVE", "p", "I1", "stream_not_found"},
		{"project deleted", "LIVE", "q", "I9", "stream_not_found"},
	} {
		tok := signer.SignFor(res, access.Grant{KeyID: tc.key, Incarnation: tc.incarnation}, now.Add(time.Hour))
		r, err := gate.Admit(context.Background(), tok, "", client, res)
		if err == nil {
			err = gate.Allow(context.Background(), r, tc.project, tc.incarnation, client)
		}
		if got := code(err); got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.name, got, tc.want)
		}
	}
}
