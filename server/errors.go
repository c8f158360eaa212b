package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"nectar/chains/params"
	"nectar/server/queue"
	"nectar/server/runs"
	"nectar/server/signing"
	"nectar/server/ui"
	"nectar/targets"
)

// The server's own conditions; the packages below bring theirs (params, signing, runs, targets).
var (
	// ErrUnknownTask is a type, chain or task the catalog does not have.
	ErrUnknownTask = errors.New("not in the catalog")
	// ErrUnauthorized is a request without a valid bearer token where NECTAR_API_TOKENS asks
	// for one.
	ErrUnauthorized = errors.New("no valid bearer token")
	// ErrNoSchedule is a task of the catalog that declares no schedule.
	ErrNoSchedule = errors.New("no schedule")
)

// errorTable is the one map from error to HTTP status (pkgsite's derrors): the first target
// that errors.Is finds in the error decides. A 4xx answer says the error's own text, written for
// the client (public, when set, replaces it); a 5xx answer says only public and the request id,
// while the error goes to the server log with that id: its text may name the store's endpoint,
// bucket or folder. An error not listed is a 500.
var errorTable = []struct {
	target error
	code   int
	public string
	retry  bool // the condition passes by itself: the answer carries Retry-After
}{
	{target: params.ErrBad, code: http.StatusBadRequest},
	{target: targets.ErrBadKey, code: http.StatusBadRequest},
	{target: runs.ErrGraphTooLarge, code: http.StatusBadRequest},
	{target: ErrUnauthorized, code: http.StatusUnauthorized},
	{target: signing.ErrBadSignature, code: http.StatusForbidden},
	{target: signing.ErrExpired, code: http.StatusForbidden},
	{target: ErrUnknownTask, code: http.StatusNotFound},
	{target: runs.ErrUnknownKey, code: http.StatusNotFound},
	{target: runs.ErrNotRunning, code: http.StatusNotFound},
	{target: ErrUnknownRun, code: http.StatusNotFound},
	{target: ErrNoSchedule, code: http.StatusNotFound},
	{target: ErrHistoryOff, code: http.StatusNotFound},
	{target: ErrNoWorkers, code: http.StatusNotFound},
	{target: queue.ErrNoWorker, code: http.StatusNotFound},
	{target: runs.ErrWorkerLost, code: http.StatusConflict},
	{target: targets.ErrNotExist, code: http.StatusNotFound},
	{target: echo.ErrNotFound, code: http.StatusNotFound},                 // no route: errorHandler names the path
	{target: echo.ErrMethodNotAllowed, code: http.StatusMethodNotAllowed}, // errorHandler names the methods
	{target: echo.ErrStatusRequestEntityTooLarge, code: http.StatusRequestEntityTooLarge, public: "the request body is over 1 MB"},
	{target: ErrUnsupportedBody, code: http.StatusUnsupportedMediaType},
	{target: runs.ErrQueueFull, code: http.StatusTooManyRequests, retry: true},
	{target: targets.ErrUnavailable, code: http.StatusServiceUnavailable, public: "target store unavailable"},
	{target: runs.ErrDraining, code: http.StatusServiceUnavailable, public: "server is shutting down", retry: true},
	{target: ErrQueueUnreachable, code: http.StatusServiceUnavailable, public: "the task queue (NATS) is unreachable; try again", retry: true},
}

const internalError = "internal error"

// classify looks err up in errorTable.
func classify(err error) (code int, public string, retry bool) {
	for _, e := range errorTable {
		if errors.Is(err, e.target) {
			return e.code, e.public, e.retry
		}
	}
	// echo's own errors that the table does not name keep their status; their text is echo's.
	var he *echo.HTTPError
	if errors.As(err, &he) && he.Code >= 400 && he.Code < 500 {
		return he.Code, strings.ToLower(http.StatusText(he.Code)), false
	}
	return http.StatusInternalServerError, internalError, false
}

// answerError is an error whose text is written for the client, with the answer's data when
// the client can use more than the message. Its status comes from kind, a target of
// errorTable, like any other error's.
type answerError struct {
	kind error
	msg  string
	data any
}

func (e *answerError) Error() string { return e.msg }
func (e *answerError) Unwrap() error { return e.kind }

func newError(kind error, msg string) error { return &answerError{kind: kind, msg: msg} }

// maxEcho is how much of one piece of user input a message quotes: a 60 KB path must not come
// back as a 60 KB message (nor fill the log).
const maxEcho = 200

