package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"nectar/chains"
	"nectar/server/history/pgtest"
	"nectar/server/runs"
	"nectar/targets"
)

// A task reads a source object no task produced, on every kind of store: the local folder (a
// file path handed to the plugin) and MinIO through both SDKs (a presigned URL); the plugin
// never holds the store's credentials.
func TestTaskReadsASourceObject(t *testing.T) {
	data := bytes.Repeat([]byte("FL_DATE,ORIGIN,DEP_DELAY\n2009-01-01,ATL,7\n"), 20_000) // ~860 KB: streamed
	sum := sha256.Sum256(data)
	want := fmt.Sprintf("%d %s\n", len(data), hex.EncodeToString(sum[:]))
	targetsToTry := map[string]string{"local": t.TempDir()}
	for k, v := range remoteTargets(minioSrv, "sources-"+strings.ToLower(t.Name())) {
		targetsToTry[k] = v
	}
	minioEnv(t, minioSrv)
	targetsToTry["local, warm plugin idle 6s"] = t.TempDir()
	for name, target := range targetsToTry {
		t.Run(name, func(t *testing.T) {
			warm := strings.Contains(name, "warm")
			ts := newTestServer(t, func(c *Config) { c.Target = target; c.Getenv = getenvMap(minioSrv); c.WarmPlugins = warm })
			if warm {
				// go-plugin forgets a broker id's connection details after 5 s: a spare that
				// waits longer for its first task must still reach the host. (A first run
				// makes the server start the spare.)
				ts.postWait(t, "/api/chains/testchains/hello_chain/HelloTask?name=warm&wait=30s", nil)
				waitForSpare(t, ts)
				time.Sleep(6 * time.Second)
			}
			if err := ts.Store().Put(context.Background(), "datasets/test/flights.csv", bytes.NewReader(data)); err != nil {
				t.Fatal(err)
			}
			a := ts.postWait(t, "/api/chains/testchains/data_chain/SourceTask?path=datasets/test/flights.csv&wait=30s", nil)
			if a.run.JobStatus == nil || *a.run.JobStatus != runs.Done {
				t.Fatalf("SourceTask: %d %s %v", a.Code, a.Message, a.run.Error)
			}
			if got := ts.read(t, a.run.Key+"/out"); got != want {
				t.Errorf("out = %q, want %q", got, want)
			}
			for _, tc := range []struct{ path, says string }{
				{"datasets/test/missing.csv", "no object at this path in the store"},
				{".signing-key", "do not start with '.'"},
			} {
				a := ts.postWait(t, "/api/chains/testchains/data_chain/SourceTask?wait=30s&path="+tc.path, nil)
				if a.run.JobStatus == nil || *a.run.JobStatus != runs.Failed || a.run.Error == nil || !strings.Contains(*a.run.Error, tc.says) {
					t.Errorf("SourceTask of %s = %v %v, want FAILED saying %q", tc.path, a.run.JobStatus, a.run.Error, tc.says)
				}
			}
		})
	}
}

