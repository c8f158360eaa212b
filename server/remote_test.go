package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"nectar/server/runs"
	"nectar/targets"
	"nectar/targets/miniotest"
)

// remoteTargets are NECTAR_TARGET values for the real MinIO, through each SDK.
func remoteTargets(srv *miniotest.Server, prefix string) map[string]string {
	return map[string]string{
		"s3":    fmt.Sprintf("s3://%s/%s-s3?endpoint=%s", srv.Bucket, prefix, srv.URL()),
		"minio": fmt.Sprintf("minio://%s/%s/%s-minio?secure=false", srv.Endpoint, srv.Bucket, prefix),
	}
}

func minioEnv(t *testing.T, srv *miniotest.Server) {
	// The AWS SDK reads its credential chain from the process environment.
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	t.Setenv("AWS_REGION", "us-east-1")
}

func storeHas(t *testing.T, s targets.Store, key string) bool {
	t.Helper()
	ok, err := targets.Exists(context.Background(), s, key)
	if err != nil {
		t.Fatalf("Stat %s: %v", key, err)
	}
	return ok
}

func TestRunsOnS3AndMinIO(t *testing.T) {
	minioEnv(t, minioSrv)
	for name, target := range remoteTargets(minioSrv, "e2e-"+fmt.Sprint(time.Now().UnixNano())) {
		t.Run(name, func(t *testing.T) {
			ts := newTestServer(t, func(c *Config) { c.Target = target; c.Getenv = getenvMap(minioSrv) })
			if !strings.Contains(ts.Store().String(), minioSrv.Bucket) {
				t.Errorf("store = %s, want the MinIO bucket", ts.Store())
			}
			// A task and its dependency: the dependency's out is read back from the bucket.
			a := ts.post(t, "/api/chains/testchains/hello_chain/UpperTask?name=ada&wait=20s")
			if a.Code != 200 || *a.run.JobStatus != runs.Done {
				t.Fatalf("UpperTask = %d %v %v", a.Code, a.run.JobStatus, a.run.Error)
			}
			if !strings.HasPrefix(a.run.ResourceURL, minioSrv.URL()+"/") {
				t.Errorf("resource_url %s is not a presigned MinIO URL", a.run.ResourceURL)
			}
			if code, body := fetch(t, a.run.ResourceURL); code != 200 || body != "HELLO ADA\n" {
				t.Errorf("presigned download = %d %q", code, body)
			}
			if code, body := fetch(t, a.run.ParamsURL); code != 200 || body != `{"name":"ada"}` {
				t.Errorf("params = %d %q", code, body)
			}
			hello := runs.Key("testchains", "hello_chain", "HelloTask", []byte(`{"name":"ada"}`))
			for _, k := range []string{a.run.Key + "/out", a.run.Key + "/log", a.run.Key + "/params", a.run.Key + "/run", hello + "/out", hello + "/log"} {
				if !storeHas(t, ts.Store(), k) {
					t.Errorf("%s missing from the bucket", k)
				}
			}
			// A dependency's params are in the run record, not a file of its own.
			if storeHas(t, ts.Store(), hello+"/params") {
				t.Errorf("%s/params was written: a dependency's params live in the run record", hello)
			}
			if len(a.run.Tasks) != 2 || a.run.Tasks[1].Key != hello || string(a.run.Tasks[1].Params) != `{"name":"ada"}` {
				t.Errorf("tasks = %+v, want HelloTask with its params second", a.run.Tasks)
			}
			if storeHas(t, ts.Store(), a.run.Key+"/lease") {
				t.Errorf("the run lease was not released")
			}
			// Done: answered at once, no process.
			launches := ts.Runs().Launches()
			if again := ts.post(t, "/api/chains/testchains/hello_chain/UpperTask?name=ada"); again.Code != 200 || ts.Runs().Launches() != launches {
				t.Errorf("repeat POST = %d, launches +%d", again.Code, ts.Runs().Launches()-launches)
			}
			// A fan-in: the outs of its 20 leaves are looked up in the bucket at once, then read back.
			j := ts.post(t, "/api/chains/testchains/fanin_chain/JoinTask?leaves=20&wait=30s")
			if *j.run.JobStatus != runs.Done {
				t.Fatalf("JoinTask = %v %v", j.run.JobStatus, j.run.Error)
			}
			if _, body := fetch(t, j.run.ResourceURL); body != "190\n" {
				t.Errorf("JoinTask out = %q, want 190", body)
			}
			// A failing task: its log is stored, its out is not.
			f := ts.post(t, "/api/chains/testchains/faults_chain/FailTask?wait=20s")
			if *f.run.JobStatus != runs.Failed || storeHas(t, ts.Store(), f.run.Key+"/out") || !storeHas(t, ts.Store(), f.run.Key+"/log") {
				t.Errorf("FailTask = %v; out exists %v", f.run.JobStatus, storeHas(t, ts.Store(), f.run.Key+"/out"))
			}
			if _, log := fetch(t, f.run.LogURL); !strings.Contains(log, "failed on purpose") {
				t.Errorf("FailTask log = %q", log)
			}
		})
	}
}

