package api_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// closedWithin waits for r's connection to be closed by the server. The
// bound is generous: the sweep follows the change at once, but the CI
// machine is loaded.
func (r *reader) closedWithin(t *testing.T, what string, closed <-chan struct{}) {
	t.Helper()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: the connection is still open", what)
	}
}

// connectWatched connects with a new credential of project; closed is
// closed with the connection (it does not reconnect).
func (b calloutBundle) connectWatched(t *testing.T, project, key string) (r *reader, closed <-chan struct{}, c contracts.NATSCredentials) {
	t.Helper()
	c = b.credential(t, project, key)
	ch := make(chan struct{})
	r, err := b.connect(c, nats.ClosedHandler(func(*nats.Conn) { close(ch) }))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(r.nc.Close)
	return r, ch, c
}

// A direct subscriber's open connection is closed within seconds of its
// key's revocation (long before its credential expires), and another
// key's connection to the same project stays open and keeps receiving.
func TestNATSCredentialConnectionClosedWhenItsKeyIsRevoked(t *testing.T) {
	t.Parallel()
	closedWhenRevoked(t, setupCalloutWith(t, time.Hour, true, 0))
}

// The same under operator mode: the system user is a user JWT of the
// operator's system account, and direct subscribers are in rdev's
// account (named by its public key).
func TestNATSCredentialConnectionClosedWhenItsKeyIsRevokedUnderOperatorMode(t *testing.T) {
	t.Parallel()
	closedWhenRevoked(t, setupOperator(t, time.Hour, operatorMode{signingKey: true, system: true}))
}

func closedWhenRevoked(t *testing.T, b calloutBundle) {
	t.Helper()
	revoked := b.newKey(t, `{"name":"revoked","scopes":["project:demo:read"]}`)
	kept := b.newKey(t, `{"name":"kept","scopes":["project:demo:read"]}`)
	r, closed, c := b.connectWatched(t, "demo", revoked.Key)
	k, keptClosed, _ := b.connectWatched(t, "demo", kept.Key)
	sub, err := k.nc.SubscribeSync("rdev.output.demo.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := k.nc.Flush(); err != nil {
		t.Fatal(err)
	}

	if resp, rb := b.do(t, http.MethodDelete, "/v1/keys/"+revoked.ID, "", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke: %d %s", resp.StatusCode, rb)
	}
	r.closedWithin(t, "a revoked key's credential", closed)
	refusedAtConnect(t, b, c, "a revoked key's credential")

	select {
	case <-keptClosed:
		t.Fatal("the other key's connection was closed too")
	default:
	}
	b.line(t, "demo", "s-kept", 1)
	if _, err := sub.NextMsg(20 * time.Second); err != nil { // generous: loaded CI
		t.Fatalf("the other key's connection stopped receiving: %v", err)
	}
}

// Deleting the project closes its direct subscribers' connections.
func TestNATSCredentialConnectionClosedWhenItsProjectIsDeleted(t *testing.T) {
	t.Parallel()
	b := setupCalloutWith(t, time.Hour, true, 0)
	if resp, rb := b.post(t, "/v1/projects", "application/json", []byte(`{"id":"doomed"}`)); resp.StatusCode != http.StatusCreated {
		t.Fatalf("create project: %d %s", resp.StatusCode, rb)
	}
	r, closed, _ := b.connectWatched(t, "doomed", b.admin)
	_, keptClosed, _ := b.connectWatched(t, "demo", b.admin)
	if resp, rb := b.do(t, http.MethodDelete, "/v1/projects/doomed", "", nil); resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete project: %d %s", resp.StatusCode, rb)
	}
	r.closedWithin(t, "a deleted project's credential", closed)
	select {
	case <-keptClosed:
		t.Fatal("another project's connection was closed too")
	default:
	}
}

// A key that simply expires writes nothing: the periodic sweep closes its
// credentials' connections, after the key's expiry and not before.
func TestNATSCredentialConnectionClosedWhenItsKeyExpires(t *testing.T) {
	t.Parallel()
	b := setupCalloutWith(t, time.Hour, true, time.Second)
	// Generous: the key must outlive minting a credential and connecting
	// on a loaded machine.
	expires := time.Now().Add(10 * time.Second).UTC().Truncate(time.Second)
	key := b.newKey(t, `{"name":"expiring","scopes":["project:demo:read"],"expires_at":"`+expires.Format(time.RFC3339)+`"}`)
	r, closed, _ := b.connectWatched(t, "demo", key.Key)
	r.closedWithin(t, "an expired key's credential", closed)
	if now := time.Now(); now.Before(expires) {
		t.Fatalf("closed at %v, before the key's expiry %v", now, expires)
	}
}

// A project whose allowed IPs no longer include the subscriber's address
// has its connection closed, as the callout would refuse it now.
func TestNATSCredentialConnectionClosedWhenItsAddressIsNoLongerAllowed(t *testing.T) {
	t.Parallel()
	b := setupCalloutWith(t, time.Hour, true, 0)
	if resp, rb := b.post(t, "/v1/projects", "application/json", []byte(`{"id":"fenced"}`)); resp.StatusCode != http.StatusCreated {
		t.Fatalf("create project: %d %s", resp.StatusCode, rb)
	}
	r, closed, _ := b.connectWatched(t, "fenced", b.admin)
	if resp, rb := b.do(t, http.MethodPatch, "/v1/projects/fenced", "application/json", []byte(`{"allowed_ips":["10.0.0.0/8"]}`)); resp.StatusCode != http.StatusOK {
		t.Fatalf("patch project: %d %s", resp.StatusCode, rb)
	}
	r.closedWithin(t, "a credential used from an address no longer allowed", closed)
}
