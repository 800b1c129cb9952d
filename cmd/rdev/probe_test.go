package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// rdev probe passes on 2xx and fails on anything else or no answer.
func TestProbe(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)
	probe := func(url string) error {
		return run(context.Background(), []string{"probe", "--timeout", "2s", url}, io.Discard, io.Discard)
	}
	if err := probe(srv.URL + "/readyz"); err != nil {
		t.Errorf("ready server: %v", err)
	}
	if err := probe(srv.URL + "/down"); err == nil {
		t.Error("503 passed")
	}
	if err := probe("http://127.0.0.1:1/readyz"); err == nil {
		t.Error("no server passed")
	}
}
