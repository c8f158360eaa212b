package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"nectar/targets"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"nectar/plugins/plugintest"
	"nectar/server/catalog"
	"nectar/server/history/pgtest"
	"nectar/server/runs"
	"nectar/server/signing"
	"nectar/targets/miniotest"
	"nectar/targets/targettest"
)

var (
	pluginDir string
	minioSrv  *miniotest.Server
)

func TestMain(m *testing.M) {
	dir, err := plugintest.Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: cannot build the plugins these tests run:", err)
		os.Exit(1)
	}
	pluginDir = dir
	if minioSrv, err = miniotest.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: these tests need a real MinIO:", err)
		plugintest.Cleanup()
		os.Exit(1)
	}
	code := m.Run()
	pgtest.StopShared()
	minioSrv.Stop()
	plugintest.Cleanup()
	os.Exit(code)
}

type testServer struct {
	*Server
	url    string
	target string
	leaks  *leakCheck
	stop   func() // closes the server (once; the test's cleanup calls it too)
}

func newTestServer(t *testing.T, edit ...func(*Config)) *testServer {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return newTestServerLogging(t, logger, edit...)
}

// newTestServerLogging is newTestServer with the server's log going to logger. Every answer
// of the server passes through a leakCheck.
func newTestServerLogging(t *testing.T, logger *slog.Logger, edit ...func(*Config)) *testServer {
	t.Helper()
	return startTestServer(t, logger, catalog.Generated(), edit...)
}

// startTestServer serves cat. Schedules do not fire unless edit turns them on: the schedule
// tests count runs, and the others should not find any they did not start.
func startTestServer(t *testing.T, logger *slog.Logger, cat *catalog.Catalog, edit ...func(*Config)) *testServer {
	t.Helper()
	cfg := Defaults()
	cfg.Schedules = false
	cfg.Target = t.TempDir()
	cfg.PluginDir = pluginDir
	cfg.SigningKey = []byte(strings.Repeat("k", 32))
	// Tests count plugin processes; warm spares have a test of their own.
	cfg.WarmPlugins = false
	// make test runs this package once more with NECTAR_DISPATCH=direct: both paths pass it.
	if d := os.Getenv("NECTAR_DISPATCH"); d != "" {
		cfg.Dispatch = d
	}
	for _, e := range edit {
		e(&cfg)
	}
	if cfg.DatabaseURL == "" && strings.Contains(cfg.Target, "://") {
		// A remote store's default index is ./local_targets/.history.db: keep tests out of it.
		cfg.DatabaseURL = "sqlite:" + filepath.Join(t.TempDir(), "history.db")
	}
	srv, err := New(cfg, cat, logger)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	leaks := newLeakCheck(srv.Handler(), cfg)
	ts := httptest.NewServer(leaks)
	srv.SetPublicURL(ts.URL)
	srv.StartSchedules() // as Serve does once it listens
	stop := sync.OnceFunc(func() {
		ts.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		leaks.report(t)
	})
	t.Cleanup(stop)
	return &testServer{Server: srv, url: ts.URL, target: cfg.Target, leaks: leaks, stop: stop}
}

