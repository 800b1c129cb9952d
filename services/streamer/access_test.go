package streamer_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// Who may open a stream: the holder of a token signed for that stream, or
// a key that reads the stream's project; the project's allowed IPs apply.
// Every refusal happens before a byte of the stream is sent.
func TestStreamAccess(t *testing.T) {
	t.Parallel()
	f := setup(t, options{})
	ctx := context.Background()
	j := f.newJob(t) // project "demo"
	j.line(t, 1)
	j.event(t, contracts.EventSucceeded, 1)
	other := f.newJob(t)

	key := func(id string, scopes ...string) string {
		secret := access.NewSecret(id)
		if err := f.access.CreateKey(ctx, access.Key{ID: id, Hash: access.HashSecret(secret), Scopes: scopes}); err != nil {
			t.Fatal(err)
		}
		return secret
	}
	reader := key("READER", "project:demo:read")
	submitter := key("SUBMITTER", "project:demo:submit")
	stranger := key("STRANGER", "project:elsewhere:read")
	if err := f.access.CreateProject(ctx, access.Project{ID: "demo"}); err != nil {
		t.Fatal(err)
	}
	if err := f.access.CreateProject(ctx, access.Project{ID: "walled", AllowedIPs: []string{"10.0.0.0/8"}}); err != nil {
		t.Fatal(err)
	}
	walled := f.newJobIn(t, "walled")

	sign := func(streamID string, ttl time.Duration) string {
		return f.signer.Sign(access.StreamResource(streamID), time.Now().Add(ttl))
	}
	forged := access.NewSigner([]byte("not the secret, not the secret!!")).Sign(access.StreamResource(j.streamID), time.Now().Add(time.Hour))
	for _, tc := range []struct {
		name     string
		streamID string
		o        dialOpts
		status   int
		code     string
	}{
		{"no credentials", j.streamID, dialOpts{anonymous: true}, http.StatusUnauthorized, "missing_credentials"},
		{"token for another stream", j.streamID, dialOpts{token: sign(other.streamID, time.Hour)}, http.StatusUnauthorized, "invalid_token"},
		{"expired token", j.streamID, dialOpts{token: sign(j.streamID, -time.Second)}, http.StatusUnauthorized, "expired_token"},
		{"forged token", j.streamID, dialOpts{token: forged}, http.StatusUnauthorized, "invalid_token"},
		{"garbage token", j.streamID, dialOpts{token: "abc.def"}, http.StatusUnauthorized, "invalid_token"},
		{"bad key", j.streamID, dialOpts{apiKey: "rdev_READER_nope"}, http.StatusUnauthorized, "invalid_api_key"},
		{"key of another project", j.streamID, dialOpts{apiKey: stranger}, http.StatusNotFound, "stream_not_found"},
		{"submit-only key", j.streamID, dialOpts{apiKey: submitter}, http.StatusNotFound, "stream_not_found"},
		{"valid token, unknown stream", "nope", dialOpts{token: sign("nope", time.Hour)}, http.StatusNotFound, "stream_not_found"},
		{"token, project walled off by IP", walled.streamID, dialOpts{}, http.StatusForbidden, "ip_not_allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkError(t, f.get(t, tc.streamID, tc.o), tc.status, tc.code)
		})
	}

	for name, o := range map[string]dialOpts{"token": {}, "reader key": {apiKey: reader}} {
		c := f.connect(t, j.streamID, o)
		c.handshake(t)
		evs := c.rest(t)
		if len(evs) != 2 || evs[0].Name != contracts.SSEOutput || evs[1].Name != contracts.SSEComplete {
			t.Errorf("%s: got %+v, want the line and complete", name, evs)
		}
	}
}