// read returns a stored object's content.
func (ts *testServer) read(t *testing.T, key string) string {
	t.Helper()
	rc, err := ts.Store().Get(context.Background(), key)
	if err != nil {
		t.Fatalf("reading %s: %v", key, err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return string(b)
}

// Named artifacts are committed with out (listed in the status answer with signed URLs and
// content types, one published at a stable path), and a failing task commits none of them.
func TestArtifactsAreCommittedWithOut(t *testing.T) {
	ts := newTestServer(t)
	a := ts.postWait(t, "/api/chains/testchains/data_chain/ArtifactsTask?count=3&publish=daily&wait=30s", nil)
	if a.run.JobStatus == nil || *a.run.JobStatus != runs.Done {
		t.Fatalf("ArtifactsTask: %d %s %v", a.Code, a.Message, a.run.Error)
	}
	st := ts.do(t, http.MethodGet, a.run.StatusURL)
	var data struct {
		Tasks []struct {
			Artifacts []struct {
				Name, URL, Published string
				ContentType          string `json:"content_type"`
				Size                 int64
				PublishedURL         string `json:"published_url"`
			}
		}
	}
	if err := json.Unmarshal(st.Data, &data); err != nil || len(data.Tasks) != 1 {
		t.Fatalf("status: %v %s", err, st.Data)
	}
	arts := data.Tasks[0].Artifacts
	if len(arts) != 3 {
		t.Fatalf("status lists %d artifacts, want 3: %s", len(arts), st.Data)
	}
	for i, art := range arts {
		want := fmt.Sprintf("part %d of 3\n", i)
		if art.Name != fmt.Sprintf("parts/%d.txt", i) || art.ContentType != "text/plain; charset=utf-8" || art.Size != int64(len(want)) {
			t.Errorf("artifact %d = %+v", i, art)
		}
		code, body := fetch(t, art.URL)
		if code != 200 || body != want {
			t.Errorf("GET artifact %s = %d %q, want %q", art.Name, code, body, want)
		}
	}
	if arts[0].Published != "reports/testchains/daily/first.txt" || ts.read(t, "reports/testchains/daily/first.txt") != "part 0 of 3\n" {
		t.Errorf("published copy: %+v", arts[0])
	}
	if code, body := fetch(t, arts[0].PublishedURL); code != 200 || body != "part 0 of 3\n" {
		t.Errorf("GET published = %d %q", code, body)
	}
	// Every download is sandboxed, an out as much as an artifact: an HTML file a task wrote
	// cannot run script for the UI's user.
	for _, u := range []string{a.run.ResourceURL, arts[0].URL} {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.HasPrefix(csp, "sandbox;") || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("download %s: CSP %q, nosniff %q", u, csp, resp.Header.Get("X-Content-Type-Options"))
		}
	}

	// A failing task: nothing of it is committed, nothing published.
	f := ts.postWait(t, "/api/chains/testchains/data_chain/ArtifactsTask?count=2&publish=failed&fail=true&wait=30s", nil)
	if f.run.JobStatus == nil || *f.run.JobStatus != runs.Failed {
		t.Fatalf("failing ArtifactsTask: %v", f.run.JobStatus)
	}
	keys, err := ts.Store().List(context.Background(), f.run.Key+"/"+runs.ArtifactsDir+"/")
	if err != nil || len(keys) != 0 {
		t.Errorf("a failed task left artifacts: %v %v", keys, err)
	}
	if ok, _ := targets.Exists(context.Background(), ts.Store(), "reports/testchains/failed/first.txt"); ok {
		t.Errorf("a failed task published its artifact")
	}

	// One artifact more than a task makes: the task fails saying so, with none stored.
	over := ts.postWait(t, fmt.Sprintf("/api/chains/testchains/data_chain/ArtifactsTask?count=%d&wait=60s", chains.MaxArtifacts+1), nil)
	if over.run.JobStatus == nil || *over.run.JobStatus != runs.Failed || over.run.Error == nil ||
		!strings.Contains(*over.run.Error, fmt.Sprintf("a task makes at most %d artifacts", chains.MaxArtifacts)) {
		t.Fatalf("ArtifactsTask of %d artifacts: %v %v; want FAILED, naming the bound", chains.MaxArtifacts+1, over.run.JobStatus, over.run.Error)
	}
	keys, err = ts.Store().List(context.Background(), over.run.Key+"/"+runs.ArtifactsDir+"/")
	if err != nil || len(keys) != 0 {
		t.Errorf("a task over the bound left %d artifacts: %v", len(keys), err)
	}
}

// A connection reaches the task that declares it, from NECTAR_CONN_<NAME>, and its value is in
// no log, error, record, params or key, even when the task prints it.
func TestConnectionSecretsStayOutOfEverything(t *testing.T) {
	const secret = "s3cret-Pa55word"
	dsn := "postgres://loader:" + secret + "@127.0.0.1:5432/warehouse"
	env := map[string]string{"NECTAR_CONN_TESTDB": dsn}
	ts := newTestServer(t, func(c *Config) { c.Getenv = func(k string) string { return env[k] } })
	ok := ts.postWait(t, "/api/chains/testchains/data_chain/SecretTask?wait=30s", nil)
	if ok.run.JobStatus == nil || *ok.run.JobStatus != runs.Done {
		t.Fatalf("SecretTask: %v %v", ok.run.JobStatus, ok.run.Error)
	}
	sum := sha256.Sum256([]byte(dsn))
	if got, want := ts.read(t, ok.run.Key+"/out"), fmt.Sprintf("connected with a %d-byte dsn %s\n", len(dsn), hex.EncodeToString(sum[:4])); got != want {
		t.Errorf("out = %q, want %q (the task did not get the configured value)", got, want)
	}
	failed := ts.postWait(t, "/api/chains/testchains/data_chain/SecretTask?fail=true&wait=30s", nil)
	if failed.run.JobStatus == nil || *failed.run.JobStatus != runs.Failed || failed.run.Error == nil ||
		!strings.Contains(*failed.run.Error, "cannot connect to [connection testdb]") {
		t.Fatalf("failing SecretTask: %v %v", failed.run.JobStatus, failed.run.Error)
	}
	for _, key := range []string{ok.run.Key, failed.run.Key} {
		log := ts.read(t, key+"/log")
		if !strings.Contains(log, "[connection testdb]") {
			t.Errorf("the log does not show where the secret was:\n%s", log)
		}
		for _, obj := range []string{"log", "run", "params"} {
			if body := ts.read(t, key+"/"+obj); strings.Contains(body, secret) {
				t.Errorf("%s of %s holds the secret:\n%s", obj, key, body)
			}
		}
		if strings.Contains(key, secret) {
			t.Errorf("the key holds the secret")
		}
	}
	for _, a := range []answer{ok, failed} {
		if st := ts.do(t, http.MethodGet, a.run.StatusURL); strings.Contains(string(st.Data), secret) {
			t.Errorf("the status answer holds the secret: %s", st.Data)
		}
	}

	// Not configured: the task fails saying what to set, and never runs.
	bare := newTestServer(t)
	m := bare.postWait(t, "/api/chains/testchains/data_chain/SecretTask?wait=30s", nil)
	if m.run.Error == nil || !strings.Contains(*m.run.Error, `declares connection "testdb", which this server does not configure: set NECTAR_CONN_TESTDB`) {
		t.Errorf("SecretTask without the connection: %v %v", m.run.JobStatus, m.run.Error)
	}
}

// The airline chain's load through a server: the warehouse password (in NECTAR_CONN_WAREHOUSE)
// is in no object of the store, log, record, params or key, and not in the run history.
func TestWarehousePasswordIsNowhere(t *testing.T) {
	const password = "Wh-Pa55-9f3c1e"
	u, err := url.Parse(pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), password) // the test cluster trusts loopback: any password does
	env := map[string]string{"NECTAR_CONN_WAREHOUSE": u.String()}
	target := t.TempDir()
	ts := newTestServer(t, func(c *Config) { c.Target = target; c.Getenv = func(k string) string { return env[k] } })
	var csv strings.Builder
	csv.WriteString("FL_DATE,ORIGIN,DEST,DEP_DELAY,CANCELLED\n")
	for d := 1; d <= 20; d++ {
		for i := range 5 {
			fmt.Fprintf(&csv, "2009-01-%02d,ATL,JFK,%d.0,0.0\n", d, (d*7+i*3)%23)
		}
	}
	if err := ts.Store().Put(context.Background(), "datasets/test/2009.csv", strings.NewReader(csv.String())); err != nil {
		t.Fatal(err)
	}
	a := ts.postWait(t, "/api/chains/airline/delays_chain/LoadTask?year=2009&source=datasets/test/2009.csv&min_flights=1&wait=60s", nil)
	if a.run.JobStatus == nil || *a.run.JobStatus != runs.Done {
		t.Fatalf("LoadTask: %v %v", a.run.JobStatus, a.run.Error)
	}
	if got := ts.read(t, a.run.Key+"/out"); got != "loaded 20 rows of 2009 into airport_daily_delays\n" {
		t.Errorf("out = %q", got)
	}
	ts.flushHistory(t)
	found := 0
	err = filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		found++
		if bytes.Contains(b, []byte(password)) {
			t.Errorf("%s holds the warehouse password", p)
		}
		return nil
	})
	if err != nil || found < 10 {
		t.Fatalf("scanned %d files: %v", found, err)
	}
	if st := ts.do(t, http.MethodGet, a.run.StatusURL); strings.Contains(string(st.Data), password) {
		t.Errorf("the status answer holds the password")
	}
}

