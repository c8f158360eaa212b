// Package ui is the web UI, served by the same binary at /: the runs list, a run's graph, logs,
// outputs and figures, and the catalog with trigger forms.
//
// Pages are rendered on the server with html/template (every value escaped in its context) and
// enhanced with htmx: a list or a graph that changes is re-fetched as a fragment every second
// or two while something runs. No single-page app and no build step: the pages work without
// JavaScript except for the live parts, the whole UI is a few templates and one vendored file,
// and each page is one round trip to the same data the API answers from (miniflux and River UI
// are the models). The task graph is laid out here (graph.go) and drawn as SVG.
//
// The package owns rendering and the browser's concerns (sessions, CSRF, security headers);
// everything else comes through Backend, which the server implements with the same code the
// API uses: a run started from a form is validated and submitted exactly like a POST.
package ui

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"nectar/server/catalog"
	"nectar/server/history"
	"nectar/server/queue"
	"nectar/server/runs"
	"nectar/server/schedules"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Backend is what the UI needs from the server.
type Backend interface {
	Catalog() *catalog.Catalog
	// ListRuns is GET /api/runs: a page of the history and, with counts, the counts by status.
	ListRuns(ctx context.Context, p history.ListParams, counts bool) (history.Page, map[string]int64, error)
	GetRun(ctx context.Context, runID string) (history.Entry, error)
	// Glance reads the key's run (live or stored) for its page without copying its every task.
	Glance(ctx context.Context, key string) (runs.Glance, error)
	// Submit validates query against t (the API's one validator) and starts or joins the run:
	// its record's run ID and key.
	Submit(ctx context.Context, t *catalog.Task, query url.Values, force bool) (runs.Record, error)
	// Cancel stops key's run.
	Cancel(ctx context.Context, key, reason string) error
	StatusURL(key string) string
	// DownloadURL is a signed (or presigned) URL of a stored object, "" if it cannot be made.
	DownloadURL(ctx context.Context, key string) string
	// LiveLogURL is the signed URL of a running task's log (worker: the one running it).
	LiveLogURL(taskKey, worker string) string
	// Head reads at most n bytes of a stored object.
	Head(ctx context.Context, key string, n int) ([]byte, error)
	// Metrics is the run's stored metrics object (samples included), nil if none.
	Metrics(ctx context.Context, key string) *runs.Metrics
	// Tokens reports whether the API asks for bearer tokens, and checks one.
	TokensRequired() bool
	ValidToken(token string) bool
	// SignSession and VerifySession make and check the session cookie's value.
	SignSession(ttl time.Duration) string
	VerifySession(value string) bool
	// BaseURL is the public origin, for copy-as-curl.
	BaseURL() string
	// Schedules lists every schedule with its state and the status of its last run; firing
	// reports whether this server fires them (NECTAR_SCHEDULES).
	Schedules(ctx context.Context) (rows []ScheduleRow, firing bool, err error)
	// PauseSchedule pauses or resumes a schedule for every server sharing the store.
	PauseSchedule(ctx context.Context, typ, chain, task string, pause bool, by string) error
	// Backfill starts the intervals within q's from and to (the API's checks) and says how many.
	Backfill(ctx context.Context, typ, chain, task string, q url.Values) (int, error)
	// StopBackfills stops the schedule's backfills on every server: no more intervals start.
	StopBackfills(ctx context.Context, typ, chain, task, by string) error
	// Artifacts lists a task's artifacts from the store (for a task found done, whose record
	// in this run does not list them).
	Artifacts(ctx context.Context, taskKey string) []runs.Artifact
	// Workers lists the workers and the queues' depths (ErrNoQueue with direct dispatch).
	Workers(ctx context.Context) ([]runs.WorkerInfo, []queue.Depth, error)
	// DrainWorker asks worker id to finish its tasks and take no new one.
	DrainWorker(ctx context.Context, id string) (runs.WorkerInfo, error)
}

// ScheduleRow is a schedule as the schedules page shows it.
type ScheduleRow struct {
	schedules.Info
	LastStatus string
	LastRunID  string
	// BackfillPending is how many intervals of its backfills this server has not started yet.
	BackfillPending int
}

// UI is the web UI's handlers.
type UI struct {
	b       Backend
	log     *slog.Logger
	pages   pageSet
	static  fs.FS
	version string // hash of the static files: their URLs change when they do
	shapes  *shapeCache
}

// New makes the UI. Its pages are parsed as they are first rendered (pageSet): a template
// error is a build error, as the tests render every page.
func New(b Backend, log *slog.Logger) (*UI, error) {
	static, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	u := &UI{b: b, log: log, static: static, pages: pageSet{pages: map[string]*template.Template{}}, shapes: newShapeCache(shapeCacheTasks)}
	u.version, err = hashFS(static)
	if err != nil {
		return nil, err
	}
	return u, nil
}

