package server

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// browser is an HTTP client with cookies that does not follow redirects (the tests check them).
type browser struct {
	t    *testing.T
	base string
	c    *http.Client
}

func newBrowser(t *testing.T, ts *testServer) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: ts.url, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

type page struct {
	code int
	body string
	h    http.Header
}

func (b *browser) do(method, path string, form url.Values) page {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, b.base+path, body)
	req.Header.Set("Accept", "text/html")
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	bs, _ := io.ReadAll(resp.Body)
	return page{code: resp.StatusCode, body: string(bs), h: resp.Header}
}

func (b *browser) get(path string) page { return b.do(http.MethodGet, path, nil) }

// csrf is the token the last page carried in its forms.
var csrfRE = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

func (b *browser) csrf(path string) string {
	b.t.Helper()
	m := csrfRE.FindStringSubmatch(b.get(path).body)
	if m == nil {
		b.t.Fatalf("no csrf field on %s", path)
	}
	return m[1]
}

func TestUIPagesAndHeaders(t *testing.T) {
	ts := newTestServer(t)
	ts.postWait(t, "/api/chains/testchains/hello_chain/UpperTask?wait=20s&name=ada", nil)
	ts.postWait(t, "/api/chains/testchains/faults_chain/FailTask?wait=20s&message="+url.QueryEscape("<script>alert(1)</script>"), nil)
	ts.flushHistory(t)
	b := newBrowser(t, ts)
	runs := ts.runs(t, "")
	for _, path := range []string{"/", "/?status=FAILED", "/catalog", "/catalog/testchains/hello_chain/HelloTask",
		"/runs/" + runs.Runs[0].RunID, "/runs/" + runs.Runs[1].RunID, "/ui/runs/table", "/workers", "/ui/workers/table"} {
		p := b.get(path)
		if p.code != http.StatusOK {
			t.Errorf("GET %s = %d\n%.500s", path, p.code, p.body)
			continue
		}
		for h, want := range map[string]string{"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"} {
			if got := p.h.Get(h); got != want {
				t.Errorf("GET %s: %s = %q, want %q", path, h, got, want)
			}
		}
		csp := p.h.Get("Content-Security-Policy")
		if !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "script-src 'self' 'nonce-") {
			t.Errorf("GET %s: CSP = %q", path, csp)
		}
		// Every script carries this response's nonce; no inline handlers.
		nonce := regexp.MustCompile(`nonce-([0-9a-f]+)`).FindStringSubmatch(csp)
		for _, m := range regexp.MustCompile(`<script[^>]*>`).FindAllString(p.body, -1) {
			if nonce == nil || !strings.Contains(m, `nonce="`+nonce[1]+`"`) {
				t.Errorf("GET %s: script without the response's nonce: %s", path, m)
			}
		}
		if regexp.MustCompile(`\son[a-z]+=`).MatchString(p.body) {
			t.Errorf("GET %s has an inline event handler", path)
		}
		// What a task printed is text, never markup.
		if strings.Contains(p.body, "<script>alert(1)") {
			t.Errorf("GET %s shows the task's <script> unescaped", path)
		}
	}
	if p := b.get("/"); !strings.Contains(p.body, "&lt;script&gt;alert(1)&lt;/script&gt;") || !strings.Contains(p.body, ">FAILED<") {
		t.Errorf("runs page lacks the escaped error or the FAILED status word")
	}
	upper := b.get("/runs/" + runs.Runs[1].RunID)
	for _, want := range []string{"UpperTask", "HelloTask", `class="node s-done"`, "HELLO ADA", "Download out", "Copy as curl",
		"bin/nectar run testchains/hello_chain/UpperTask name=ada"} {
		if !strings.Contains(upper.body, want) {
			t.Errorf("run page lacks %q", want)
		}
	}
	// Static files: versioned, cached for good; the vendored file carries its licence.
	m := regexp.MustCompile(`/ui/static/[0-9a-f]+/vendor/htmx-2\.0\.11\.min\.js`).FindString(upper.body)
	if p := b.get(m); p.code != 200 || !strings.Contains(p.h.Get("Cache-Control"), "immutable") || !strings.HasPrefix(p.h.Get("Content-Type"), "text/javascript") {
		t.Errorf("GET %s = %d %v", m, p.code, p.h)
	}
	if p := b.get(strings.Replace(m, "htmx-2.0.11.min.js", "htmx-2.0.11.LICENSE.txt", 1)); p.code != 200 || !strings.Contains(p.body, "Zero-Clause BSD") {
		t.Errorf("the vendored licence is not served: %d", p.code)
	}
	// A browser gets pages for errors; an API client JSON.
	if p := b.get("/no/such/page"); p.code != 404 || !strings.Contains(p.body, "<html") || !strings.Contains(p.body, "no page at /no/such/page") {
		t.Errorf("GET /no/such/page in a browser = %d %.300s", p.code, p.body)
	}
	if a := ts.do(t, http.MethodGet, "/no/such/page"); a.Code != 404 {
		t.Errorf("GET /no/such/page as JSON = %d", a.Code)
	}
	if p := b.get("/runs/nosuchrun"); p.code != 404 {
		t.Errorf("GET /runs/nosuchrun = %d", p.code)
	}
}

