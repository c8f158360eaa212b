package server

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"nectar/server/runs"
	"nectar/server/signing"
	"nectar/targets"
)

// serve sends req through the echo app itself (routing, middleware, the error handler).
func (ts *testServer) serve(req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	ts.echo.ServeHTTP(rec, req)
	return rec
}

type envelopeView struct {
	Status  int             `json:"status"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}

// Every condition of the error table, each from a real handler where one produces it, else
// from a route that returns the error: the status, the envelope, Retry-After, the request id,
// and for a 5xx a fixed message that says nothing of the error's text.
func TestErrorTable(t *testing.T) {
	ts := newTestServer(t)
	key := runs.Key("testchains", "hello_chain", "HelloTask", []byte(`{"name":"never-run"}`))
	// What only the server log may show: a path in the store, an OS error's words.
	secret := filepath.Join(ts.target, ".tmp", "put-123")
	injected := map[string]func() error{
		"store": func() error {
			return fmt.Errorf("looking for the out of %s: %w", key, targets.Unavailable(&fs.PathError{Op: "stat", Path: secret, Err: syscall.EIO}))
		},
		"queue":    func() error { return fmt.Errorf("%w (3 runs waiting)", runs.ErrQueueFull) },
		"draining": func() error { return runs.ErrDraining },
		"token":    func() error { return newError(ErrUnauthorized, "the bearer token is not valid") },
		"unknown":  func() error { return fmt.Errorf("open %s: %w", secret, fs.ErrPermission) },
		"panic":    func() error { panic("open " + secret + ": input/output error") },
	}
	for name, f := range injected {
		ts.echo.GET("/test/fail/"+name, func(echo.Context) error { return f() })
	}
	signed := func(purpose, path string, ttl time.Duration) string {
		exp, sig := ts.signer.Sign(purpose, path, ttl)
		return url.Values{"expires": {exp}, "signature": {sig}}.Encode()
	}
	get := func(target string) *http.Request { return httptest.NewRequest(http.MethodGet, target, nil) }
	tests := []struct {
		name  string
		req   *http.Request
		code  int
		msg   string // 4xx: the message contains it; 5xx: the message is exactly it and the request id
		retry bool
	}{
		{"bad parameter", httptest.NewRequest("POST", "/api/chains/testchains/fanin_chain/JoinTask?leaves=many", nil), 400, `parameter "leaves": "many" is not an integer`, false},
		{"bad key", get("/api/download/chains/../x?" + signed(signing.PurposeDownload, "chains/../x", time.Minute)), 400, `download path "chains/../x" is not a task's file or a published artifact`, false},
		{"no token", get("/test/fail/token"), 401, "the bearer token is not valid", false},
		{"bad signature", get("/api/chainstatus?chain=" + key + "/out&expires=9999999999&signature=00"), 403, "bad signature", false},
		{"expired signature", get("/api/chainstatus?chain=" + key + "/out&" + signed(signing.PurposeStatus, key+"/out", -time.Minute)), 403, "signature expired", false},
		{"unknown key", get("/api/chainstatus?chain=" + key + "/out&" + signed(signing.PurposeStatus, key+"/out", time.Minute)), 404, "no run, record or output for key " + key, false},
		{"no run to cancel", httptest.NewRequest("DELETE", "/api/chains/testchains/hello_chain/HelloTask?name=never-run", nil), 404, "no run in progress for this key: " + key, false},
		{"unknown task", httptest.NewRequest("POST", "/api/chains/testchains/hello_chain/NopeTask", nil), 404, `unknown task "NopeTask" in testchains/hello_chain`, false},
		{"unknown chain type", get("/api/chains/nope"), 404, `unknown chain type "nope"`, false},
		{"not found", get("/api/download/" + key + "/out?" + signed(signing.PurposeDownload, key+"/out", time.Minute)), 404, key + "/out: no such object", false},
		{"unknown endpoint", get("/api/nothing"), 404, "no such endpoint: GET /api/nothing", false},
		{"method not allowed", httptest.NewRequest("PUT", "/api/chains", nil), 405, "/api/chains does not take the method PUT; it takes OPTIONS, GET", false},
		{"too large", httptest.NewRequest("POST", "/api/chains/testchains/hello_chain/HelloTask", strings.NewReader(strings.Repeat("x", 2<<20))), 413, "the request body is over 1 MB", false},
		{"queue full", get("/test/fail/queue"), 429, "run queue is full (3 runs waiting)", true},
		{"store unavailable", get("/test/fail/store"), 503, "target store unavailable", false},
		{"draining", get("/test/fail/draining"), 503, "server is shutting down", true},
		{"unknown error", get("/test/fail/unknown"), 500, "internal error", false},
		{"panic", get("/test/fail/panic"), 500, "internal error", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := ts.serve(tt.req)
			var env envelopeView
			if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil {
				t.Fatalf("answer is not the JSON envelope: %v\n%s", err, rec.Body)
			}
			id := rec.Header().Get("X-Request-Id")
			if rec.Code != tt.code || env.Status != tt.code {
				t.Errorf("%s %s = HTTP %d, envelope status %d, want %d", tt.req.Method, tt.req.URL.Path, rec.Code, env.Status, tt.code)
			}
			if id == "" {
				t.Errorf("no X-Request-Id")
			}
			if got := rec.Header().Get("Retry-After"); (got == "1") != tt.retry {
				t.Errorf("Retry-After = %q, want it set: %v", got, tt.retry)
			}
			if tt.code < 500 {
				if !strings.Contains(env.Message, tt.msg) {
					t.Errorf("message = %q, want it to contain %q", env.Message, tt.msg)
				}
				return
			}
			if want := tt.msg + " (request id " + id + ")"; env.Message != want {
				t.Errorf("message = %q, want %q", env.Message, want)
			}
			var data struct {
				RequestID string `json:"request_id"`
			}
			if json.Unmarshal(env.Data, &data); data.RequestID != id {
				t.Errorf("data = %s, want request_id %s", env.Data, id)
			}
			for _, detail := range []string{secret, ts.target, "input/output error", "permission denied", key} {
				if strings.Contains(rec.Body.String(), detail) {
					t.Errorf("a %d answer shows %q: %s", tt.code, detail, rec.Body)
				}
			}
		})
	}
}

