package api_test

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/rdev-dev/rdev/pkg/contracts/openapi"
)

// The contract is readable before a client has a key.
func TestOpenAPIDocumentIsServedWithoutAKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	resp, body := b.get(t, "/v1/openapi.json", "Authorization", "")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /v1/openapi.json: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if !bytes.Equal(body, openapi.JSON()) || !bytes.Contains(body, []byte(`"openapi": "3.1.0"`)) {
		t.Fatalf("GET /v1/openapi.json is not the embedded document: %.200s", body)
	}
}
