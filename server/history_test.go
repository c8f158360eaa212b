package server

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
	"weak"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"nectar/server/history"
	"nectar/server/history/pgtest"
	"nectar/server/history/sqlite"
	"nectar/server/runs"
)

// runsPage is the data of GET /api/runs.
type runsPage struct {
	Runs       []runItem        `json:"runs"`
	NextCursor string           `json:"next_cursor"`
	Counts     map[string]int64 `json:"counts"`
	Rebuilding bool             `json:"rebuilding"`
}

func (ts *testServer) runs(t *testing.T, query string) runsPage {
	t.Helper()
	a := ts.do(t, http.MethodGet, "/api/runs?"+query)
	if a.Code != http.StatusOK {
		t.Fatalf("GET /api/runs?%s = %d %s", query, a.Code, a.Message)
	}
	var p runsPage
	if err := json.Unmarshal(a.Data, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

func (ts *testServer) flushHistory(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ts.History().Flush(ctx); err != nil {
		t.Fatalf("flushing the history: %v", err)
	}
}

// postWith posts with extra headers and waits for the run to end.
func (ts *testServer) postWait(t *testing.T, path string, header http.Header) answer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, ts.url+path, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	a := answer{Code: resp.StatusCode}
	json.Unmarshal(body, &a)
	json.Unmarshal(a.Data, &a.run)
	return a
}

// makeHistory runs a small, varied history on ts: runs by API and UI, a failure, a forced rerun
// (two runs of one key), cache hits and joins.
func makeHistory(t *testing.T, ts *testServer) {
	t.Helper()
	for _, name := range []string{"ada", "grace", "50%_off"} {
		if a := ts.postWait(t, "/api/chains/testchains/hello_chain/HelloTask?wait=20s&name="+url.QueryEscape(name), nil); a.run.JobStatus == nil || *a.run.JobStatus != "DONE" {
			t.Fatalf("HelloTask %s = %d %s", name, a.Code, a.Message)
		}
	}
	ts.postWait(t, "/api/chains/testchains/hello_chain/UpperTask?wait=20s&name=linus", http.Header{TriggerHeader: {"ui"}})
	ts.postWait(t, "/api/chains/testchains/faults_chain/FailTask?wait=20s&message=boom", nil)
	ts.postWait(t, "/api/chains/testchains/hello_chain/HelloTask?wait=20s&name=ada&force=true", nil) // a second run of the key
	for range 3 {
		if a := ts.post(t, "/api/chains/testchains/hello_chain/HelloTask?name=grace"); a.Code != http.StatusOK {
			t.Fatalf("cache hit = %d", a.Code)
		}
	}
	ts.flushHistory(t)
}

func TestRunHistoryListsEveryRun(t *testing.T) {
	ts := newTestServer(t)
	makeHistory(t, ts)

	all := ts.runs(t, "counts=true")
	if len(all.Runs) != 6 {
		t.Fatalf("GET /api/runs lists %d runs, want 6: %+v", len(all.Runs), all.Runs)
	}
	for i := 1; i < len(all.Runs); i++ {
		if all.Runs[i].SubmittedAt.After(all.Runs[i-1].SubmittedAt) {
			t.Errorf("runs not newest first: %s after %s", all.Runs[i].SubmittedAt, all.Runs[i-1].SubmittedAt)
		}
	}
	if diff := cmp.Diff(map[string]int64{"DONE": 5, "FAILED": 1}, all.Counts); diff != "" {
		t.Errorf("counts mismatch (-want +got):\n%s", diff)
	}
	newest := all.Runs[0]
	if newest.Task != "HelloTask" || newest.Params != `{"name":"ada"}` || newest.Status != "DONE" ||
		newest.Tasks.Total != 1 || newest.Tasks.Done != 1 || newest.StartedAt == nil || newest.FinishedAt == nil || newest.StatusURL == "" {
		t.Errorf("newest run = %+v, want the forced HelloTask(ada), DONE, with times and a status URL", newest)
	}
	// Filters, each through the API.
	tests := []struct {
		query string
		want  int
		check func(runItem) bool
	}{
		{"status=FAILED", 1, func(r runItem) bool { return r.Task == "FailTask" && r.Error == "FailTask failed: boom" }},
		{"task=UpperTask", 1, func(r runItem) bool { return r.Trigger == "ui" && r.Tasks.Total == 2 && r.Tasks.Done == 2 }},
		{"chain=hello_chain&task=HelloTask", 4, func(r runItem) bool { return r.Chain == "hello_chain" }},
		{"trigger=api", 5, func(r runItem) bool { return r.Trigger == "api" }},
		{"q=GRACE", 1, func(r runItem) bool { return r.Params == `{"name":"grace"}` && r.Hits == 3 }},
		{"q=" + url.QueryEscape("50%_"), 1, func(r runItem) bool { return r.Params == `{"name":"50%_off"}` }},
		{"key=" + url.QueryEscape(newest.Key), 2, func(r runItem) bool { return r.Key == newest.Key }},
		{"type=nope", 0, nil},
		{"since=" + url.QueryEscape(newest.SubmittedAt.Format(time.RFC3339Nano)), 1, func(r runItem) bool { return r.RunID == newest.RunID }},
		{"until=" + url.QueryEscape(newest.SubmittedAt.Format(time.RFC3339Nano)), 5, func(r runItem) bool { return r.RunID != newest.RunID }},
	}
	for _, tt := range tests {
		got := ts.runs(t, tt.query)
		if len(got.Runs) != tt.want {
			t.Errorf("GET /api/runs?%s lists %d runs, want %d", tt.query, len(got.Runs), tt.want)
			continue
		}
		for _, r := range got.Runs {
			if !tt.check(r) {
				t.Errorf("GET /api/runs?%s: unexpected run %+v", tt.query, r)
			}
		}
	}
	// Pages of 2 cover every run once, in order.
	var ids []string
	for q := "limit=2"; ; {
		p := ts.runs(t, q)
		for _, r := range p.Runs {
			ids = append(ids, r.RunID)
		}
		if p.NextCursor == "" {
			break
		}
		q = "limit=2&cursor=" + url.QueryEscape(p.NextCursor)
	}
	var want []string
	for _, r := range all.Runs {
		want = append(want, r.RunID)
	}
	if diff := cmp.Diff(want, ids); diff != "" {
		t.Errorf("paging by 2 mismatch (-want +got):\n%s", diff)
	}
	// One run by id; a bad request names its parameter.
	if a := ts.do(t, http.MethodGet, "/api/runs/"+newest.RunID); a.Code != http.StatusOK {
		t.Errorf("GET /api/runs/%s = %d %s", newest.RunID, a.Code, a.Message)
	}
	for path, want := range map[string]string{
		"/api/runs/nosuchrun":                         `no run "nosuchrun" in the history`,
		"/api/runs?limit=501":                         `parameter "limit": "501" must be between 1 and 500`,
		"/api/runs?status=done":                       `parameter "status": "done" is not one of PENDING, RUNNING, DONE, FAILED, CANCELLED`,
		"/api/runs?task=a%00b":                        `parameter "task": "a\x00b" is not text`,
		"/api/runs?q=%FF":                             `parameter "q": is not valid UTF-8`,
		"/api/runs/%FF":                               `parameter "run_id": "\xff" is not a run id`,
		"/api/runs?status=FAILED%":                    `parameter "status": "status=FAILED%" has a '%' that starts no valid escape`,
		"/api/runs?status=FAILED;":                    `parameter "status": "status=FAILED;" contains ';'`,
		"/api/runs?cursor=xyz":                        `parameter "cursor": "xyz" is not a cursor from a previous page`,
		"/api/runs?since=yesterday":                   `parameter "since": "yesterday" is not a date`,
		"/api/runs?tsak=HelloTask":                    `parameter "tsak": is not a filter of /api/runs`,
		"/api/runs?since=2026-02-02&until=2026-01-01": `parameter "since": "2026-02-02" must be before until`,
	} {
		a := ts.do(t, http.MethodGet, path)
		if a.Code/100 != 4 || !strings.Contains(a.Message, want) {
			t.Errorf("GET %s = %d %q, want a 4xx saying %q", path, a.Code, a.Message, want)
		}
	}
}

// allEntries reads a whole index, newest first.
func allEntries(t *testing.T, d history.Driver) []history.Entry {
	t.Helper()
	es, err := d.List(context.Background(), history.ListParams{Limit: 10_000})
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// nectar reindex (RebuildHistory) gives the index the live server built, from the store alone:
// a local folder, and a bucket through each SDK.
func TestReindexEqualsTheLiveIndex(t *testing.T) {
	t.Run("local", func(t *testing.T) { checkReindex(t, newTestServer(t)) })
	minioEnv(t, minioSrv)
	for name, target := range remoteTargets(minioSrv, "reindex-"+fmt.Sprint(time.Now().UnixNano())) {
		t.Run(name, func(t *testing.T) {
			checkReindex(t, newTestServer(t, func(c *Config) { c.Target = target; c.Getenv = getenvMap(minioSrv) }))
		})
	}
}

func checkReindex(t *testing.T, ts *testServer) {
	makeHistory(t, ts)
	live := allEntries(t, ts.History().Driver())

	d, err := sqlite.Open(filepath.Join(t.TempDir(), "rebuilt.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, _, err := d.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	n, err := RebuildHistory(context.Background(), ts.Store(), d, slog.New(slog.DiscardHandler))
	if err != nil || n != len(live) {
		t.Fatalf("RebuildHistory = %d, %v; want %d runs", n, err, len(live))
	}
	rebuilt := allEntries(t, d)
	// Hits are counted by the live index only (they are not in the store).
	if diff := cmp.Diff(live, rebuilt, cmpopts.IgnoreFields(history.Entry{}, "Hits")); diff != "" {
		t.Errorf("rebuilt index differs from the live one (-live +rebuilt):\n%s", diff)
	}
}

// The history survives a restart; a server whose index file is gone rebuilds it at start.
func TestHistorySurvivesRestartAndRebuildsWhenMissing(t *testing.T) {
	target := t.TempDir()
	first := newTestServer(t, func(c *Config) { c.Target = target })
	makeHistory(t, first)
	want := allEntries(t, first.History().Driver())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := first.Close(ctx); err != nil {
		t.Fatal(err)
	}

	second := newTestServer(t, func(c *Config) { c.Target = target })
	if got := second.runs(t, "limit=100"); len(got.Runs) != len(want) || got.Rebuilding {
		t.Errorf("after a restart: %d runs (rebuilding %v), want %d from the kept index", len(got.Runs), got.Rebuilding, len(want))
	}
	second.Close(ctx)

	for _, f := range []string{".history.db", ".history.db-wal", ".history.db-shm"} {
		os.Remove(filepath.Join(target, f))
	}
	third := newTestServer(t, func(c *Config) { c.Target = target })
	third.waitRebuilt(t, len(want))
	if diff := cmp.Diff(want, allEntries(t, third.History().Driver()), cmpopts.IgnoreFields(history.Entry{}, "Hits")); diff != "" {
		t.Errorf("index rebuilt at start differs (-before +after):\n%s", diff)
	}
}

// The same history lives in PostgreSQL with NECTAR_DATABASE_URL, shared by two servers.
func TestRunHistoryInPostgreSQL(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	target := t.TempDir()
	a := newTestServer(t, func(c *Config) { c.Target, c.DatabaseURL = target, dbURL })
	b := newTestServer(t, func(c *Config) { c.Target, c.DatabaseURL = target, dbURL })
	makeHistory(t, a)
	b.postWait(t, "/api/chains/testchains/hello_chain/HelloTask?wait=20s&name=from-b", nil)
	b.flushHistory(t)
	for _, ts := range []*testServer{a, b} {
		p := ts.runs(t, "counts=true")
		if len(p.Runs) != 7 || p.Counts["DONE"] != 6 || p.Counts["FAILED"] != 1 {
			t.Errorf("server %s lists %d runs %v, want the 7 both made", ts.url, len(p.Runs), p.Counts)
		}
	}
	if got := a.runs(t, "q=from-b"); len(got.Runs) != 1 {
		t.Errorf("a run made on b is not in a's list: %+v", got.Runs)
	}
}

// A history that cannot be written never fails a run: it is counted in /metrics.
func TestHistoryFailureNeverFailsARun(t *testing.T) {
	ts := newTestServer(t)
	ts.History().Driver().Close() // every write now fails
	a := ts.postWait(t, "/api/chains/testchains/hello_chain/HelloTask?wait=20s&name=nodb", nil)
	if a.run.JobStatus == nil || *a.run.JobStatus != "DONE" {
		t.Fatalf("run with a broken history = %d %s", a.Code, a.Message)
	}
	if err := ts.History().Flush(context.Background()); err == nil {
		t.Fatal("a flush to a closed database succeeded")
	}
	body := fetchText(t, ts.url+"/metrics")
	if !strings.Contains(body, "nectar_history_errors_total") || strings.Contains(body, "nectar_history_errors_total 0\n") {
		t.Errorf("/metrics does not count the failed history writes")
	}
	if a := ts.do(t, http.MethodGet, "/api/runs"); a.Code != http.StatusServiceUnavailable {
		t.Errorf("GET /api/runs with the database gone = %d, want 503", a.Code)
	}
}

func fetchText(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// A task's ctx.Progress and ctx.Status show in the status answer while it runs, are kept in the
// record when it ends, and reach the run history.
func TestProgressIsLiveAndKept(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.MonitorInterval = 100 * time.Millisecond })
	a := ts.post(t, "/api/chains/testchains/faults_chain/ProgressTask?count=15&every=100ms")
	if a.Code != http.StatusAccepted {
		t.Fatalf("POST = %d %s", a.Code, a.Message)
	}
	var seen []int64
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		st := ts.do(t, http.MethodGet, a.run.StatusURL).run
		if len(st.Tasks) > 0 && st.Tasks[0].Progress != nil && st.Tasks[0].Status == "RUNNING" {
			p := st.Tasks[0].Progress
			if len(seen) == 0 || seen[len(seen)-1] != p.Done {
				seen = append(seen, p.Done)
			}
			// Progress and Status are two calls of the task: a read may fall between them.
			if p.Total != 15 || (p.Status != fmt.Sprintf("step %d of 15", p.Done) && p.Status != fmt.Sprintf("step %d of 15", p.Done-1)) {
				t.Fatalf("live progress = %+v", p)
			}
		}
		if st.JobStatus != nil && st.JobStatus.Final() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("ProgressTask did not finish")
		}
	}
	if len(seen) < 3 {
		t.Errorf("saw the progress move through %v while running; want several steps", seen)
	}
	final := ts.do(t, http.MethodGet, a.run.StatusURL).run
	if p := final.Tasks[0].Progress; p == nil || p.Done != 15 || p.Fraction != 1 || p.Status != "step 15 of 15" {
		t.Errorf("progress kept in the record = %+v", p)
	}
	ts.flushHistory(t)
	r := ts.runs(t, "task=ProgressTask").Runs
	if len(r) != 1 || r[0].Progress != 1 || r[0].StatusLine != "step 15 of 15" {
		t.Errorf("history row = %+v", r)
	}
}

// A server whose index is older than its schema (here: a database at version 0 with a stale
// table of its own) migrates it and rebuilds it from the store at start.
func TestOlderIndexIsMigratedAndRebuilt(t *testing.T) {
	target := t.TempDir()
	first := newTestServer(t, func(c *Config) { c.Target = target })
	makeHistory(t, first)
	want := allEntries(t, first.History().Driver())
	first.Close(context.Background())
	// Wind the schema back: drop the table and the migration rows, as before version 1.
	d, err := sqlite.Open(filepath.Join(target, ".history.db"))
	if err != nil {
		t.Fatal(err)
	}
	d.Reset(context.Background())
	d.Close()
	dropSchema(t, filepath.Join(target, ".history.db"))

	second := newTestServer(t, func(c *Config) { c.Target = target })
	second.waitRebuilt(t, len(want))
}

// waitRebuilt waits until the server's start-up rebuild is over and lists n runs.
func (ts *testServer) waitRebuilt(t *testing.T, n int) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		p := ts.runs(t, "limit=100")
		if !p.Rebuilding && len(p.Runs) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("index not rebuilt at start: %d runs (want %d), rebuilding %v", len(p.Runs), n, p.Rebuilding)
		}
	}
}