// A 5xx answer's request id leads to the log line that holds the detail.
func TestServerErrorsAreLoggedWithTheirRequestID(t *testing.T) {
	var logs strings.Builder
	var mu sync.Mutex
	ts := newTestServer(t)
	ts.log = slogTo(&mu, &logs)
	ts.echo.GET("/test/fail", func(echo.Context) error {
		return fmt.Errorf("reading: %w", targets.Unavailable(fmt.Errorf("dial tcp 10.1.2.3:9000: connection refused")))
	})
	rec := ts.serve(httptest.NewRequest("GET", "/test/fail", nil))
	id := rec.Header().Get("X-Request-Id")
	mu.Lock()
	defer mu.Unlock()
	if rec.Code != 503 || strings.Contains(rec.Body.String(), "10.1.2.3") {
		t.Errorf("answer = %d %s, want a 503 without the cause", rec.Code, rec.Body)
	}
	if !regexp.MustCompile(`level=ERROR .*request_id=` + id + `.*10\.1\.2\.3:9000: connection refused`).MatchString(logs.String()) {
		t.Errorf("the log has no error line with request_id=%s and the cause:\n%s", id, logs.String())
	}
}

func TestRequestIDs(t *testing.T) {
	ts := newTestServer(t)
	idOf := func(sent string) string {
		req := httptest.NewRequest("GET", "/healthz", nil)
		if sent != "" {
			req.Header.Set("X-Request-Id", sent)
		}
		return ts.serve(req).Header().Get("X-Request-Id")
	}
	a, b := idOf(""), idOf("")
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(a) || a == b {
		t.Errorf("generated ids %q and %q, want two different 16-hex-digit ids", a, b)
	}
	if got := idOf("edge-42.a_B"); got != "edge-42.a_B" {
		t.Errorf("a plain incoming id became %q, want it kept", got)
	}
	for _, sent := range []string{strings.Repeat("a", 65), "x\" onload=1", "id with spaces", "ünïcode"} {
		if got := idOf(sent); got == sent || !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(got) {
			t.Errorf("incoming id %q became %q, want a new one", sent, got)
		}
	}
}