func getenvMap(srv *miniotest.Server) func(string) string {
	env := map[string]string{
		"MINIO_ACCESS_KEY": srv.AccessKey, "MINIO_SECRET_KEY": srv.SecretKey,
	}
	return func(k string) string { return env[k] }
}

func TestStoreOutageAnswers503AndRecovers(t *testing.T) {
	own, err := miniotest.Start() // its own server: this test kills it
	if err != nil {
		t.Fatalf("starting MinIO: %v", err)
	}
	defer own.Stop()
	minioEnv(t, own)
	for name, target := range remoteTargets(own, "outage") {
		t.Run(name, func(t *testing.T) {
			ts := newTestServer(t, func(c *Config) { c.Target = target; c.Getenv = getenvMap(own) })
			own.Kill()
			a := ts.post(t, "/api/chains/testchains/hello_chain/HelloTask?name=outage-"+name)
			// The answer says what and which request; the log says where (the leak check reads
			// every answer for the bucket and the endpoint).
			if a.Code != http.StatusServiceUnavailable || !regexp.MustCompile(`^target store unavailable \(request id [0-9a-f]{16}\)$`).MatchString(a.Message) {
				t.Errorf("POST while the store is down = %d %q, want 503: target store unavailable (request id …)", a.Code, a.Message)
			}
			st := ts.do(t, "GET", ts.statusURL(runs.Key("testchains", "hello_chain", "HelloTask", []byte(`{"name":"x"}`))))
			if st.Code != http.StatusServiceUnavailable {
				t.Errorf("status while the store is down = %d, want 503", st.Code)
			}
			if n := ts.leaks.errorAnswers(); n < 2 {
				t.Errorf("the leak check saw %d error answers, want the two 503s", n)
			}
			if _, m := fetch(t, ts.url+"/metrics"); !strings.Contains(m, `nectar_store_errors_total{where="api"}`) {
				t.Errorf("/metrics does not count the store errors")
			}
			if err := own.Restart(); err != nil {
				t.Fatal(err)
			}
			b := ts.post(t, "/api/chains/testchains/hello_chain/HelloTask?name=outage-"+name+"&wait=20s")
			if b.Code != 200 || *b.run.JobStatus != runs.Done {
				t.Errorf("POST after the store came back = %d %v %v", b.Code, b.run.JobStatus, b.run.Error)
			}
		})
	}
}

// A store that stops answering (frozen: its port takes connections that get no answer, as a
// hung server's or a blackholed endpoint's) costs a status read or a POST NECTAR_STORE_TIMEOUT,
// then a 503, through either SDK; once it answers again, so does the server.
// (Before, minio-go waited a minute per attempt, and the AWS SDK without limit.)
func TestAFrozenStoreAnswers503AfterTheStoreTimeout(t *testing.T) {
	own, err := miniotest.Start() // its own server: this test freezes it
	if err != nil {
		t.Fatalf("starting MinIO: %v", err)
	}
	defer own.Stop()
	minioEnv(t, own)
	for name, target := range remoteTargets(own, "frozen") {
		t.Run(name, func(t *testing.T) {
			env := getenvMap(own)
			ts := newTestServer(t, func(c *Config) {
				c.Target = target
				c.Getenv = func(k string) string {
					if k == "NECTAR_STORE_TIMEOUT" {
						return "2s"
					}
					return env(k)
				}
			})
			a := ts.post(t, "/api/chains/testchains/hello_chain/HelloTask?name=frozen-"+name+"&wait=20s")
			if a.Code != 200 || *a.run.JobStatus != runs.Done {
				t.Fatalf("POST = %d %v %v", a.Code, a.run.JobStatus, a.run.Error)
			}
			ts.waitRetired(t, a.run.Key) // its status is then read from the store
			own.Freeze()
			defer own.Thaw()
			for _, req := range []struct{ method, url string }{
				{"GET", ts.statusURL(a.run.Key)}, // its record's version is read from the store
				{"POST", ts.url + "/api/chains/testchains/hello_chain/HelloTask?name=frozen-new-" + name},
			} {
				start := time.Now()
				r, err := (&http.Client{Timeout: time.Minute}).Do(mustRequest(t, req.method, req.url))
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(r.Body)
				r.Body.Close()
				took := time.Since(start)
				if r.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "target store unavailable") {
					t.Errorf("%s while the store is frozen = %d %s, want 503", req.method, r.StatusCode, body)
				}
				if took > 20*time.Second { // 2 s, retries included; a minute or more before
					t.Errorf("%s while the store is frozen took %s", req.method, took)
				}
			}
			own.Thaw()
			b := ts.post(t, "/api/chains/testchains/hello_chain/HelloTask?name=frozen-new-"+name+"&wait=20s")
			if b.Code != 200 || *b.run.JobStatus != runs.Done {
				t.Errorf("POST once the store answers again = %d %v %v", b.Code, b.run.JobStatus, b.run.Error)
			}
		})
	}
}

