package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"nectar/server/catalog"
	"nectar/server/runs"
)

// waitRunning polls a status URL until the run's first task is RUNNING.
func (ts *testServer) waitRunning(t *testing.T, statusURL string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		st := ts.do(t, "GET", statusURL)
		if st.run.JobStatus != nil && *st.run.JobStatus == runs.Running && len(st.run.Tasks) > 0 && st.run.Tasks[0].Status == runs.Running {
			return
		}
	}
	t.Fatalf("run at %s never reached RUNNING", statusURL)
}

// waitPluginProcesses waits up to 10 s for exactly n processes of the test chains' plugin.
func waitPluginProcesses(t *testing.T, n int) {
	t.Helper()
	pids := pluginPIDs(t)
	for deadline := time.Now().Add(10 * time.Second); len(pids) != n && time.Now().Before(deadline); pids = pluginPIDs(t) {
		time.Sleep(10 * time.Millisecond)
	}
	if len(pids) != n {
		t.Fatalf("plugin processes %v, want %d", pids, n)
	}
}

func TestDeleteCancelsWithinASecond(t *testing.T) {
	ts := newTestServer(t)
	tests := []struct {
		name   string
		delete func(a answer) string
	}{
		{"status URL", func(a answer) string { return a.run.StatusURL }},
		{"task path and parameters", func(a answer) string {
			return "/api/chains/testchains/faults_chain/SleepTask?duration=" + a.run.Params["duration"]
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := fmt.Sprintf("%ds", 30+i)
			a := ts.post(t, "/api/chains/testchains/faults_chain/SleepTask?duration="+d)
			ts.waitRunning(t, a.run.StatusURL)
			// A task is RUNNING from the moment its lane takes it, which may be before its
			// process has started (or before the last test's plugin is gone).
			waitPluginProcesses(t, 1)
			start := time.Now()
			c := ts.do(t, "DELETE", tt.delete(a))
			if took := time.Since(start); took > time.Second {
				t.Errorf("DELETE took %v, want under a second", took)
			}
			if c.Code != 200 || *c.run.JobStatus != runs.Cancelled || c.run.Error == nil || !strings.Contains(*c.run.Error, "cancelled by DELETE") {
				t.Errorf("DELETE = %d %v %v, want 200 CANCELLED with the reason", c.Code, c.run.JobStatus, c.run.Error)
			}
			if pids := pluginPIDs(t); len(pids) != 0 {
				t.Errorf("plugin processes %v still alive after the cancel", pids)
			}
			if ts.exists(a.run.Key + "/out") {
				t.Errorf("a cancelled run left an out")
			}
			if st := ts.do(t, "GET", a.run.StatusURL); *st.run.JobStatus != runs.Cancelled {
				t.Errorf("stored status = %v, want CANCELLED", st.run.JobStatus)
			}
		})
	}
	if a := ts.do(t, "DELETE", "/api/chains/testchains/faults_chain/SleepTask?duration=99s"); a.Code != http.StatusNotFound {
		t.Errorf("DELETE of a key with no run = %d, want 404", a.Code)
	}
}

func TestForceRerunsOnlyTheNamedTask(t *testing.T) {
	ts := newTestServer(t)
	first := ts.post(t, "/api/chains/testchains/hello_chain/UpperTask?name=force&wait=10s")
	if *first.run.JobStatus != runs.Done {
		t.Fatal(first.run.Error)
	}
	launches := ts.Runs().Launches()
	again := ts.post(t, "/api/chains/testchains/hello_chain/UpperTask?name=force&force=true&wait=10s")
	if again.Code != 200 || *again.run.JobStatus != runs.Done || ts.Runs().Launches() != launches+1 {
		t.Fatalf("forced POST = %d %v, launches +%d", again.Code, again.run.JobStatus, ts.Runs().Launches()-launches)
	}
	for _, task := range again.run.Tasks {
		wantCached := task.Task == "HelloTask"
		if task.Cached != wantCached {
			t.Errorf("forced run: %s cached = %v, want %v", task.Task, task.Cached, wantCached)
		}
	}
	if bad := ts.post(t, "/api/chains/testchains/hello_chain/UpperTask?force=perhaps"); bad.Code != 400 || !strings.Contains(bad.Message, `parameter "force"`) {
		t.Errorf("force=perhaps = %d %q", bad.Code, bad.Message)
	}
}