// What a client sent is quoted up to 200 bytes: a 60 KB path or value comes back as a short
// message that says how long it was.
func TestLongInputIsNotEchoed(t *testing.T) {
	ts := newTestServer(t)
	long := strings.Repeat("x", 60<<10)
	signedChain := func() string {
		exp, sig := ts.signer.Sign(signing.PurposeStatus, long, time.Minute)
		return url.Values{"chain": {long}, "expires": {exp}, "signature": {sig}}.Encode()
	}()
	tests := []struct {
		method, target string
		code           int
	}{
		{"GET", "/api/" + long, 404},
		{"GET", "/api/chains/" + long, 404},
		{"POST", "/api/chains/testchains/" + long + "/HelloTask", 404},
		{"POST", "/api/chains/testchains/hello_chain/" + long, 404},
		{"GET", "/api/download/chains/" + long + "?expires=1&signature=00", 403},
		{"GET", "/api/chainstatus?chain=" + long + "&expires=1&signature=00", 403},
		{"GET", "/api/chainstatus?" + signedChain, 400},
		{"GET", "/api/chainlog?task=" + long + "&expires=1&signature=00", 403},
		{"POST", "/api/chains/testchains/fanin_chain/JoinTask?leaves=" + long, 400},
		{"POST", "/api/chains/testchains/hello_chain/HelloTask?" + long + "=1", 400},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %s", tt.method, clip(tt.target)), func(t *testing.T) {
			rec := ts.serve(httptest.NewRequest(tt.method, tt.target, nil))
			var env envelopeView
			if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil {
				t.Fatal(err)
			}
			if rec.Code != tt.code || len(env.Message) >= 1024 || !regexp.MustCompile(`x…\(6\d{4} bytes\)`).MatchString(env.Message) {
				t.Errorf("= %d, %d-byte message %q, want %d and at most 200 bytes of the input with its length", rec.Code, len(env.Message), clip(env.Message), tt.code)
			}
		})
	}
}

// Many POSTs of one key before, while and after its run ends: every answer's code, message and
// job_status agree (a joiner that arrives as the run ends is told how it ended).
func TestConcurrentJoinersAreToldTheFinalStatus(t *testing.T) {
	ts := newTestServer(t)
	path := fmt.Sprintf("%s/api/chains/testchains/hello_chain/HelloTask?name=joiners-%d", ts.url, time.Now().UnixNano())
	const n = 200
	var wg sync.WaitGroup
	answers := make([]answer, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 2 * time.Millisecond) // spread over the run's life and end
			answers[i] = ts.post(t, path)
		}()
	}
	wg.Wait()
	if r, ok := ts.Runs().Active(answers[0].run.Key); ok {
		<-r.Done()
	}
	counts := map[string]int{}
	for _, a := range answers {
		st := runs.Status("null")
		if a.run.JobStatus != nil {
			st = *a.run.JobStatus
		}
		counts[fmt.Sprintf("%d %s %q", a.Code, st, a.Message)]++
		ok := false
		switch a.Code {
		case http.StatusAccepted:
			ok = (st == runs.Pending || st == runs.Running) &&
				(a.Message == "run started" || a.Message == "joined the run already in progress" || a.Message == "joined the run already waiting to start")
		case http.StatusOK:
			ok = st.Final() && (a.Message == "run "+strings.ToLower(string(st)) || a.Message == "already done" && st == runs.Done)
		}
		if !ok {
			t.Errorf("answer %d %q with job_status %s: code, message and status disagree", a.Code, a.Message, st)
		}
	}
	t.Logf("answers: %v", counts)
	if got := ts.Runs().Launches(); got != 1 {
		t.Errorf("%d POSTs of one key launched %d processes, want 1", n, got)
	}
}

// slogTo is a logger writing text lines into b (guarded by mu).
func slogTo(mu *sync.Mutex, b *strings.Builder) *slog.Logger {
	return slog.New(slog.NewTextHandler(lockedWriter{mu, b}, nil))
}
