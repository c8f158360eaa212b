package server

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/labstack/echo/v4"

	"nectar/chains/params"
	"nectar/server/runs"
	"nectar/server/signing"
	"nectar/targets"
)

// apiError is an error whose message is safe to show the client.
type apiError struct {
	code int
	msg  string
	data any
}

func (e *apiError) Error() string { return e.msg }

func newError(code int, msg string) error { return &apiError{code: code, msg: msg} }

// errorStatus is the one table from error to HTTP status. Anything not listed is a 500 whose
// text never reaches the client.
var errorStatus = []struct {
	target error
	code   int
}{
	{params.ErrBad, http.StatusBadRequest},
	{targets.ErrBadKey, http.StatusBadRequest},
	{signing.ErrBadSignature, http.StatusForbidden},
	{signing.ErrExpired, http.StatusForbidden},
	{runs.ErrUnknownKey, http.StatusNotFound},
	{targets.ErrNotExist, http.StatusNotFound},
	{runs.ErrStore, http.StatusServiceUnavailable},
	{runs.ErrQueueFull, http.StatusTooManyRequests},
	{runs.ErrDraining, http.StatusServiceUnavailable},
	{targets.ErrUnavailable, http.StatusServiceUnavailable},
}

// envelope is every JSON answer: status repeats the HTTP code.
type envelope struct {
	Status  int    `json:"status"`
	Message string `json:"message"`
	Data    any    `json:"data"`
}

func respond(c echo.Context, code int, msg string, data any) error {
	if data == nil {
		data = struct{}{}
	}
	return c.JSON(code, envelope{Status: code, Message: msg, Data: data})
}

// errorHandler writes every error as the JSON envelope; 5xx are logged at error level, 4xx at
// warn (miniflux's rule).
func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	if errors.Is(err, context.Canceled) && c.Request().Context().Err() != nil {
		return // the client went away (a ?wait it gave up on): nobody to answer
	}
	code, msg, data := http.StatusInternalServerError, "internal error", any(nil)
	var ae *apiError
	var he *echo.HTTPError
	switch {
	case errors.As(err, &ae):
		code, msg, data = ae.code, ae.msg, ae.data
	case errors.As(err, &he):
		code = he.Code
		if m, ok := he.Message.(string); ok {
			msg = m
		} else {
			msg = http.StatusText(code)
		}
		if code == http.StatusNotFound {
			msg = "no such endpoint: " + c.Request().Method + " " + c.Request().URL.Path
		}
	default:
		for _, e := range errorStatus {
			if errors.Is(err, e.target) {
				code = e.code
				msg = err.Error()
				break
			}
		}
	}
	switch {
	case errors.Is(err, runs.ErrQueueFull), errors.Is(err, runs.ErrDraining):
		c.Response().Header().Set("Retry-After", "1")
	case code == http.StatusServiceUnavailable:
		msg = "target store unavailable: " + msg
		s.metrics.StoreError("api")
	}
	level := slog.LevelWarn
	if code >= 500 {
		level = slog.LevelError
	}
	s.log.Log(c.Request().Context(), level, "request failed", "method", c.Request().Method,
		"path", c.Request().URL.Path, "status", code, "err", err)
	if code == http.StatusInternalServerError {
		msg = "internal error"
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(code)
		return
	}
	_ = respond(c, code, msg, data)
}

// plainJSON is echo's serializer without HTML escaping, so URLs read as URLs (& not \u0026).
type plainJSON struct{}

func (plainJSON) Serialize(c echo.Context, i any, indent string) error {
	enc := json.NewEncoder(c.Response())
	enc.SetEscapeHTML(false)
	if indent != "" {
		enc.SetIndent("", indent)
	}
	return enc.Encode(i)
}

func (plainJSON) Deserialize(c echo.Context, i any) error {
	return json.NewDecoder(c.Request().Body).Decode(i)
}
