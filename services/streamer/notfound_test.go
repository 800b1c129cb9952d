package streamer_test

import (
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/rdev-dev/rdev/pkg/access"
)

// A stream that does not exist and one of another project answer the
// same 404, word for word: the reply tells a key nothing about which
// streams exist elsewhere.
func TestNotFoundSameForUnknownAndForeignStreams(t *testing.T) {
	t.Parallel()
	f := setup(t, options{})
	j := f.newJob(t) // project "demo"
	j.line(t, 1)
	secret := access.NewSecret("OUTSIDER")
	if err := f.access.CreateKey(context.Background(), access.Key{ID: "OUTSIDER", Hash: access.HashSecret(secret), Scopes: []string{"project:elsewhere:read"}}); err != nil {
		t.Fatal(err)
	}
	body := func(streamID string) string {
		resp := f.get(t, streamID, dialOpts{apiKey: secret})
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("%s: %d %s", streamID, resp.StatusCode, b)
		}
		return string(b)
	}
	if foreign, unknown := body(j.streamID), body("NOSUCHSTREAM"); foreign != unknown {
		t.Fatalf("the 404s differ:\nforeign: %s\nunknown: %s", foreign, unknown)
	}
}