// pageSet is the pages' templates, each parsed (with the layout and partials it clones) the
// first time it is rendered. A server asked only through the API never holds them: parsed
// at start, the eight pages' trees were 0.3 MB of every server's heap, twice that at its peak.
type pageSet struct {
	mu    sync.Mutex
	base  *template.Template // layout and partials, never executed itself (a clone could not be made after)
	pages map[string]*template.Template
}

// get is page name's template set.
func (ps *pageSet) get(name string) (*template.Template, error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if t := ps.pages[name]; t != nil {
		return t, nil
	}
	if ps.base == nil {
		base, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/partials.html")
		if err != nil {
			return nil, err
		}
		ps.base = base
	}
	clone, err := ps.base.Clone()
	if err != nil {
		return nil, err
	}
	t, err := clone.ParseFS(templateFS, "templates/"+name+".html")
	if err != nil {
		return nil, fmt.Errorf("the UI's page %q: %w", name, err)
	}
	ps.pages[name] = t
	return t, nil
}

func hashFS(fsys fs.FS) (string, error) {
	h := sha256.New()
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, p)
		h.Write([]byte(p))
		h.Write(b)
		return err
	})
	return hex.EncodeToString(h.Sum(nil))[:12], err
}

// Register adds the UI's routes to e.
func (u *UI) Register(e *echo.Echo) {
	// Middleware per route, not on a group: echo answers every unmatched path of a group with
	// middleware itself, which would turn the API's 405s into 404s.
	page := func(method, path string, h echo.HandlerFunc, mw ...echo.MiddlewareFunc) {
		e.Add(method, path, h, append([]echo.MiddlewareFunc{u.headers}, mw...)...)
	}
	page(http.MethodGet, "/", u.runsPage, u.session)
	page(http.MethodGet, "/ui/runs/table", u.runsTable, u.session)
	page(http.MethodGet, "/runs/:run_id", u.runPage, u.session)
	page(http.MethodGet, "/ui/runs/:run_id/live", u.runLive, u.session)
	page(http.MethodPost, "/runs/:run_id/cancel", u.cancelRun, u.session, u.csrf)
	page(http.MethodPost, "/runs/:run_id/rerun", u.rerun, u.session, u.csrf)
	page(http.MethodGet, "/schedules", u.schedulesPage, u.session)
	page(http.MethodPost, "/schedules/:type/:chain/:task/pause", u.pauseSchedule(true), u.session, u.csrf)
	page(http.MethodPost, "/schedules/:type/:chain/:task/resume", u.pauseSchedule(false), u.session, u.csrf)
	page(http.MethodPost, "/schedules/:type/:chain/:task/backfill", u.backfill, u.session, u.csrf)
	page(http.MethodPost, "/schedules/:type/:chain/:task/backfill/stop", u.stopBackfills, u.session, u.csrf)
	page(http.MethodGet, "/workers", u.workersPage, u.session)
	page(http.MethodGet, "/ui/workers/table", u.workersTable, u.session)
	page(http.MethodPost, "/workers/:id/drain", u.drainWorker, u.session, u.csrf)
	page(http.MethodGet, "/catalog", u.catalogPage, u.session)
	page(http.MethodGet, "/catalog/:type/:chain/:task", u.taskForm, u.session)
	page(http.MethodPost, "/catalog/:type/:chain/:task", u.triggerRun, u.session, u.csrf)
	page(http.MethodGet, "/login", u.loginPage)
	page(http.MethodPost, "/login", u.login, u.csrf)
	page(http.MethodPost, "/logout", u.logout, u.csrf)
	e.GET("/ui/static/*", u.serveStatic)
}

// Cookie names.
const (
	sessionCookie = "nectar_session"
	csrfCookie    = "nectar_csrf"
	csrfField     = "csrf"
	csrfHeader    = "X-CSRF-Token"
	sessionTTL    = 12 * time.Hour
)

// headers sets the security headers of every page in one place (miniflux's response
// builder): a per-response nonce in a strict CSP, no framing, no sniffing, no referrer to other
// sites, and HTML that is never cached (it shows live state and capability URLs).
func (u *UI) headers(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		setHeaders(c)
		return next(c)
	}
}

// setHeaders sets the page headers and returns the response's script nonce.
func setHeaders(c echo.Context) string {
	if n, ok := c.Get("nonce").(string); ok {
		return n
	}
	nonce := randomToken(16)
	c.Set("nonce", nonce)
	h := c.Response().Header()
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self' 'nonce-"+nonce+"'; style-src 'self'; "+
		"img-src 'self' data: http: https:; frame-src 'self' http: https:; connect-src 'self'; object-src 'none'; base-uri 'none'; "+
		"frame-ancestors 'none'; form-action 'self'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	return nonce
}

// WantsHTML reports whether the request comes from a browser that asked for a page (River
// UI's rule: API clients get JSON errors, browsers a page).
func WantsHTML(c echo.Context) bool {
	r := c.Request()
	return (r.Method == http.MethodGet || r.Method == http.MethodHead) && !strings.HasPrefix(r.URL.Path, "/api/") &&
		strings.Contains(r.Header.Get("Accept"), "text/html")
}