// waitForSpare waits until the server keeps a warm plugin process.
func waitForSpare(t *testing.T, ts *testServer) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ts.Runs().WarmSpares() == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no warm plugin process")
		}
	}
}

// On S3 and MinIO an artifact's presigned URL names its content type (a bucket would serve it
// as octet-stream): the run page's gallery and report frame show it as what it is.
func TestRemoteArtifactsAreServedAsTheirType(t *testing.T) {
	minioEnv(t, minioSrv)
	for name, target := range remoteTargets(minioSrv, "artifacts-"+strings.ToLower(t.Name())) {
		t.Run(name, func(t *testing.T) {
			ts := newTestServer(t, func(c *Config) { c.Target = target; c.Getenv = getenvMap(minioSrv) })
			a := ts.postWait(t, "/api/chains/testchains/data_chain/ArtifactsTask?count=1&pictures=true&wait=30s", nil)
			if a.run.JobStatus == nil || *a.run.JobStatus != runs.Done {
				t.Fatalf("ArtifactsTask: %v %v", a.run.JobStatus, a.run.Error)
			}
			var data struct {
				Tasks []struct {
					Artifacts []struct{ Name, URL string }
				}
			}
			st := ts.do(t, http.MethodGet, a.run.StatusURL)
			if err := json.Unmarshal(st.Data, &data); err != nil || len(data.Tasks) != 1 || len(data.Tasks[0].Artifacts) != 4 {
				t.Fatalf("status: %v %s", err, st.Data)
			}
			want := map[string]string{"report.html": "text/html; charset=utf-8", "plots/ATL.png": "image/png", "parts/0.txt": "text/plain; charset=utf-8"}
			for _, art := range data.Tasks[0].Artifacts {
				ct, ok := want[art.Name]
				if !ok {
					continue
				}
				resp, err := http.Get(art.URL)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ct {
					t.Errorf("%s: %d %q, want %q", art.Name, resp.StatusCode, resp.Header.Get("Content-Type"), ct)
				}
			}
		})
	}
}

