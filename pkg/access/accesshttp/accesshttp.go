// Package accesshttp is the HTTP edge that rdev's API and streamer share:
// it reads a request's credentials (bearer key, client address) and turns
// an *access.Error into its status and rdev's error body, so both servers
// answer every refusal alike; its ErrorHandler does the same for the
// errors Echo raises itself.
package accesshttp

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// Bearer is the API key of the request's Authorization header, or "".
func Bearer(r *http.Request) string {
	return access.BearerToken(r.Header.Get(echo.HeaderAuthorization))
}

// ClientIP is the address access rules judge. Echo's IPExtractor decides
// whether proxy headers are believed; the servers set one that believes
// none unless told otherwise.
func ClientIP(c echo.Context) netip.Addr { return access.ClientAddr(c.RealIP()) }

// Status is the HTTP status of a refusal of kind k.
func Status(k access.Kind) int {
	switch k {
	case access.KindInvalid:
		return http.StatusBadRequest
	case access.KindUnauthenticated:
		return http.StatusUnauthorized
	case access.KindNotFound:
		return http.StatusNotFound
	case access.KindConflict:
		return http.StatusConflict
	case access.KindUnprocessable:
		return http.StatusUnprocessableEntity
	}
	return http.StatusForbidden
}

// Refusal returns the *access.Error in err's chain and its status, or
// ok false when err is no refusal.
func Refusal(err error) (ae *access.Error, status int, ok bool) {
	if !errors.As(err, &ae) {
		return nil, 0, false
	}
	return ae, Status(ae.Kind), true
}

// Refuse answers with the refusal ae: its status, its code and message,
// and a WWW-Authenticate challenge when it asks for credentials.
func Refuse(c echo.Context, ae *access.Error) error {
	status := Status(ae.Kind)
	if status == http.StatusUnauthorized {
		c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="rdev"`)
	}
	return WriteError(c, status, ae.Code, ae.Message)
}

// WriteError answers with rdev's error body,
// {"error":{"code":"...","message":"..."}}.
func WriteError(c echo.Context, status int, code, msg string) error {
	return c.JSON(status, contracts.ErrorBody{Error: contracts.ErrorDetail{Code: code, Message: msg}})
}

// ErrorHandler renders the errors Echo raises outside handlers (unknown
// route, wrong method) and any error a handler returns instead of
// answering, in rdev's error body; log records the unexpected ones.
func ErrorHandler(log *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		var he *echo.HTTPError
		if !errors.As(err, &he) {
			log.Error("unhandled error", "path", c.Path(), "err", err)
			_ = WriteError(c, http.StatusInternalServerError, "internal", "an internal error occurred")
			return
		}
		code := map[int]string{
			http.StatusNotFound:              "not_found",
			http.StatusMethodNotAllowed:      "method_not_allowed",
			http.StatusRequestEntityTooLarge: "body_too_large",
			http.StatusUnsupportedMediaType:  "unsupported_media_type",
		}[he.Code]
		if code == "" {
			code = strings.ReplaceAll(strings.ToLower(http.StatusText(he.Code)), " ", "_")
		}
		_ = WriteError(c, he.Code, code, fmt.Sprint(he.Message))
	}
}