// dropSchema takes an index back to before its first migration.
func dropSchema(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{"DROP TABLE runs", "DELETE FROM history_migrations"} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// A client that triggers a run and asks for it by key at once finds it (the CLI's trigger,
// then status): a history read first writes what changed since the write loop's last batch.
func TestARunIsListedAsSoonAsItsPOSTIsAnswered(t *testing.T) {
	ts := newTestServer(t)
	for i := range 5 {
		a := ts.post(t, fmt.Sprintf("/api/chains/testchains/hello_chain/HelloTask?name=listed-%d", i))
		if a.Code != http.StatusAccepted && a.Code != http.StatusOK {
			t.Fatalf("POST = %d %s", a.Code, a.Message)
		}
		got := ts.runs(t, "key="+url.QueryEscape(a.run.Key))
		if len(got.Runs) != 1 || got.Runs[0].Key != a.run.Key || got.Runs[0].StatusURL == "" {
			t.Fatalf("GET /api/runs?key=<the key just POSTed> lists %d runs %+v; want that run, with its status URL", len(got.Runs), got.Runs)
		}
	}
}

// A run that ended is not held for the run history: the index keeps its entry until it is
// written, not the run with its every task. (Held until the next flush, a big run's tasks were
// live beside the next run's; with a database that keeps failing, every run's, for good.)
func TestTheHistoryHoldsAnEndedRunsEntryNotTheRun(t *testing.T) {
	ts := newTestServer(t)
	ts.History().Driver().Close() // every write fails: what the index holds, it keeps
	r, _, err := ts.Server.runs.Submit(runs.Spec{Type: "testchains", Chain: "fanin_chain", Task: "JoinTask",
		Params: []byte(`{"leaves":20,"salt":"held"}`)})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the run did not end")
	}
	if rec := r.Snapshot(); rec.Status != runs.Done || len(rec.Tasks) != 21 {
		t.Fatalf("the run ended %s with %d tasks, want DONE with 21", rec.Status, len(rec.Tasks))
	}
	key := r.Key()
	for start := time.Now(); ; time.Sleep(5 * time.Millisecond) {
		if _, active := ts.Server.runs.Active(key); !active {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("the ended run is still active")
		}
	}
	held := weak.Make(r)
	r = nil
	for i := 0; i < 100 && held.Value() != nil; i++ {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if held.Value() != nil {
		t.Fatal("an ended run is still held (the run history's pending change holds it)")
	}
	if err := ts.History().Flush(context.Background()); err == nil {
		t.Fatal("a flush to a closed database succeeded")
	}
}