func TestServersSharingAStoreRunAKeyOnce(t *testing.T) {
	minioEnv(t, minioSrv)
	targets := map[string]string{"local": t.TempDir()}
	for name, target := range remoteTargets(minioSrv, "shared-"+fmt.Sprint(time.Now().UnixNano())) {
		targets[name] = target
	}
	for name, target := range targets {
		t.Run(name, func(t *testing.T) {
			cfg := func(c *Config) { c.Target = target; c.Getenv = getenvMap(minioSrv) }
			a := newTestServer(t, cfg)
			b := newTestServer(t, cfg)
			first := a.post(t, "/api/chains/testchains/faults_chain/SleepTask?duration=700ms")
			if first.Code != http.StatusAccepted {
				t.Fatalf("POST to A = %d", first.Code)
			}
			a.waitRunning(t, first.run.StatusURL) // A holds the lease
			second := b.post(t, "/api/chains/testchains/faults_chain/SleepTask?duration=700ms&wait=20s")
			if second.Code != 200 || *second.run.JobStatus != runs.Done {
				t.Fatalf("POST?wait to B = %d %v %v", second.Code, second.run.JobStatus, second.run.Error)
			}
			if n := b.Runs().Launches(); n != 0 {
				t.Errorf("B launched %d plugin processes for a key A was running, want 0", n)
			}
			if n := a.Runs().Launches(); n != 1 {
				t.Errorf("A launched %d, want 1", n)
			}
			if second.run.Key != first.run.Key || second.run.ResourceURL == "" {
				t.Errorf("B's answer = %+v", second.run)
			}
		})
	}
}

// The store goes away while a run executes: the run fails, and its record (which the status
// URL shows) says what the server was doing and which run to look for in the log, while the
// log line names the store and the cause.
func TestStoreOutageMidRunIsRecordedWithoutDetails(t *testing.T) {
	own, err := miniotest.Start() // its own server: this test kills it
	if err != nil {
		t.Fatalf("starting MinIO: %v", err)
	}
	defer own.Stop()
	minioEnv(t, own)
	for name, target := range remoteTargets(own, "midrun") {
		t.Run(name, func(t *testing.T) {
			if err := own.Restart(); err != nil {
				t.Fatal(err)
			}
			var logs strings.Builder
			var mu sync.Mutex
			ts := newTestServerLogging(t, slogTo(&mu, &logs), func(c *Config) { c.Target = target; c.Getenv = getenvMap(own) })
			a := ts.post(t, "/api/chains/testchains/faults_chain/SleepTask?duration=1500ms")
			ts.waitRunning(t, a.run.StatusURL)
			own.Kill()
			final := ts.poll(t, a.run.StatusURL) // answered from memory: the record cannot be stored
			// The run stores the key's params and first record while its task executes: the
			// store may go away before they are stored (the run fails saying so, and its task
			// was not committed), or after, as the task's files are committed.
			sentence := func(doing string) *regexp.Regexp {
				return regexp.MustCompile(`^target store unavailable while ` + doing + `; see the server log \(run ([0-9a-f]{12})\)$`)
			}
			commit, start := sentence("committing the files of SleepTask"), sentence("writing the params and record of SleepTask")
			if *final.JobStatus != runs.Failed || len(final.Tasks) != 1 || final.Error == nil {
				t.Fatalf("after the store went away: %v %v, tasks %+v, want FAILED with a fixed error", *final.JobStatus, final.Error, final.Tasks)
			}
			var doing, runID string
			switch task := final.Tasks[0].Error; {
			case commit.MatchString(task):
				doing, runID = "committing the files of SleepTask", commit.FindStringSubmatch(task)[1]
				if *final.Error != "SleepTask failed: "+task {
					t.Errorf("run error = %q; want the task's", *final.Error)
				}
			case start.MatchString(*final.Error) && task == "not committed: its run could not store its params and record":
				doing, runID = "writing the params and record of SleepTask", start.FindStringSubmatch(*final.Error)[1]
			default:
				t.Fatalf("run error %q, task error %q; want a fixed sentence naming what the server was doing", *final.Error, task)
			}
			mu.Lock()
			logged := logs.String()
			mu.Unlock()
			line := regexp.MustCompile(`(?m)^.*level=ERROR.*run_id=` + runID + `.*$`).FindString(logged)
			if !strings.Contains(line, doing) || !strings.Contains(line, own.Bucket) || !strings.Contains(line, own.Endpoint) {
				t.Errorf("no error log line for run %s naming the store and the cause:\n%s", runID, logged)
			}
		})
	}
}

