package accesshttp_test

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/access/accesshttp"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// The statuses are the API's contract: a change here breaks clients.
func TestRefuseAnswersEachKindWithItsStatus(t *testing.T) {
	t.Parallel()
	for kind, want := range map[access.Kind]int{
		access.KindInvalid: 400, access.KindUnauthenticated: 401, access.KindForbidden: 403,
		access.KindNotFound: 404, access.KindConflict: 409, access.KindUnprocessable: 422,
	} {
		rec := httptest.NewRecorder()
		c := echo.New().NewContext(httptest.NewRequest(http.MethodGet, "/", nil), rec)
		err := error(&access.Error{Kind: kind, Code: "some_code", Message: "why"})
		ae, status, ok := accesshttp.Refusal(err)
		if !ok || status != want {
			t.Fatalf("kind %d: Refusal = %v, %d; want %d", kind, ok, status, want)
		}
		if err := accesshttp.Refuse(c, ae); err != nil {
			t.Fatal(err)
		}
		var body contracts.ErrorBody
		if rec.Code != want || json.Unmarshal(rec.Body.Bytes(), &body) != nil || body.Error.Code != "some_code" || body.Error.Message != "why" {
			t.Errorf("kind %d: %d %s", kind, rec.Code, rec.Body)
		}
		if got := rec.Header().Get("WWW-Authenticate"); (want == 401) != (got != "") {
			t.Errorf("kind %d: WWW-Authenticate %q", kind, got)
		}
	}
	if _, _, ok := accesshttp.Refusal(http.ErrHandlerTimeout); ok {
		t.Error("an error that is no refusal was taken for one")
	}
}

func TestErrorHandlerAnswersInTheErrorBody(t *testing.T) {
	t.Parallel()
	e := echo.New()
	e.HTTPErrorHandler = accesshttp.ErrorHandler(slog.New(slog.DiscardHandler))
	e.GET("/fails", func(echo.Context) error { return errors.New("boom") })
	for _, tc := range []struct {
		method, path string
		status       int
		code         string
	}{
		{http.MethodGet, "/nowhere", 404, "not_found"},
		{http.MethodPost, "/fails", 405, "method_not_allowed"},
		{http.MethodGet, "/fails", 500, "internal"},
	} {
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
		var body contracts.ErrorBody
		if rec.Code != tc.status || json.Unmarshal(rec.Body.Bytes(), &body) != nil || body.Error.Code != tc.code {
			t.Errorf("%s %s: %d %s, want %d %s", tc.method, tc.path, rec.Code, rec.Body, tc.status, tc.code)
		}
	}
}
