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
	lines, refusedElsewhere := directReader(t, n.http, n.nats)

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