// RenderError answers a browser with an error page.
func (u *UI) RenderError(c echo.Context, code int, msg string) error {
	return u.renderError(c, code, msg)
}

// session lets a page through when the API needs no token, or the browser holds a valid
// session; else it sends the browser to the login page (or answers 401 to htmx).
func (u *UI) session(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if !u.b.TokensRequired() {
			return next(c)
		}
		if ck, err := c.Cookie(sessionCookie); err == nil && u.b.VerifySession(ck.Value) {
			return next(c)
		}
		if c.Request().Header.Get("HX-Request") != "" {
			c.Response().Header().Set("HX-Redirect", "/login")
			return c.NoContent(http.StatusUnauthorized)
		}
		return c.Redirect(http.StatusSeeOther, "/login?next="+url.QueryEscape(c.Request().URL.RequestURI()))
	}
}

// csrf checks a state-changing request: the form field (or the X-CSRF-Token header htmx sends)
// must equal the csrf cookie, compared in constant time (the double-submit pattern; the cookie
// is SameSite=Strict, so another site can neither send it nor read it).
func (u *UI) csrf(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		ck, err := c.Cookie(csrfCookie)
		sent := c.Request().Header.Get(csrfHeader)
		if sent == "" {
			sent = c.FormValue(csrfField)
		}
		if err != nil || ck.Value == "" || !equalConstantTime(ck.Value, sent) {
			return u.renderError(c, http.StatusForbidden, "This form has expired or did not come from this page. Reload the page and try again.")
		}
		return next(c)
	}
}

func equalConstantTime(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	var v byte
	for i := 0; i < len(a); i++ {
		v |= a[i] ^ b[i]
	}
	return v == 0
}

// csrfToken is the browser's CSRF token, set as a cookie on first use.
func (u *UI) csrfToken(c echo.Context) string {
	if ck, err := c.Cookie(csrfCookie); err == nil && len(ck.Value) == 32 {
		return ck.Value
	}
	if t, ok := c.Get(csrfCookie).(string); ok {
		return t
	}
	t := randomToken(16)
	c.Set(csrfCookie, t)
	c.SetCookie(&http.Cookie{Name: csrfCookie, Value: t, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: c.Scheme() == "https"})
	return t
}

func randomToken(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// page is what every template gets.
type page struct {
	Title     string
	Nav       string
	Nonce     string
	CSRF      string
	Static    string // URL prefix of the static files, with their version
	LoggedIn  bool
	Tokens    bool
	Data      any
	Now       time.Time
	RequestID string
}

func (u *UI) render(c echo.Context, code int, name, title, nav string, data any) error {
	p := page{Title: title, Nav: nav, Nonce: setHeaders(c), CSRF: u.csrfToken(c),
		Static: "/ui/static/" + u.version, Tokens: u.b.TokensRequired(), Data: data, Now: time.Now()}
	if ck, err := c.Cookie(sessionCookie); err == nil && p.Tokens {
		p.LoggedIn = u.b.VerifySession(ck.Value)
	}
	t, err := u.pages.get(name)
	if err != nil {
		return err
	}
	var buf bytes.Buffer // buffered: a template error becomes a 500, never half a page
	if err := t.ExecuteTemplate(&buf, "layout.html", p); err != nil {
		return err
	}
	return c.HTMLBlob(code, buf.Bytes())
}

// renderFragment renders one named template of a page (an htmx swap).
func (u *UI) renderFragment(c echo.Context, pageName, fragment string, data any) error {
	p := page{Nonce: setHeaders(c), CSRF: u.csrfToken(c), Static: "/ui/static/" + u.version, Data: data, Now: time.Now()}
	t, err := u.pages.get(pageName)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, fragment, p); err != nil {
		return err
	}
	return c.HTMLBlob(http.StatusOK, buf.Bytes())
}

func (u *UI) renderError(c echo.Context, code int, msg string) error {
	return u.render(c, code, "error", http.StatusText(code), "", map[string]any{"Code": code, "Message": msg})
}

// serveStatic serves the embedded files under a versioned path, cached for a year (the
// version changes with their content).
func (u *UI) serveStatic(c echo.Context) error {
	p := c.Param("*")
	version, file, ok := strings.Cut(p, "/")
	if !ok || file == "" || strings.Contains(file, "..") {
		return echo.ErrNotFound
	}
	b, err := fs.ReadFile(u.static, path.Clean(file))
	if err != nil {
		return echo.ErrNotFound
	}
	h := c.Response().Header()
	h.Set("X-Content-Type-Options", "nosniff")
	if version == u.version {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		h.Set("Cache-Control", "no-cache")
	}
	ctype := "application/octet-stream"
	switch path.Ext(file) {
	case ".js":
		ctype = "text/javascript; charset=utf-8"
	case ".css":
		ctype = "text/css; charset=utf-8"
	case ".svg":
		ctype = "image/svg+xml"
	case ".txt":
		ctype = "text/plain; charset=utf-8"
	}
	return c.Blob(http.StatusOK, ctype, b)
}