type answer struct {
	Code    int
	Status  int             `json:"status"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
	run     runDataView
}

// runDataView is runData with params decoded, for tests that rebuild a query.
type runDataView struct {
	runData
	Params map[string]string `json:"params"`
}

// waitRetired waits until the run of key has left memory (its POST?wait is answered a moment
// before): its status is then read from the store.
func (ts *testServer) waitRetired(t *testing.T, key string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, active := ts.Runs().Active(key); !active {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the run of %s is still active 10 s after its answer", key)
		}
	}
}

func (ts *testServer) do(t *testing.T, method, path string) answer {
	t.Helper()
	if !strings.HasPrefix(path, "http") {
		path = ts.url + path
	}
	req, err := http.NewRequest(method, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	a := answer{Code: resp.StatusCode}
	if err := json.Unmarshal(body, &a); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %v\n%s", method, path, err, body)
	}
	if a.Status != a.Code {
		t.Errorf("%s %s: envelope status %d, HTTP %d", method, path, a.Status, a.Code)
	}
	_ = json.Unmarshal(a.Data, &a.run)
	return a
}

func (ts *testServer) post(t *testing.T, path string) answer { return ts.do(t, http.MethodPost, path) }

var fetch = targettest.Fetch

// poll follows a status URL until the run is final.
func (ts *testServer) poll(t *testing.T, statusURL string) runDataView {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		a := ts.do(t, http.MethodGet, statusURL)
		if a.Code != http.StatusOK {
			t.Fatalf("status: %d %s", a.Code, a.Message)
		}
		if a.run.JobStatus != nil && a.run.JobStatus.Final() {
			return a.run
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("run at %s did not finish in 30s", statusURL)
	return runDataView{}
}

func (ts *testServer) exists(key string) bool {
	_, err := os.Stat(filepath.Join(ts.target, key))
	return err == nil
}

func TestHelloRunEndToEnd(t *testing.T) {
	ts := newTestServer(t)
	a := ts.post(t, "/api/chains/testchains/hello_chain/HelloTask?name=ada")
	if a.Code != http.StatusAccepted {
		t.Fatalf("POST = %d %s, want 202", a.Code, a.Message)
	}
	if a.run.StatusURL == "" || a.run.Key == "" || a.run.ExpiresIn != 600 {
		t.Fatalf("POST data = %+v, want status_url, key and expires_in 600", a.run)
	}
	wantKey := runs.Key("testchains", "hello_chain", "HelloTask", []byte(`{"name":"ada"}`))
	if a.run.Key != wantKey {
		t.Errorf("key = %s, want %s", a.run.Key, wantKey)
	}
	final := ts.poll(t, a.run.StatusURL)
	if *final.JobStatus != runs.Done {
		t.Fatalf("status = %s (%v), want DONE", *final.JobStatus, final.Error)
	}
	code, body := fetch(t, final.ResourceURL)
	if code != 200 || body != "hello ada\n" {
		t.Errorf("resource_url = %d %q, want 200 %q", code, body, "hello ada\n")
	}
	if code, body := fetch(t, final.ParamsURL); code != 200 || body != `{"name":"ada"}` {
		t.Errorf("params_url = %d %q", code, body)
	}
	if code, body := fetch(t, final.LogURL); code != 200 || !strings.Contains(body, "greeting") || !strings.Contains(body, "name=ada") {
		t.Errorf("log_url = %d %q, want the task's structured log line", code, body)
	}
	for _, f := range []string{"out", "log", "params", "run"} {
		if !ts.exists(wantKey + "/" + f) {
			t.Errorf("%s/%s missing from the store", wantKey, f)
		}
	}
	if final.StartedAt == nil || final.FinishedAt == nil || final.FinishedAt.Before(*final.StartedAt) {
		t.Errorf("started_at %v, finished_at %v", final.StartedAt, final.FinishedAt)
	}
}

func TestDefaultAndExplicitParamsShareAKey(t *testing.T) {
	ts := newTestServer(t)
	a := ts.post(t, "/api/chains/testchains/hello_chain/HelloTask?wait=10s")
	b := ts.post(t, "/api/chains/testchains/hello_chain/HelloTask?name=world&wait=10s")
	if a.run.Key != b.run.Key {
		t.Errorf("keys differ: %s and %s", a.run.Key, b.run.Key)
	}
	if b.Code != http.StatusOK || b.Message != "already done" {
		t.Errorf("second POST = %d %q, want 200 already done", b.Code, b.Message)
	}
}

func TestDoneKeyAnswersAtOnceWithoutAProcess(t *testing.T) {
	ts := newTestServer(t)
	first := ts.post(t, "/api/chains/testchains/hello_chain/HelloTask?name=idem&wait=10s")
	if first.Code != http.StatusOK || *first.run.JobStatus != runs.Done {
		t.Fatalf("first POST?wait = %d %v", first.Code, first.run.JobStatus)
	}
	launches := ts.Runs().Launches()
	again := ts.post(t, "/api/chains/testchains/hello_chain/HelloTask?name=idem")
	if again.Code != http.StatusOK || *again.run.JobStatus != runs.Done || again.run.ResourceURL == "" {
		t.Fatalf("repeat POST = %d %+v, want 200 DONE with resource_url", again.Code, again.run)
	}
	if got := ts.Runs().Launches(); got != launches {
		t.Errorf("repeat POST launched %d plugin processes, want 0", got-launches)
	}
	if _, body := fetch(t, again.run.ResourceURL); body != "hello idem\n" {
		t.Errorf("resource = %q", body)
	}
}

func TestWaitReturnsAcceptedWhenTheRunOutlastsIt(t *testing.T) {
	ts := newTestServer(t)
	a := ts.post(t, "/api/chains/testchains/faults_chain/SleepTask?duration=1s&wait=50ms")
	if a.Code != http.StatusAccepted {
		t.Fatalf("POST?wait=50ms of a 1s task = %d, want 202", a.Code)
	}
	if final := ts.poll(t, a.run.StatusURL); *final.JobStatus != runs.Done {
		t.Errorf("final = %s", *final.JobStatus)
	}
}

func TestDependencyRunsFirst(t *testing.T) {
	ts := newTestServer(t)
	a := ts.post(t, "/api/chains/testchains/hello_chain/UpperTask?name=bob&wait=10s")
	if a.Code != http.StatusOK || *a.run.JobStatus != runs.Done {
		t.Fatalf("UpperTask = %d %v %v", a.Code, a.run.JobStatus, a.run.Error)
	}
	if _, body := fetch(t, a.run.ResourceURL); body != "HELLO BOB\n" {
		t.Errorf("UpperTask out = %q", body)
	}
	if len(a.run.Tasks) != 2 {
		t.Fatalf("tasks = %+v, want UpperTask and HelloTask", a.run.Tasks)
	}
	helloKey := runs.Key("testchains", "hello_chain", "HelloTask", []byte(`{"name":"bob"}`))
	if !ts.exists(helloKey + "/out") {
		t.Errorf("HelloTask out missing at %s", helloKey)
	}
	// The dependency's own status URL works too.
	st := ts.do(t, http.MethodGet, ts.statusURL(helloKey))
	if st.Code != 200 || *st.run.JobStatus != runs.Done {
		t.Errorf("dependency status = %d %v", st.Code, st.run.JobStatus)
	}
}

func TestFanInRunsEveryLeafOnce(t *testing.T) {
	ts := newTestServer(t)
	a := ts.post(t, "/api/chains/testchains/fanin_chain/JoinTask?leaves=100&wait=60s")
	if a.Code != http.StatusOK || *a.run.JobStatus != runs.Done {
		t.Fatalf("JoinTask = %d %v %v", a.Code, a.run.JobStatus, a.run.Error)
	}
	if _, body := fetch(t, a.run.ResourceURL); body != "4950\n" {
		t.Errorf("sum = %q, want 4950", body)
	}
	if a.run.TaskCounts == nil || a.run.TaskCounts.Total != 101 || a.run.TaskCounts.Done != 101 || len(a.run.Tasks) != runs.DefaultTaskPage {
		t.Errorf("task_counts %+v, %d tasks listed; want 101 done, a page of %d", a.run.TaskCounts, len(a.run.Tasks), runs.DefaultTaskPage)
	}
}

func TestFailedChainResumesAtTheFailedStep(t *testing.T) {
	ts := newTestServer(t)
	gate := filepath.Join(t.TempDir(), "gate")
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	path := "/api/chains/testchains/faults_chain/StepFiveTask?wait=20s&gate=" + url.QueryEscape(gate)
	first := ts.post(t, path)
	if *first.run.JobStatus != runs.Failed || first.run.Error == nil || !strings.Contains(*first.run.Error, "StepThreeTask failed") {
		t.Fatalf("first run = %v %v, want FAILED at StepThreeTask", first.run.JobStatus, first.run.Error)
	}
	want := map[string]runs.Status{
		"StepFiveTask": runs.UpstreamFailed, "StepFourTask": runs.UpstreamFailed,
		"StepThreeTask": runs.Failed, "StepTwoTask": runs.Done, "StepOneTask": runs.Done,
	}
	for _, task := range first.run.Tasks {
		if task.Status != want[task.Task] {
			t.Errorf("first run: %s = %s, want %s", task.Task, task.Status, want[task.Task])
		}
		if (task.Status == runs.Done) != ts.exists(task.Key+"/out") {
			t.Errorf("first run: %s is %s but out exists = %v", task.Task, task.Status, !(task.Status == runs.Done))
		}
	}
	if err := os.Remove(gate); err != nil {
		t.Fatal(err)
	}
	second := ts.post(t, path)
	if *second.run.JobStatus != runs.Done {
		t.Fatalf("second run = %v %v, want DONE", second.run.JobStatus, second.run.Error)
	}
	ran := map[string]bool{}
	for _, task := range second.run.Tasks {
		ran[task.Task] = !task.Cached
	}
	wantRan := map[string]bool{"StepOneTask": false, "StepTwoTask": false, "StepThreeTask": true, "StepFourTask": true, "StepFiveTask": true}
	for task, w := range wantRan {
		if ran[task] != w {
			t.Errorf("second run: %s ran = %v, want %v", task, ran[task], w)
		}
	}
	// StepOne is not even listed: StepTwo's out made it unnecessary.
	if _, listed := ran["StepOneTask"]; listed {
		t.Errorf("second run lists StepOneTask; a cached StepTwoTask should cut the walk")
	}
	if _, body := fetch(t, second.run.ResourceURL); body != "12345\n" {
		t.Errorf("out = %q, want 12345", body)
	}
}

func TestConcurrentPostsJoinOneRun(t *testing.T) {
	ts := newTestServer(t)
	before := ts.Runs().Launches()
	const n = 16
	keys := make([]string, n)
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := ts.post(t, "/api/chains/testchains/faults_chain/SleepTask?duration=2s")
			keys[i], codes[i] = a.run.Key, a.Code
		}()
	}
	wg.Wait()
	for i := range n {
		if keys[i] != keys[0] || codes[i] != http.StatusAccepted {
			t.Errorf("POST %d = %d key %s, want 202 key %s", i, codes[i], keys[i], keys[0])
		}
	}
	r, ok := ts.Runs().Active(keys[0])
	if ok {
		<-r.Done()
	}
	if got := ts.Runs().Launches() - before; got != 1 {
		t.Errorf("%d concurrent POSTs launched %d processes, want 1", n, got)
	}
}

func TestFaultyTasksFailWithTheirCause(t *testing.T) {
	ts := newTestServer(t)
	tests := []struct {
		task      string
		wantError string
		wantLog   []string
	}{
		{"FailTask", "FailTask failed: failed on purpose", []string{"about to fail", "task failed: failed on purpose", "FailTask: a plain print reaches the log too"}},
		{"PanicTask", "FailTask", nil},
		{"ExitTask", "plugin process exited (exit status 3)", []string{"ExitTask: exiting with code 3", "--- plugin process exited (exit status 3) while the task was running ---"}},
	}
	tests[1].wantError = "PanicTask failed: panic: panicked on purpose"
	tests[1].wantLog = []string{"panic: panicked on purpose", "goroutine", "faults_chain.go"}
	for _, tt := range tests {
		t.Run(tt.task, func(t *testing.T) {
			a := ts.post(t, "/api/chains/testchains/faults_chain/"+tt.task+"?wait=20s")
			if a.Code != 200 || *a.run.JobStatus != runs.Failed {
				t.Fatalf("POST = %d %v, want 200 FAILED", a.Code, a.run.JobStatus)
			}
			if a.run.Error == nil || !strings.Contains(*a.run.Error, tt.wantError) {
				t.Errorf("error = %v, want it to contain %q", a.run.Error, tt.wantError)
			}
			if a.run.ResourceURL != "" || ts.exists(a.run.Key+"/out") {
				t.Errorf("a failed task has an out")
			}
			_, log := fetch(t, a.run.LogURL)
			for _, w := range tt.wantLog {
				if !strings.Contains(log, w) {
					t.Errorf("log lacks %q:\n%s", w, log)
				}
			}
		})
	}
	// The server keeps serving after every fault.
	if a := ts.post(t, "/api/chains/testchains/hello_chain/HelloTask?name=after&wait=10s"); *a.run.JobStatus != runs.Done {
		t.Errorf("run after faults = %v", a.run.JobStatus)
	}
	// No partial file is left, in the staging folder (where the output file of the process
	// that waits for the next run stays) or beside any key.
	left, _ := os.ReadDir(filepath.Join(ts.target, ".tmp"))
	for _, e := range left {
		if !strings.HasPrefix(e.Name(), "plugin-output-") {
			t.Errorf("staging folder holds %s", e.Name())
		}
	}
	filepath.WalkDir(ts.target, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), targets.StagePrefix) {
			t.Errorf("staged file left: %s", p)
		}
		return nil
	})
}

func TestErrorsNameWhatWasWrong(t *testing.T) {
	ts := newTestServer(t)
	key := runs.Key("testchains", "hello_chain", "HelloTask", []byte(`{"name":"never-run"}`))
	expired := func() string {
		exp, sig := ts.signer.Sign(signing.PurposeStatus, key+"/out", -time.Minute)
		return "/api/chainstatus?" + url.Values{"chain": {key + "/out"}, "expires": {exp}, "signature": {sig}}.Encode()
	}()
	badPath := func() string {
		chain := "chains/../../etc/passwd/out"
		exp, sig := ts.signer.Sign(signing.PurposeStatus, chain, time.Minute)
		return "/api/chainstatus?" + url.Values{"chain": {chain}, "expires": {exp}, "signature": {sig}}.Encode()
	}()
	downloadSig := func() string {
		exp, sig := ts.signer.Sign(signing.PurposeDownload, key+"/out", time.Minute)
		return "/api/chainstatus?" + url.Values{"chain": {key + "/out"}, "expires": {exp}, "signature": {sig}}.Encode()
	}()
	tests := []struct {
		method, path string
		code         int
		want         string
	}{
		{"POST", "/api/chains/testchains/fanin_chain/JoinTask?leaves=many", 400, `parameter "leaves": "many" is not an integer`},
		{"POST", "/api/chains/testchains/hello_chain/HelloTask?nmae=x", 400, `parameter "nmae": is not a parameter of HelloTask (it takes: name, wait, force)`},
		{"POST", "/api/chains/testchains/hello_chain/HelloTask?name=a&name=b", 400, `parameter "name": is given 2 times`},
		{"POST", "/api/chains/testchains/faults_chain/SleepTask?duration=soon", 400, `parameter "duration": "soon" is not a duration`},
		{"POST", "/api/chains/testchains/hello_chain/HelloTask?wait=forever", 400, `parameter "wait"`},
		{"POST", "/api/chains/nope/hello_chain/HelloTask", 404, `unknown chain type "nope"`},
		{"POST", "/api/chains/testchains/nope_chain/HelloTask", 404, `unknown chain "nope_chain"`},
		{"POST", "/api/chains/testchains/hello_chain/NopeTask", 404, `unknown task "NopeTask"`},
		{"GET", "/api/chains/nope", 404, `unknown chain type "nope"`},
		{"GET", "/api/nothing", 404, "no such endpoint"},
		{"GET", "/api/chainstatus", 400, `parameter "chain": is required`},
		{"GET", "/api/chainstatus?chain=" + key + "/out&expires=9999999999&signature=00", 403, "bad signature"},
		{"GET", expired, 403, "signature expired"},
		{"GET", downloadSig, 403, "bad signature"},
		{"GET", badPath, 400, `parameter "chain"`},
		{"GET", ts.statusURL(key), 404, "no run, record or output for key " + key},
		{"GET", "/api/download/" + key + "/out?expires=9999999999&signature=" + strings.Repeat("0", 64), 403, "bad signature"},
		{"GET", strings.TrimPrefix(ts.downloadURL(key+"/out", time.Minute), ts.url), 404, "no such object"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			a := ts.do(t, tt.method, tt.path)
			if a.Code != tt.code || !strings.Contains(a.Message, tt.want) {
				t.Errorf("%s %s = %d %q, want %d containing %q", tt.method, tt.path, a.Code, a.Message, tt.code, tt.want)
			}
		})
	}
	// An unknown key answers job_status null, as DESIGN.md says.
	a := ts.do(t, "GET", ts.statusURL(key))
	if !strings.Contains(string(a.Data), `"job_status":null`) {
		t.Errorf("unknown key data = %s, want job_status null", a.Data)
	}
}

func TestInternalErrorsHideTheirText(t *testing.T) {
	ts := newTestServer(t)
	rec := httptest.NewRecorder()
	c := ts.echo.NewContext(httptest.NewRequest("GET", "/x", nil), rec)
	ts.errorHandler(fmt.Errorf("open /secret/path: permission denied"), c)
	if rec.Code != 500 || strings.Contains(rec.Body.String(), "secret") || !strings.Contains(rec.Body.String(), `"internal error (request id `) {
		t.Errorf("500 answer = %d %s", rec.Code, rec.Body)
	}
}

