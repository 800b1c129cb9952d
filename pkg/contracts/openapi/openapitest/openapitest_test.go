package openapitest_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/rdev-dev/rdev/pkg/contracts/openapi/openapitest"
)

// recorder is a testing.TB that keeps what Transport reports.
type recorder struct {
	testing.TB
	mu     sync.Mutex
	errors []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func TestTransportReportsWhatTheDocumentDoesNotDescribe(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/jobs/good-404":
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error":{"code":"job_not_found","message":"no job"}}`)
		case "/v1/jobs/bad-code":
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error":{"code":"no_such_code","message":"?"}}`)
		case "/v1/jobs/bad-body":
			fmt.Fprint(w, `{"job_id":7}`)
		default: // /v1/undocumented, and a bad request the server takes
			fmt.Fprint(w, `{}`)
		}
	}))
	t.Cleanup(srv.Close)
	for _, c := range []struct {
		method, path, body string
		want               string // "" for no report
	}{
		{http.MethodGet, "/v1/jobs/good-404", "", ""},
		{http.MethodGet, "/v1/jobs/bad-code", "", "does not match"},
		{http.MethodGet, "/v1/jobs/bad-body", "", "does not match"},
		{http.MethodGet, "/v1/undocumented", "", "is not in openapi.yaml"},
		{http.MethodPost, "/v1/projects/p/commands", `{"command":"not an array"}`, "yet the server answered 200"},
	} {
		rec := &recorder{TB: t}
		req, err := http.NewRequest(c.method, srv.URL+c.path, strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer k")
		req.Header.Set("Content-Type", "application/json")
		resp, err := (&http.Client{Transport: openapitest.Transport(rec, nil)}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := strings.Join(rec.errors, "\n")
		if c.want == "" && got != "" || !strings.Contains(got, c.want) {
			t.Errorf("%s %s: reported %q, want %q", c.method, c.path, got, c.want)
		}
	}
}

func TestOperationsListsTheDocument(t *testing.T) {
	t.Parallel()
	ops := openapitest.Operations(t)
	for _, want := range []string{"GET /v1/openapi.json", "POST /v1/projects/{project}/commands", "GET /v1/streams/{stream_id}/events"} {
		found := false
		for _, op := range ops {
			found = found || op == want
		}
		if !found {
			t.Errorf("Operations lacks %s: %v", want, ops)
		}
	}
}