func TestTokensGuardPostAndDelete(t *testing.T) {
	token := strings.Repeat("t", 24)
	ts := newTestServer(t, func(c *Config) { c.APITokens = []string{token} })
	do := func(method, path, auth string) answer {
		req, _ := http.NewRequest(method, ts.url+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return answer{Code: resp.StatusCode, Message: resp.Header.Get("WWW-Authenticate")}
	}
	tests := []struct {
		method, path, auth string
		code               int
	}{
		{"POST", "/api/chains/testchains/hello_chain/HelloTask?wait=10s", "", 401},
		{"POST", "/api/chains/testchains/hello_chain/HelloTask?wait=10s", "Bearer " + strings.Repeat("x", 24), 401},
		{"POST", "/api/chains/testchains/hello_chain/HelloTask?wait=10s", "Basic " + token, 401},
		{"DELETE", "/api/chains/testchains/hello_chain/HelloTask", "", 401},
		{"POST", "/api/chains/nope/x/YTask", "", 401}, // no probing the catalog without a token
		{"POST", "/api/chains/testchains/hello_chain/HelloTask?wait=10s", "Bearer " + token, 200},
		{"GET", "/api/chains", "", 200},
	}
	for _, tt := range tests {
		if a := do(tt.method, tt.path, tt.auth); a.Code != tt.code {
			t.Errorf("%s %s with %q = %d, want %d", tt.method, tt.path, tt.auth, a.Code, tt.code)
		} else if tt.code == 401 && !strings.HasPrefix(a.Message, "Bearer") {
			t.Errorf("401 without WWW-Authenticate: Bearer")
		}
	}
	// Status URLs stay capabilities: no token needed.
	key := runs.Key("testchains", "hello_chain", "HelloTask", []byte(`{"name":"world"}`))
	if a := do("GET", strings.TrimPrefix(ts.statusURL(key), ts.url), ""); a.Code != 200 {
		t.Errorf("status URL without a token = %d, want 200", a.Code)
	}
}

func TestFullQueueAnswers429(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.MaxRuns, c.MaxQueue = 1, 1 })
	a := ts.post(t, "/api/chains/testchains/faults_chain/SleepTask?duration=5s") // runs
	ts.waitRunning(t, a.run.StatusURL)
	b := ts.post(t, "/api/chains/testchains/faults_chain/SleepTask?duration=5.1s") // waits
	if a.Code != 202 || b.Code != 202 || *b.run.JobStatus != runs.Pending {
		t.Fatalf("first two POSTs = %d, %d %v", a.Code, b.Code, b.run.JobStatus)
	}
	resp, err := http.Post(ts.url+"/api/chains/testchains/faults_chain/SleepTask?duration=5.2s", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("third POST = %d Retry-After %q, want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// Joining a queued key is not a new run: it is accepted.
	if j := ts.post(t, "/api/chains/testchains/faults_chain/SleepTask?duration=5.1s"); j.Code != 202 {
		t.Errorf("joining a queued run = %d, want 202", j.Code)
	}
	if d := ts.Runs().QueueDepth(); d != 1 {
		t.Errorf("queue depth = %d, want 1", d)
	}
}

func TestTwoHundredConcurrentPostsExecuteOnce(t *testing.T) {
	ts := newTestServer(t)
	const n = 200
	var wg sync.WaitGroup
	codes := make(chan int, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Post(ts.url+"/api/chains/testchains/faults_chain/SleepTask?duration=500ms&wait=20s", "", nil)
			if err != nil {
				codes <- 0
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Errorf("a POST answered %d", c)
			break
		}
	}
	if got := ts.Runs().Launches(); got != 1 {
		t.Errorf("%d concurrent POSTs launched %d processes, want 1", n, got)
	}
}

func TestGracefulShutdown(t *testing.T) {
	ts := newTestServer(t)
	short := ts.post(t, "/api/chains/testchains/faults_chain/SleepTask?duration=300ms")
	long := ts.post(t, "/api/chains/testchains/faults_chain/SleepTask?duration=30s")
	ts.waitRunning(t, long.run.StatusURL)
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		drained <- ts.Runs().Drain(ctx, "server shutting down: grace period over", 10*time.Second)
	}()
	time.Sleep(50 * time.Millisecond)
	if a := ts.post(t, "/api/chains/testchains/hello_chain/HelloTask?name=late"); a.Code != http.StatusServiceUnavailable {
		t.Errorf("POST while draining = %d, want 503", a.Code)
	}
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
	if st := ts.do(t, "GET", short.run.StatusURL); *st.run.JobStatus != runs.Done {
		t.Errorf("short run = %v, want DONE (it fit in the grace period)", st.run.JobStatus)
	}
	st := ts.do(t, "GET", long.run.StatusURL)
	if *st.run.JobStatus != runs.Cancelled || st.run.Error == nil || !strings.Contains(*st.run.Error, "grace period over") {
		t.Errorf("long run = %v %v, want CANCELLED with the reason", st.run.JobStatus, st.run.Error)
	}
}

