package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// leakCheck wraps the handler of every test server (newTestServer), so the whole server test
// suite checks what its answers show: the body of every error answer (status >= 400), and the
// "error" fields (run and task errors) of every other JSON answer, must not name the store's
// folder, endpoint, bucket or credentials, the server's staging folder or its plugin folder.
// Every answer must also carry an X-Request-Id. What it finds fails the test that started the
// server, when that test ends.
type leakCheck struct {
	next    http.Handler
	secrets []string

	mu       sync.Mutex
	problems []string
	checked  int // error answers seen
}

func newLeakCheck(next http.Handler, cfg Config) *leakCheck {
	return &leakCheck{next: next, secrets: storeSecrets(cfg)}
}

// storeSecrets lists what only the operator may see of cfg's store.
func storeSecrets(cfg Config) []string {
	var out []string
	add := func(s string) {
		if len(s) >= 4 {
			out = append(out, s)
		}
	}
	add(pluginDir)
	if dir, err := filepath.Abs(cfg.PluginDir); err == nil {
		add(dir)
	}
	add(filepath.Join(os.TempDir(), "nectar-spool-")) // the staging folder of bucket stores
	scheme, _, isURL := strings.Cut(cfg.Target, "://")
	if !isURL {
		abs, _ := filepath.Abs(cfg.Target)
		add(abs)
	} else if u, err := url.Parse(cfg.Target); err == nil {
		switch scheme {
		case "s3":
			add(u.Host) // the bucket
			if ep, err := url.Parse(u.Query().Get("endpoint")); err == nil {
				add(ep.Host)
			}
		case "minio":
			add(u.Host)
			bucket, _, _ := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
			add(bucket)
		}
	}
	for _, k := range []string{"MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} {
		if cfg.Getenv != nil {
			add(cfg.Getenv(k))
		}
		add(os.Getenv(k))
	}
	return out
}

func (l *leakCheck) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &answerRecorder{ResponseWriter: w}
	l.next.ServeHTTP(rec, r)
	var problems []string
	if w.Header().Get("X-Request-Id") == "" {
		problems = append(problems, fmt.Sprintf("%s %s answered %d without X-Request-Id", r.Method, clip(r.URL.Path), rec.code))
	}
	var shown string
	switch {
	case rec.code >= 400:
		shown = rec.body.String()
	case rec.json:
		shown = strings.Join(errorFields(rec.body.Bytes()), "\n")
	}
	for _, s := range l.secrets {
		if strings.Contains(shown, s) {
			problems = append(problems, fmt.Sprintf("%s %s answered %d showing %q:\n%s", r.Method, clip(r.URL.Path), rec.code, s, clip(shown)))
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if rec.code >= 400 {
		l.checked++
	}
	l.problems = append(l.problems, problems...)
}

// report fails t with every leak seen; it runs once the server has stopped.
func (l *leakCheck) report(t testing.TB) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.problems {
		t.Errorf("leak check: %s", p)
	}
}

// errorAnswers is how many error answers the check has seen.
func (l *leakCheck) errorAnswers() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.checked
}

// errorFields collects the string values of every "error" key in a JSON document.
func errorFields(body []byte) []string {
	var doc any
	if json.Unmarshal(body, &doc) != nil {
		return nil
	}
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && k == "error" {
					out = append(out, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(doc)
	return out
}

// answerRecorder keeps what the leak check reads: the status, and the body of JSON and error
// answers (up to 1 MiB; downloads and logs pass through untouched).
type answerRecorder struct {
	http.ResponseWriter
	code int
	json bool
	body bytes.Buffer
}

func (a *answerRecorder) WriteHeader(code int) {
	if a.code == 0 {
		a.code = code
		a.json = strings.HasPrefix(a.Header().Get("Content-Type"), "application/json")
	}
	a.ResponseWriter.WriteHeader(code)
}

func (a *answerRecorder) Write(b []byte) (int, error) {
	if a.code == 0 {
		a.WriteHeader(http.StatusOK)
	}
	if (a.json || a.code >= 400) && a.body.Len() < 1<<20 {
		a.body.Write(b)
	}
	return a.ResponseWriter.Write(b)
}

// Unwrap and Flush keep streaming answers (a followed log) working through the recorder.
func (a *answerRecorder) Unwrap() http.ResponseWriter { return a.ResponseWriter }

func (a *answerRecorder) Flush() { _ = http.NewResponseController(a.ResponseWriter).Flush() }
