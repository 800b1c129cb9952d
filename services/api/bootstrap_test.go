package api_test

import (
	"context"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/await"
	"github.com/rdev-dev/rdev/pkg/topology/natstest"
	"github.com/rdev-dev/rdev/services/api"
)

// A revoked bootstrap key stays revoked when rdev restarts with the same
// RDEV_BOOTSTRAP_API_KEY, unless the operator asks to re-install it.
func TestRevokedBootstrapKeyStaysRevoked(t *testing.T) {
	t.Parallel()
	_, _, js := natstest.Provisioned(t)
	b := setupWith(t, api.Config{}, js)
	resp, rb := b.do(t, http.MethodDelete, "/v1/keys/bootstrap", "", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke bootstrap: %d %s", resp.StatusCode, rb)
	}
	ctx := context.Background()
	restart := func(cfg api.Config) {
		a := newAPI(t, cfg, js, slog.New(slog.DiscardHandler)) //nolint:contextcheck // New only builds; Start takes the context
		if _, err := a.Bootstrap(ctx, adminKey); err != nil {
			t.Fatal(err)
		}
	}
	restart(api.Config{})
	if resp, rb := b.get(t, "/v1/projects"); resp.StatusCode != http.StatusUnauthorized || errCode(t, rb) != "revoked_api_key" {
		t.Fatalf("the revoked bootstrap key came back on restart: %d %s", resp.StatusCode, rb)
	}
	restart(api.Config{ReinstallBootstrapKey: true})
	// The serving API drops its cached key when the access bucket's watch
	// reports the change.
	await.Within(t, 5*time.Second, "the re-installed bootstrap key accepted", func() bool {
		resp, _ := b.get(t, "/v1/projects")
		return resp.StatusCode == http.StatusOK
	})
}