// A status answer lists at most maxAnswerArtifacts artifacts, each with a signed URL, in the
// order it lists its tasks: a task whose artifacts do not fit in what is left says how many it
// has and links a page of itself alone, which lists them all.
func TestAStatusAnswerListsABoundedNumberOfArtifacts(t *testing.T) {
	ts := newTestServer(t)
	arts := func(n int) []runs.Artifact {
		out := make([]runs.Artifact, n)
		for i := range out {
			out[i] = runs.Artifact{Name: fmt.Sprintf("parts/%d.txt", i), Size: 1, ContentType: "text/plain"}
		}
		return out
	}
	const root = "chains/testchains/data_chain/ArtifactsTask/00112233445566778899aabbccddeeff"
	rec := runs.Record{RunID: "r1", Key: root, Type: "testchains", Chain: "data_chain", Task: "ArtifactsTask", Status: runs.Done,
		Tasks: []runs.TaskState{
			{Chain: "data_chain", Task: "ArtifactsTask", Key: root, Status: runs.Done, Artifacts: arts(maxAnswerArtifacts - 400), Requires: []int{1, 2}},
			{Chain: "data_chain", Task: "ArtifactsTask", Key: root[:len(root)-1] + "0", Status: runs.Done, Artifacts: arts(600)},
			{Chain: "data_chain", Task: "ArtifactsTask", Key: root[:len(root)-1] + "1", Status: runs.Done, Artifacts: arts(10)},
		}}
	ctx := context.Background()
	for _, tc := range []struct {
		name        string
		from, limit int
		listed      []int // per task of the page: artifacts listed, or -1: not listed
	}{
		{name: "the first page", from: 0, limit: 100, listed: []int{maxAnswerArtifacts - 400, -1, 10}},
		{name: "a page of the task not listed", from: 1, limit: 1, listed: []int{600}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := ts.runDataPage(ctx, rec.Header(), rec.Page(tc.from, tc.limit))
			if len(d.Tasks) != len(tc.listed) {
				t.Fatalf("%d tasks in the answer; want %d", len(d.Tasks), len(tc.listed))
			}
			total := 0
			for i, td := range d.Tasks {
				want := tc.listed[i]
				if want < 0 {
					wantURL := fmt.Sprintf("&tasks_from=%d&tasks_limit=1", td.Index)
					if len(td.Artifacts) != 0 || td.ArtifactsNotListed != len(rec.Tasks[td.Index].Artifacts) || !strings.HasSuffix(td.ArtifactsURL, wantURL) {
						t.Errorf("task %d: %d listed, %d not listed, at %q; want none listed, %d not, at a URL ending %s",
							td.Index, len(td.Artifacts), td.ArtifactsNotListed, td.ArtifactsURL, len(rec.Tasks[td.Index].Artifacts), wantURL)
					}
					continue
				}
				total += len(td.Artifacts)
				if len(td.Artifacts) != want || td.ArtifactsNotListed != 0 || td.ArtifactsURL != "" {
					t.Errorf("task %d: %d artifacts listed, %d not; want %d listed", td.Index, len(td.Artifacts), td.ArtifactsNotListed, want)
				}
				for _, a := range td.Artifacts {
					if a.URL == "" {
						t.Fatalf("task %d: artifact %s listed without its URL", td.Index, a.Name)
					}
				}
			}
			if total > maxAnswerArtifacts {
				t.Errorf("%d artifacts listed; want at most %d", total, maxAnswerArtifacts)
			}
			// Listed once: the record's own list does not come along as well.
			b, err := json.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(string(b), `"name":"parts/`); n != total {
				t.Errorf("the answer's JSON names %d artifacts; want the %d listed", n, total)
			}
		})
	}
}