func TestUITriggerFormValidatesAndStartsARun(t *testing.T) {
	ts := newTestServer(t)
	b := newBrowser(t, ts)
	form := b.get("/catalog/testchains/fanin_chain/JoinTask")
	if !strings.Contains(form.body, `name="leaves" type="number" value="100"`) {
		t.Errorf("JoinTask form lacks the typed, defaulted leaves field:\n%s", form.body)
	}
	enum := b.get("/catalog/testchains/faults_chain/FlakyTask")
	if !strings.Contains(enum.body, `name="counter" type="text" value=""`) || !strings.Contains(enum.body, `<span class="req" title="required">*</span>`) {
		t.Errorf("FlakyTask form does not mark counter required")
	}
	token := b.csrf("/catalog/testchains/fanin_chain/JoinTask")

	// Without the CSRF token: refused, nothing runs.
	if p := b.do(http.MethodPost, "/catalog/testchains/fanin_chain/JoinTask", url.Values{"leaves": {"3"}}); p.code != http.StatusForbidden {
		t.Errorf("POST without csrf = %d, want 403", p.code)
	}
	// A bad value: the server's message beside the field, the value kept.
	p := b.do(http.MethodPost, "/catalog/testchains/fanin_chain/JoinTask", url.Values{"csrf": {token}, "leaves": {"many"}})
	if p.code != http.StatusUnprocessableEntity || !regexp.MustCompile(`id="e-leaves" role="alert">&#34;many&#34; is not an integer`).MatchString(p.body) ||
		!strings.Contains(p.body, `value="many"`) {
		t.Errorf("bad leaves = %d, want 422 with the message beside the field:\n%s", p.code, p.body)
	}
	if ts.Runs().Launches() != 0 {
		t.Errorf("a refused form started %d plugin processes", ts.Runs().Launches())
	}
	// A good one: redirected to its run page, which shows it.
	p = b.do(http.MethodPost, "/catalog/testchains/fanin_chain/JoinTask", url.Values{"csrf": {token}, "leaves": {"3"}})
	loc := p.h.Get("Location")
	if p.code != http.StatusSeeOther || !strings.HasPrefix(loc, "/runs/") {
		t.Fatalf("good form = %d Location %q", p.code, loc)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		run := b.get(loc)
		if run.code != 200 {
			t.Fatalf("GET %s = %d", loc, run.code)
		}
		if strings.Contains(run.body, `JoinTask <span class="status s-done">DONE</span>`) {
			if !strings.Contains(run.body, "LeafTask") {
				t.Errorf("run page lacks the leaves")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("run did not show DONE:\n%s", run.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	ts.flushHistory(t)
	if r := ts.runs(t, "trigger=ui"); len(r.Runs) != 1 || r.Runs[0].Task != "JoinTask" {
		t.Errorf("history of ui runs = %+v", r.Runs)
	}
}

func TestUIGroupsAFanInAndCancels(t *testing.T) {
	ts := newTestServer(t)
	b := newBrowser(t, ts)
	ts.postWait(t, "/api/chains/testchains/fanin_chain/JoinTask?wait=60s&leaves=100", nil)
	ts.flushHistory(t)
	id := ts.runs(t, "task=JoinTask").Runs[0].RunID
	if p := b.get("/runs/" + id); !strings.Contains(p.body, "LeafTask ×100") || !strings.Contains(p.body, "100 DONE") ||
		strings.Count(p.body, `class="node`) != 2 {
		t.Errorf("a 100-leaf fan-in is not one group node:\n%.2000s", p.body)
	}

	a := ts.post(t, "/api/chains/testchains/faults_chain/SleepTask?duration=30s")
	key := a.run.Key
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		rec, _ := ts.Runs().Lookup(context.Background(), key)
		if len(rec.Tasks) > 0 && rec.Tasks[0].Status == "RUNNING" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("SleepTask did not start: %+v", rec)
		}
	}
	rec, _ := ts.Runs().Lookup(context.Background(), key)
	page := b.get("/runs/" + rec.RunID + "?key=" + url.QueryEscape(key))
	if !strings.Contains(page.body, "Cancel run") || !strings.Contains(page.body, `hx-trigger="every 1s"`) || !strings.Contains(page.body, "data-log-url=") {
		t.Fatalf("a running run's page lacks cancel, live refresh or the live log:\n%s", page.body)
	}
	token := csrfRE.FindStringSubmatch(page.body)[1]
	p := b.do(http.MethodPost, "/runs/"+rec.RunID+"/cancel", url.Values{"csrf": {token}, "key": {key}})
	if p.code != http.StatusSeeOther {
		t.Fatalf("cancel = %d", p.code)
	}
	final := ts.poll(t, a.run.StatusURL)
	if *final.JobStatus != "CANCELLED" {
		t.Errorf("after cancel from the UI, status = %s", *final.JobStatus)
	}
}

func TestUIAsksForATokenWhenTheAPIDoes(t *testing.T) {
	const token = "ui-test-token-0123456789"
	ts := newTestServer(t, func(c *Config) { c.APITokens = []string{token} })
	b := newBrowser(t, ts)
	if p := b.get("/"); p.code != http.StatusSeeOther || !strings.HasPrefix(p.h.Get("Location"), "/login") {
		t.Fatalf("GET / without a session = %d %s", p.code, p.h.Get("Location"))
	}
	csrf := b.csrf("/login")
	if p := b.do(http.MethodPost, "/login", url.Values{"csrf": {csrf}, "token": {"wrong-token-000000000"}, "next": {"/catalog"}}); p.code != http.StatusUnauthorized {
		t.Errorf("wrong token = %d", p.code)
	}
	p := b.do(http.MethodPost, "/login", url.Values{"csrf": {csrf}, "token": {token}, "next": {"//evil.example/x"}})
	if p.code != http.StatusSeeOther || p.h.Get("Location") != "/" {
		t.Fatalf("login = %d Location %q (an off-site next must become /)", p.code, p.h.Get("Location"))
	}
	ck := p.h.Get("Set-Cookie")
	if !strings.Contains(ck, "nectar_session=") || !strings.Contains(ck, "HttpOnly") || !strings.Contains(ck, "SameSite=Strict") {
		t.Errorf("session cookie = %q", ck)
	}
	if strings.Contains(ck, token) {
		t.Errorf("the session cookie holds the token")
	}
	if p := b.get("/"); p.code != http.StatusOK {
		t.Errorf("GET / with a session = %d", p.code)
	}
	// The API itself still wants the bearer token: a session cookie is not one.
	if a := ts.post(t, "/api/chains/testchains/hello_chain/HelloTask"); a.Code != http.StatusUnauthorized {
		t.Errorf("API POST without a token = %d", a.Code)
	}
}

// The schedules page lists the declared schedules; pause, resume and backfill work from it
// (with the CSRF token only), and the backfilled runs show in the runs list marked as such.
func TestUISchedulesPage(t *testing.T) {
	ts := newTestServer(t)
	b := newBrowser(t, ts)
	p := b.get("/schedules")
	for _, want := range []string{`<a href="/catalog/testchains/hello_chain/DailyTask">DailyTask</a>`, "<code>@daily</code>", "Europe/Paris",
		"00:00:00 CET", `action="/schedules/testchains/hello_chain/DailyTask/pause"`, "ACTIVE", "not fired yet"} {
		if !strings.Contains(p.body, want) {
			t.Errorf("schedules page lacks %q", want)
		}
	}
	if strings.Contains(p.body, "HelloTask") {
		t.Errorf("the schedules page lists a task without a schedule")
	}
	token := b.csrf("/schedules")
	if p := b.do(http.MethodPost, "/schedules/testchains/hello_chain/DailyTask/pause", url.Values{}); p.code != http.StatusForbidden {
		t.Errorf("pause without csrf = %d, want 403", p.code)
	}
	if p := b.do(http.MethodPost, "/schedules/testchains/hello_chain/DailyTask/pause", url.Values{"csrf": {token}}); p.code != http.StatusSeeOther {
		t.Fatalf("pause = %d", p.code)
	}
	if p := b.get("/schedules"); !strings.Contains(p.body, "PAUSED") || !strings.Contains(p.body, "by web UI from 127.0.0.1") || !strings.Contains(p.body, ">Resume<") {
		t.Errorf("after a pause the page does not show it:\n%s", p.body)
	}
	if p := b.do(http.MethodPost, "/schedules/testchains/hello_chain/DailyTask/resume", url.Values{"csrf": {token}}); p.code != http.StatusSeeOther {
		t.Fatalf("resume = %d", p.code)
	}
	if p := b.get("/schedules"); !strings.Contains(p.body, "ACTIVE") {
		t.Errorf("after a resume the page does not show it")
	}
	// A backfill with its dates reversed: the error on the page, the dates kept.
	bad := b.do(http.MethodPost, "/schedules/testchains/hello_chain/DailyTask/backfill", url.Values{"csrf": {token}, "from": {"2026-01-05"}, "to": {"2026-01-01"}})
	if bad.code != http.StatusBadRequest || !strings.Contains(bad.body, `parameter &#34;to&#34;`) || !strings.Contains(bad.body, `value="2026-01-05"`) {
		t.Errorf("reversed backfill = %d, want 400 naming to and keeping the dates:\n%s", bad.code, bad.body)
	}
	ok := b.do(http.MethodPost, "/schedules/testchains/hello_chain/DailyTask/backfill", url.Values{"csrf": {token}, "from": {"2026-01-01"}, "to": {"2026-01-02"}})
	if ok.code != http.StatusSeeOther || ok.h.Get("Location") != "/?task=DailyTask&trigger=backfill" {
		t.Fatalf("backfill = %d %q", ok.code, ok.h.Get("Location"))
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		ts.flushHistory(t)
		runs := b.get("/?task=DailyTask&trigger=backfill")
		if strings.Count(runs.body, `<td><span class="status s-done">DONE</span>`) == 2 {
			if strings.Count(runs.body, `<span class="trigger t-backfill"`) != 2 {
				t.Errorf("backfilled runs are not marked as such:\n%s", runs.body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("two backfilled runs did not show DONE:\n%s", runs.body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if p := b.get("/schedules"); p.code != 200 {
		t.Errorf("schedules page after a backfill = %d", p.code)
	}
}

// A task's artifacts on its run page: images in a gallery (filtered by name), an HTML report
// in a sandboxed frame whose file is served sandboxed too.
func TestUIShowsArtifacts(t *testing.T) {
	ts := newTestServer(t)
	a := ts.postWait(t, "/api/chains/testchains/data_chain/ArtifactsTask?count=2&pictures=true&wait=30s", nil)
	if a.run.JobStatus == nil || *a.run.JobStatus != "DONE" {
		t.Fatalf("ArtifactsTask: %v %v", a.run.JobStatus, a.run.Error)
	}
	ts.flushHistory(t)
	id := ts.runs(t, "task=ArtifactsTask").Runs[0].RunID
	b := newBrowser(t, ts)
	p := b.get("/runs/" + id + "?task=0")
	if n := strings.Count(p.body, `<figure><a href=`); n != 2 || !strings.Contains(p.body, `alt="plots/ATL.png"`) {
		t.Errorf("gallery has %d images, want ATL and ORD", n)
	}
	if !strings.Contains(p.body, `<iframe class="report" sandbox src="`) || !strings.Contains(p.body, `>parts/1.txt</a>`) {
		t.Errorf("run page lacks the sandboxed report or the text artifacts")
	}
	if csp := p.h.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-src 'self'") {
		t.Errorf("page CSP does not allow the report frame: %s", csp)
	}
	f := b.get("/runs/" + id + "?task=0&artifact=atl")
	if strings.Count(f.body, `<figure><a href=`) != 1 || strings.Contains(f.body, `alt="plots/ORD.png"`) || strings.Contains(f.body, "<iframe") {
		t.Errorf("the filter atl does not keep ATL's image alone")
	}
	m := regexp.MustCompile(`<iframe class="report" sandbox src="([^"]+)"`).FindStringSubmatch(p.body)
	if m == nil {
		t.Fatal("no report frame")
	}
	resp, err := http.Get(strings.ReplaceAll(m[1], "&amp;", "&"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" || !strings.HasPrefix(resp.Header.Get("Content-Security-Policy"), "sandbox;") {
		t.Errorf("the report is served %d %q with CSP %q: want text/html in a sandbox", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Security-Policy"))
	}
}

// The workers page lists the workers with their queues and counts, and the queues' depths; its
// Drain button drains one (as POST /api/workers/<id>/drain does), and it says what it could
// not do. With direct dispatch it says there are no workers.
func TestUIWorkersPage(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Dispatch = "queue" })
	ts.postWait(t, "/api/chains/testchains/hello_chain/HelloTask?wait=20s&name=workers", nil)
	b := newBrowser(t, ts)
	var id string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ws := apiWorkers(t, ts.url, &lockedBuffer{})
		for _, w := range ws {
			id = w.ID
		}
		if len(ws) == 1 && ws[id].Done >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the in-process worker did not list its done task: %+v", ws)
		}
	}
	p := b.get("/workers")
	for _, want := range []string{`data-worker="` + id + `"`, `class="status w-running"`, "<code>testchains</code>", ">Drain</button>", `hx-get="/ui/workers/table"`} {
		if !strings.Contains(p.body, want) {
			t.Errorf("workers page lacks %q:\n%s", want, p.body)
		}
	}
	csrf := b.csrf("/workers")
	drained := b.do(http.MethodPost, "/workers/"+id+"/drain", url.Values{"csrf": {csrf}})
	if drained.code != http.StatusSeeOther || drained.h.Get("Location") != "/workers?drained="+id {
		t.Fatalf("drain = %d %s", drained.code, drained.h.Get("Location"))
	}
	p = b.get(drained.h.Get("Location"))
	if !strings.Contains(p.body, "Drain asked of worker "+id+":") || strings.Contains(p.body, ">Drain</button>") || !regexp.MustCompile(`class="status w-drain(ing|ed)"`).MatchString(p.body) {
		t.Errorf("after the drain the page shows:\n%s", p.body)
	}
	if p := b.do(http.MethodPost, "/workers/nobody-1-x/drain", url.Values{"csrf": {csrf}}); p.code != http.StatusNotFound || !strings.Contains(p.body, `worker &#34;nobody-1-x&#34;: no such worker`) {
		t.Errorf("drain of an unknown worker = %d\n%s", p.code, p.body)
	}
	if p := b.do(http.MethodPost, "/workers/"+id+"/drain", nil); p.code != http.StatusForbidden {
		t.Errorf("drain without the CSRF token = %d, want 403", p.code)
	}

	direct := newBrowser(t, newTestServer(t, func(c *Config) { c.Dispatch = "direct" }))
	if p := direct.get("/workers"); p.code != 200 || !strings.Contains(p.body, "NECTAR_DISPATCH=direct") || strings.Contains(p.body, "hx-get") {
		t.Errorf("workers page with direct dispatch = %d\n%s", p.code, p.body)
	}
}

// While a backfill has intervals waiting to start, the schedules page says how many and offers
// to stop it (with the CSRF token only); once stopped, none wait.
func TestUIStopsABackfill(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.MaxRuns, c.MaxQueue = 1, 0 }) // an interval about every half second
	b := newBrowser(t, ts)
	if r := ts.post(t, "/api/schedules/"+dailyPath+"/backfill?from=2026-01-01&to=2026-03-31"); r.Code != http.StatusAccepted {
		t.Fatalf("backfill: %d %s", r.Code, r.Message)
	}
	p := b.get("/schedules")
	if !strings.Contains(p.body, "intervals waiting to start") || !strings.Contains(p.body, `action="/schedules/`+dailyPath+`/backfill/stop"`) {
		t.Fatalf("the schedules page shows no backfill waiting, or no way to stop it:\n%s", p.body)
	}
	token := b.csrf("/schedules")
	if r := b.do(http.MethodPost, "/schedules/"+dailyPath+"/backfill/stop", url.Values{}); r.code != http.StatusForbidden {
		t.Errorf("stop without csrf = %d, want 403", r.code)
	}
	if r := b.do(http.MethodPost, "/schedules/"+dailyPath+"/backfill/stop", url.Values{"csrf": {token}}); r.code != http.StatusSeeOther {
		t.Fatalf("stop = %d %s", r.code, r.body)
	}
	deadline := time.Now().Add(5 * time.Second)
	for strings.Contains(b.get("/schedules").body, "waiting to start") {
		if time.Now().After(deadline) {
			t.Fatal("5 s after the stop, the schedules page still shows intervals waiting to start")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