func TestCatalog(t *testing.T) {
	ts := newTestServer(t)
	tests := []struct {
		path string
		want []string
	}{
		{"/api/chains", []string{`"type":"testchains"`, `"hello_chain"`, `"faults_chain"`}},
		{"/api/chains/testchains", []string{`"chain":"hello_chain"`, `"HelloTask"`, `"UpperTask"`}},
		{"/api/chains/testchains/hello_chain", []string{`"task":"HelloTask"`, `"default":"world"`}},
		{"/api/chains/testchains/faults_chain/SleepTask", []string{`"name":"duration"`, `"type":"duration"`, `"default":"1s"`, `"url":"/api/chains/testchains/faults_chain/SleepTask"`}},
	}
	for _, tt := range tests {
		a := ts.do(t, "GET", tt.path)
		if a.Code != 200 {
			t.Errorf("GET %s = %d", tt.path, a.Code)
		}
		for _, w := range tt.want {
			if !strings.Contains(string(a.Data), w) {
				t.Errorf("GET %s: data lacks %s:\n%s", tt.path, w, a.Data)
			}
		}
	}
}

// pluginPIDs lists the running processes of the test plugin binary.
func pluginPIDs(t *testing.T) []int {
	t.Helper()
	return pluginPIDsOf(filepath.Join(pluginDir, "testchains"))
}