// A task of a record older than the bound, with more artifacts than an answer lists, lists
// the first maxAnswerArtifacts and counts the others, with no link to a page that would list
// no more.
func TestATaskOverTheArtifactBoundListsWhatFits(t *testing.T) {
	ts := newTestServer(t)
	const root = "chains/testchains/data_chain/ArtifactsTask/ffeeddccbbaa99887766554433221100"
	var arts []runs.Artifact
	for i := range maxAnswerArtifacts + 200 {
		arts = append(arts, runs.Artifact{Name: fmt.Sprintf("parts/%d.txt", i), Size: 1, ContentType: "text/plain"})
	}
	rec := runs.Record{RunID: "r2", Key: root, Type: "testchains", Chain: "data_chain", Task: "ArtifactsTask", Status: runs.Done,
		Tasks: []runs.TaskState{{Chain: "data_chain", Task: "ArtifactsTask", Key: root, Status: runs.Done, Artifacts: arts}}}
	d := ts.runDataPage(context.Background(), rec.Header(), rec.Page(0, 100))
	if td := d.Tasks[0]; len(td.Artifacts) != maxAnswerArtifacts || td.ArtifactsNotListed != 200 || td.ArtifactsURL != "" {
		t.Errorf("%d listed, %d not, at %q; want %d listed, 200 not, no link", len(td.Artifacts), td.ArtifactsNotListed, td.ArtifactsURL, maxAnswerArtifacts)
	}
}