func TestRetriesAndTimeoutsAreRecordedPerAttempt(t *testing.T) {
	ts := newTestServer(t)
	counter := t.TempDir() + "/count"
	a := ts.post(t, "/api/chains/testchains/faults_chain/FlakyTask?succeed_on=3&wait=20s&counter="+counter)
	if *a.run.JobStatus != runs.Done {
		t.Fatalf("FlakyTask = %v %v, want DONE on the third attempt", a.run.JobStatus, a.run.Error)
	}
	attempts := a.run.Tasks[0].Attempts
	if len(attempts) != 3 || attempts[0].Error != "attempt 1: not yet" || attempts[1].Error != "attempt 2: not yet" || attempts[2].Error != "" {
		t.Errorf("attempts = %+v, want two failures then a success", attempts)
	}
	if gap := attempts[1].StartedAt.Sub(*attempts[0].FinishedAt); gap < 50*time.Millisecond {
		t.Errorf("second attempt started %v after the first ended, want the 50ms backoff", gap)
	}
	if _, body := fetch(t, a.run.ResourceURL); body != "succeeded on attempt 3\n" {
		t.Errorf("out = %q", body)
	}

	launches := ts.Runs().Launches()
	start := time.Now()
	h := ts.post(t, "/api/chains/testchains/faults_chain/HangTask?limit=300ms&wait=20s")
	if *h.run.JobStatus != runs.Failed || h.run.Error == nil || !strings.Contains(*h.run.Error, "timed out after 300ms") {
		t.Fatalf("HangTask = %v %q, want FAILED: timed out after 300ms", *h.run.JobStatus, *h.run.Error)
	}
	if n := len(h.run.Tasks[0].Attempts); n != 2 {
		t.Errorf("HangTask attempts = %d, want 2", n)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("two 300ms timeouts took %v", took)
	}
	if got := ts.Runs().Launches() - launches; got != 2 {
		t.Errorf("HangTask used %d processes, want 2 (the hung one is killed and replaced)", got)
	}
	if pids := pluginPIDs(t); len(pids) != 0 {
		t.Errorf("hung plugin processes left: %v", pids)
	}
	if _, log := fetch(t, h.run.LogURL); strings.Count(log, "HangTask: hanging") != 2 || !strings.Contains(log, "attempt 1 of 2 failed: timed out") {
		t.Errorf("HangTask log:\n%s", log)
	}
}

// One run's crashing plugin leaves another run, in its own process, untouched.
func TestACrashLeavesOtherRunsAlone(t *testing.T) {
	ts := newTestServer(t)
	slow := ts.post(t, "/api/chains/testchains/faults_chain/SleepTask?duration=800ms")
	for _, task := range []string{"ExitTask", "PanicTask"} {
		if a := ts.post(t, "/api/chains/testchains/faults_chain/"+task+"?wait=10s"); *a.run.JobStatus != runs.Failed {
			t.Errorf("%s = %v", task, a.run.JobStatus)
		}
	}
	if final := ts.poll(t, slow.run.StatusURL); *final.JobStatus != runs.Done {
		t.Errorf("the other run = %v %v, want DONE", final.JobStatus, final.Error)
	}
}