// A key seen done is answered from memory for NECTAR_DONE_CACHE_TTL, then asked of the store
// again: here the store is down, so the cached answer is 200 and the expired one 503.
func TestDoneCacheSparesTheStore(t *testing.T) {
	own, err := miniotest.Start()
	if err != nil {
		t.Fatalf("starting MinIO: %v", err)
	}
	defer own.Stop()
	target := remoteTargets(own, "cache")["minio"]
	ts := newTestServer(t, func(c *Config) { c.Target, c.Getenv, c.DoneCacheTTL = target, getenvMap(own), 3*time.Second })
	path := "/api/chains/testchains/hello_chain/HelloTask?name=cached"
	if a := ts.post(t, path+"&wait=20s"); *a.run.JobStatus != runs.Done {
		t.Fatal(a.run.Error)
	}
	if a := ts.post(t, path); a.Code != 200 { // seen done: cached from here
		t.Fatalf("second POST = %d", a.Code)
	}
	own.Kill()
	if a := ts.post(t, path); a.Code != 200 || *a.run.JobStatus != runs.Done || a.run.ResourceURL == "" {
		t.Errorf("cached POST with the store down = %d %v", a.Code, a.run.JobStatus)
	}
	time.Sleep(3100 * time.Millisecond)
	if a := ts.post(t, path); a.Code != http.StatusServiceUnavailable {
		t.Errorf("POST after the cache expired, store down = %d, want 503", a.Code)
	}
}

// A DELETE that reaches a server which only follows the run reaches the server executing it.
// A DELETE reaches the run through any server sharing the store: one that follows the run (it
// was POSTed there too) and one that never saw it (a load balancer sent the DELETE there) both
// leave the executing server a cancel request, and answer with the run CANCELLED.
func TestCancelThroughAnotherServer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		follows bool
	}{
		{"a server following the run", true},
		{"a server that never saw it", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := t.TempDir()
			a := newTestServer(t, func(c *Config) { c.Target = target })
			b := newTestServer(t, func(c *Config) { c.Target = target })
			first := a.post(t, "/api/chains/testchains/faults_chain/SleepTask?duration=30s")
			a.waitRunning(t, first.run.StatusURL)
			statusURL := strings.Replace(first.run.StatusURL, a.url, b.url, 1)
			if tc.follows {
				statusURL = b.post(t, "/api/chains/testchains/faults_chain/SleepTask?duration=30s").run.StatusURL
			}
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) { // B sees A's run
				if st := b.do(t, "GET", statusURL); st.run.JobStatus != nil && *st.run.JobStatus == runs.Running {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the other server never saw the run RUNNING")
				}
			}
			start := time.Now()
			c := b.do(t, "DELETE", statusURL)
			if c.Code != 200 || c.run.JobStatus == nil || *c.run.JobStatus != runs.Cancelled || c.run.Error == nil || !strings.Contains(*c.run.Error, "cancelled by DELETE") {
				t.Fatalf("DELETE via the other server = %d %q %v %v, want 200 CANCELLED", c.Code, c.Message, c.run.JobStatus, c.run.Error)
			}
			if took := time.Since(start); took > 4*time.Second {
				t.Errorf("cancel through another server took %v", took)
			}
			if st := a.do(t, "GET", first.run.StatusURL); *st.run.JobStatus != runs.Cancelled {
				t.Errorf("on the executing server: %v", st.run.JobStatus)
			}
			if n := b.Runs().Launches(); n != 0 {
				t.Errorf("the other server launched %d processes", n)
			}
		})
	}
}
