package access_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/access"
)

// lockedKeys is a key store other goroutines may read while a test writes.
type lockedKeys struct {
	mu sync.Mutex
	m  map[string]access.Key
}

func (l *lockedKeys) Key(_ context.Context, id string) (access.Key, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k, ok := l.m[id]
	if !ok {
		return access.Key{}, fmt.Errorf("key %s: %w", id, access.ErrNotFound)
	}
	return k, nil
}

func (l *lockedKeys) set(k access.Key) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.m[k.ID] = k
}

func revokedCode(ctx context.Context) string {
	var ae *access.Error
	if errors.As(context.Cause(ctx), &ae) {
		return ae.Code
	}
	return fmt.Sprint(context.Cause(ctx))
}

// Without a change feed, Watch says so and polls: a held stream still ends
// soon after its key is revoked, and when its key expires, while another
// key's stays held.
func TestHoldWithoutFeedPolls(t *testing.T) {
	t.Parallel()
	soon := time.Now().Add(200 * time.Millisecond)
	keys := &lockedKeys{m: map[string]access.Key{
		"A": {ID: "A", Scopes: []string{"project:p:read"}},
		"B": {ID: "B", Scopes: []string{"project:p:read"}},
		"E": {ID: "E", Scopes: []string{"project:p:read"}, ExpiresAt: &soon},
	}}
	gate := &access.StreamGate{Signer: access.NewSigner([]byte(strings.Repeat("s", 32))), Keys: keys,
		Projects: projectMap{"p": {ID: "p", Incarnation: "I"}}, PollEvery: 50 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := gate.Watch(ctx); err == nil {
		t.Fatal("Watch without a feed: want the reason it polls")
	}
	client := netip.MustParseAddr("127.0.0.1")
	hold := func(key string) (context.Context, context.CancelFunc) {
		r := access.Reader{Token: true, Bound: true, Grant: access.Grant{KeyID: key, Incarnation: "I"}}
		return gate.Hold(ctx, r, "p", "I", client)
	}
	a, releaseA := hold("A")
	defer releaseA()
	b, releaseB := hold("B")
	defer releaseB()
	e, releaseE := hold("E")
	defer releaseE()

	k := keys.m["A"]
	now := time.Now()
	k.RevokedAt = &now
	keys.set(k)
	for name, c := range map[string]context.Context{"revoked": a, "expired": e} {
		select {
		case <-c.Done():
			if got := revokedCode(c); got != access.CodeAccessRevoked {
				t.Errorf("%s: cause %s, want %s", name, got, access.CodeAccessRevoked)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s key's stream still held", name)
		}
	}
	if b.Err() != nil {
		t.Fatalf("another key's stream ended: %v", context.Cause(b))
	}
	releaseB()
	if revokedCode(b) == access.CodeAccessRevoked {
		t.Fatal("a released stream reads as revoked")
	}
}