// clip shortens user input for a message: at most maxEcho bytes (cut at a rune boundary),
// then "…(N bytes)" so the reader knows it was cut and how long it was.
func clip(s string) string {
	if len(s) <= maxEcho {
		return s
	}
	return fmt.Sprintf("%s…(%d bytes)", prefix(s, maxEcho), len(s))
}

// prefix is at most the first n bytes of s, cut at a rune boundary.
func prefix(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// maxMessage bounds a whole message, whatever it quotes; maxLogged an error in the log (enough
// for a store error's chain, or a recovered panic with its stack).
const (
	maxMessage = 1000
	maxLogged  = 8 << 10
)

// clientText is the message of a 4xx answer: err's text, with the parameter name and value a
// client sent clipped (chains/params quotes them whole), and bounded overall.
func clientText(err error) string {
	msg := err.Error()
	var pe *params.Error
	if errors.As(err, &pe) && (len(pe.Param) > maxEcho || len(pe.Value) > maxEcho) {
		short := *pe
		short.Param, short.Value = clip(pe.Param), clip(pe.Value)
		msg = strings.Replace(msg, pe.Error(), short.Error(), 1)
	}
	if len(msg) > maxMessage {
		msg = prefix(msg, maxMessage) + "…"
	}
	return msg
}

// errorHandler answers every error with the JSON envelope; 5xx are logged at error level, 4xx at
// warn (miniflux's rule), each with the request id the answer carries.
func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	req := c.Request()
	if errors.Is(err, context.Canceled) && req.Context().Err() != nil {
		return // the client went away (a ?wait it gave up on): nobody to answer
	}
	id := requestIDOf(c)
	code, msg, retry := classify(err)
	var data any
	switch {
	case code >= 500:
		msg = fmt.Sprintf("%s (request id %s)", msg, id)
		data = map[string]any{"request_id": id}
	case errors.Is(err, echo.ErrNotFound):
		msg = "no such endpoint: " + req.Method + " " + clip(req.URL.Path)
	case errors.Is(err, echo.ErrMethodNotAllowed):
		// echo's router has set Allow to the methods the path takes.
		msg = clip(req.URL.Path) + " does not take the method " + clip(req.Method)
		if allow := c.Response().Header().Get(echo.HeaderAllow); allow != "" {
			msg += "; it takes " + allow
		}
	case msg == "":
		msg = clientText(err)
	}
	var ae *answerError
	if code < 500 && errors.As(err, &ae) && ae.data != nil {
		data = ae.data
	}
	if retry {
		c.Response().Header().Set("Retry-After", "1")
	}
	if errors.Is(err, targets.ErrUnavailable) {
		s.metrics.StoreError("api")
	}
	level := slog.LevelWarn
	if code >= 500 {
		level = slog.LevelError
	}
	s.log.Log(req.Context(), level, "request failed", "request_id", id, "method", req.Method,
		"path", clip(req.URL.Path), "status", code, "err", prefix(err.Error(), maxLogged))
	if req.Method == http.MethodHead {
		_ = c.NoContent(code)
		return
	}
	if s.ui != nil && ui.WantsHTML(c) {
		if code == http.StatusNotFound {
			msg = "There is no page at " + clip(req.URL.Path) + "."
		}
		_ = s.ui.RenderError(c, code, msg)
		return
	}
	_ = respond(c, code, msg, data)
}

// requestID gives every request an id, sent back in X-Request-Id on every answer and logged
// with its error, so that a 5xx answer, which says nothing else, leads to its log line. An id
// the caller sent (a proxy's) is kept when it is short and plain; anything else is replaced,
// so neither the log nor the answer carries what a client made up.
func requestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		id := c.Request().Header.Get(echo.HeaderXRequestID)
		if !plainID(id) {
			id = newRequestID()
		}
		// Kept in the answer's header only: it is read back from there (c.Set would make a
		// map for every request, the hot reads' included).
		c.Response().Header().Set(echo.HeaderXRequestID, id)
		return next(c)
	}
}

// requestIDOf is the request's id (one is made if the middleware did not run).
func requestIDOf(c echo.Context) string {
	if id := c.Response().Header().Get(echo.HeaderXRequestID); id != "" {
		return id
	}
	id := newRequestID()
	c.Response().Header().Set(echo.HeaderXRequestID, id)
	return id
}

func plainID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

func newRequestID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
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

// count says n things: "1 run", "3 runs".
func count(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}