// copyPlugins copies the built plugins (and their hashes) into a folder a test may tamper with.
func copyPlugins(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	entries, err := os.ReadDir(pluginDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(pluginDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestTamperedPluginIsNotStarted(t *testing.T) {
	dir := copyPlugins(t)
	bin := filepath.Join(dir, "testchains")
	ts := newTestServer(t, func(c *Config) { c.PluginDir = dir })
	// Replaced after the server checked it at start: the next run refuses to start it.
	f, err := os.OpenFile(bin, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("tampered"))
	f.Close()
	a := ts.post(t, "/api/chains/testchains/hello_chain/HelloTask?name=tamper&wait=10s")
	if *a.run.JobStatus != runs.Failed || a.run.Error == nil || !strings.Contains(*a.run.Error, "does not match the hash recorded at build time") {
		t.Errorf("run with a tampered plugin = %v %v", a.run.JobStatus, a.run.Error)
	}
	// And a server will not start on it.
	cfg := Defaults()
	cfg.Target, cfg.PluginDir, cfg.SigningKey = t.TempDir(), dir, []byte(strings.Repeat("k", 32))
	if _, err := New(cfg, catalog.Generated(), slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "does not match the hash") {
		t.Errorf("New with a tampered plugin = %v", err)
	}
}

func TestRequestLimitsAndPrivateSockets(t *testing.T) {
	ts := newTestServer(t)
	resp, err := http.Post(ts.url+"/api/chains/testchains/hello_chain/HelloTask", "text/plain", strings.NewReader(strings.Repeat("x", 2<<20)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("2 MiB body = %d, want 413", resp.StatusCode)
	}
	// Download paths and chain= stay under chains/, even with a valid signature.
	for _, key := range []string{"chains/../.signing-key", ".signing-key", "chains/a/../../x"} {
		u := strings.TrimPrefix(ts.downloadURL(key, time.Minute), ts.url)
		if a := ts.do(t, "GET", u); a.Code != http.StatusBadRequest && a.Code != http.StatusNotFound {
			t.Errorf("signed download of %q = %d, want 400", key, a.Code)
		}
	}
	fi, err := os.Stat(ts.launcher.SocketDir())
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("plugin socket folder mode = %v (%v), want 0700", fi.Mode().Perm(), err)
	}
}

// Neither the bearer token nor the signing key reaches the server's log.
func TestSecretsAreNotLogged(t *testing.T) {
	token := "tok-" + strings.Repeat("s", 20)
	var logs strings.Builder
	var mu sync.Mutex
	ts := newTestServer(t, func(c *Config) { c.APITokens = []string{token} })
	ts.log = slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	req, _ := http.NewRequest("POST", ts.url+"/api/chains/testchains/hello_chain/HelloTask?wait=10s", nil)
	req.Header.Set("Authorization", "Bearer "+token+"-wrong")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	mu.Lock()
	defer mu.Unlock()
	if resp.StatusCode != 401 || strings.Contains(logs.String(), token) || strings.Contains(logs.String(), strings.Repeat("k", 32)) {
		t.Errorf("status %d; log shows a secret:\n%s", resp.StatusCode, logs.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// With warm plugins a run takes a process started ahead of time; when the run has ended well
// its process waits for the next run (at most two wait per chain type), so a stream of runs
// starts no process at all. A rebuilt binary makes the waiting processes stale: they go.
func TestWarmPluginsAreReused(t *testing.T) {
	dir := copyPlugins(t)
	ts := newTestServer(t, func(c *Config) { c.WarmPlugins, c.PluginDir = true, dir })
	bin := filepath.Join(dir, "testchains")
	post := func(name string) {
		t.Helper()
		a := ts.post(t, "/api/chains/testchains/hello_chain/HelloTask?name="+name+"&wait=10s")
		if *a.run.JobStatus != runs.Done {
			t.Fatal(a.run.Error)
		}
	}
	// waitIdle waits until n processes wait and they are the only plugin processes.
	waitIdle := func(n int) []int {
		t.Helper()
		var pids []int
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if pids = pluginPIDsOf(bin); len(pids) == n && ts.Runs().WarmSpares() == n {
				slices.Sort(pids)
				return pids
			}
		}
		t.Fatalf("plugin processes = %v, waiting %d, want %d", pids, ts.Runs().WarmSpares(), n)
		return nil
	}
	post("warm1") // started its own process, and a spare for the next
	pool := waitIdle(2)
	for i := range 5 {
		post(fmt.Sprintf("reuse%d", i))
	}
	if now := waitIdle(2); !slices.Equal(now, pool) {
		t.Errorf("plugin processes went from %v to %v: runs did not reuse them", pool, now)
	}
	if got := ts.Runs().Launches(); got != 6 {
		t.Errorf("Launches() = %d, want one per run (6)", got)
	}
	// Rebuild (here: replace) the binary: the waiting processes are stale and must not run tasks.
	b, _ := os.ReadFile(bin)
	os.Remove(bin)
	os.WriteFile(bin, b, 0o755)
	post("warm3")
	for _, pid := range pool {
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("the stale process %d is still alive", pid)
		}
	}
	waitIdle(2)
}

// A cancelled run's process is not kept, even when the cancel found it alive and idle (here:
// between two attempts of a task): it may be in any state.
func TestCancelledRunsProcessIsNotReused(t *testing.T) {
	dir := copyPlugins(t)
	ts := newTestServer(t, func(c *Config) { c.PluginDir = dir }) // no warm spare: one process
	bin := filepath.Join(dir, "testchains")
	counter := filepath.Join(t.TempDir(), "counter")
	a := ts.post(t, "/api/chains/testchains/faults_chain/FlakyTask?succeed_on=3&backoff=1m&counter="+url.QueryEscape(counter))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if b, _ := os.ReadFile(counter); len(b) == 1 { // the first attempt failed: backing off
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first attempt did not run")
		}
	}
	running := pluginPIDsOf(bin)
	if len(running) != 1 {
		t.Fatalf("plugin processes = %v, want the run's one", running)
	}
	if _, err := ts.Runs().Cancel(a.run.Key, "test"); err != nil {
		t.Fatal(err)
	}
	if final := ts.poll(t, a.run.StatusURL); *final.JobStatus != runs.Cancelled {
		t.Fatalf("status = %v", *final.JobStatus)
	}
	for deadline := time.Now().Add(5 * time.Second); syscall.Kill(running[0], 0) == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the cancelled run's process %d is alive (waiting: %d)", running[0], ts.Runs().WarmSpares())
		}
	}
	if n := ts.Runs().WarmSpares(); n != 0 {
		t.Errorf("%d processes wait for a run, want none", n)
	}
}
