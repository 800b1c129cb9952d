package main

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// rdev up enables the auth callout on its embedded server with the issuer
// seed it generates: a credential from the API follows a job's lines
// live, and is refused another project's.
func TestUpAdmitsNATSCredentials(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	t.Parallel()
	n := startInProcess(t)
	lines, refusedElsewhere := followDirect(t, n.http, n.nats)

	code, b := call(t, http.MethodPost, n.http+"/v1/projects/direct/commands", map[string]any{"command": []string{"echo", "hello direct"}})
	if code != http.StatusAccepted {
		t.Fatalf("submit: %d %s", code, b)
	}
	// Generous: a job's start on a loaded machine.
	m, err := lines.NextMsg(60 * time.Second)
	must(t, err, "the job's line")
	if l := mustJSON[contracts.OutputLine](t, m.Data); l.Text != "hello direct" || l.V != contracts.OutputLineVersion {
		t.Fatalf("line %+v", l)
	}
	refusedElsewhere()
}

func errorsIsPermission(err error) bool { return errors.Is(err, nats.ErrPermissionViolation) }

// rdev up signs the API in as its embedded server's system user: a
// direct subscriber's open connection is closed once its project is
// deleted, long before its credential expires.
func TestUpClosesRevokedNATSCredentials(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	t.Parallel()
	n := startInProcess(t)
	if code, b := call(t, http.MethodPost, n.http+"/v1/projects", map[string]string{"id": "closing"}); code != http.StatusCreated {
		t.Fatalf("create project: %d %s", code, b)
	}
	code, b := call(t, http.MethodPost, n.http+"/v1/projects/closing/nats-credentials", nil)
	if code != http.StatusCreated {
		t.Fatalf("nats-credentials: %d %s", code, b)
	}
	c := mustJSON[contracts.NATSCredentials](t, b)
	closed := make(chan struct{})
	nc, err := nats.Connect(n.nats, nats.Token(c.Token), nats.NoReconnect(), nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	must(t, err, "connect with the credential")
	defer nc.Close()
	if code, b := call(t, http.MethodDelete, n.http+"/v1/projects/closing", nil); code != http.StatusOK && code != http.StatusNoContent {
		t.Fatalf("delete project: %d %s", code, b)
	}
	select {
	case <-closed:
	case <-time.After(30 * time.Second): // generous: a loaded machine; the credential lives 15 minutes
		t.Fatal("the deleted project's connection is still open")
	}
}