// pluginPIDsOf lists the running processes of the binary bin.
func pluginPIDsOf(bin string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && exe == bin {
			pids = append(pids, pid)
		}
	}
	return pids
}

func TestSIGKILLedPluginFailsTheRun(t *testing.T) {
	ts := newTestServer(t)
	a := ts.post(t, "/api/chains/testchains/faults_chain/SleepTask?duration=30s")
	// In the plugin: it has opened the task's staged out (a task is RUNNING from the moment
	// its lane takes it, which may be before its process has started). A run this small has
	// its plugin fsync the out, which is staged in the store's own folder (an old one: see
	// commit.go), not beside the key. (SleepTask logs nothing: it has no log file.)
	stagedOuts := filepath.Join(ts.target, ".tmp", "task-*-"+runs.OutName)
	var pids []int
	var m []string
	for deadline := time.Now().Add(10 * time.Second); len(pids) == 0 && time.Now().Before(deadline); {
		if m, _ = filepath.Glob(stagedOuts); len(m) > 0 {
			pids = pluginPIDs(t)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(pids) != 1 {
		t.Fatalf("found plugin processes %v, want exactly one", pids)
	}
	if len(m) != 1 {
		t.Errorf("the running task's out is staged at %v; want one file matching %s", m, stagedOuts)
	}
	if m, _ = filepath.Glob(filepath.Join(ts.target, filepath.FromSlash(a.run.Key), targets.StagePrefix+"*"+runs.OutName)); len(m) > 0 {
		t.Errorf("the running task's out is staged beside the key: %v", m)
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	final := ts.poll(t, a.run.StatusURL)
	if m, _ = filepath.Glob(stagedOuts); len(m) > 0 {
		t.Errorf("the killed task's staged out is left: %v", m)
	}
	if *final.JobStatus != runs.Failed || final.Error == nil || !strings.Contains(*final.Error, "signal: killed") {
		t.Errorf("after kill -9: %v %v, want FAILED with signal: killed", *final.JobStatus, strOr(final.Error))
	}
	if ts.exists(a.run.Key + "/out") {
		t.Errorf("killed task has an out")
	}
	if b := ts.post(t, "/api/chains/testchains/hello_chain/HelloTask?name=survivor&wait=10s"); *b.run.JobStatus != runs.Done {
		t.Errorf("server did not keep serving: %v", b.run.JobStatus)
	}
}

func TestLocalSigningKeySurvivesRestart(t *testing.T) {
	target := t.TempDir()
	first := newTestServer(t, func(c *Config) { c.Target, c.SigningKey = target, nil })
	a := first.post(t, "/api/chains/testchains/hello_chain/HelloTask?name=restart&wait=10s")
	second := newTestServer(t, func(c *Config) { c.Target, c.SigningKey = target, nil })
	statusPath := strings.TrimPrefix(a.run.StatusURL, first.url)
	if st := second.do(t, "GET", statusPath); st.Code != 200 || *st.run.JobStatus != runs.Done {
		t.Errorf("status URL from before the restart = %d %s", st.Code, st.Message)
	}
	fi, err := os.Stat(filepath.Join(target, ".signing-key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("signing key file: %v, mode %v, want 0600", err, fi.Mode().Perm())
	}
}

// strOr is *s, or "<nil>".
func strOr(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}
