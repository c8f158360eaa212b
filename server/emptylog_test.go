package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"nectar/server/runs"
	"nectar/targets"
)

// A task that writes no log stores none (one file less per task of a big graph, one PUT less
// on S3), unless it is its run's root; no answer signs a URL to a log that is not there, and a
// log an earlier failed run left is not kept beside a later run's out. On the local folder and
// on MinIO through both SDKs.
func TestATaskThatLogsNothingStoresNoLog(t *testing.T) {
	targets := map[string]string{"local": ""}
	minioEnv(t, minioSrv)
	for name, target := range remoteTargets(minioSrv, fmt.Sprint("emptylog-", time.Now().UnixNano())) {
		targets[name] = target
	}
	for name, target := range targets {
		t.Run(name, func(t *testing.T) {
			ts := newTestServer(t, func(c *Config) {
				if target != "" {
					c.Target, c.Getenv = target, getenvMap(minioSrv)
				}
			})
			silentTasksStoreNoLog(t, ts)
		})
	}
}

func silentTasksStoreNoLog(t *testing.T, ts *testServer) {
	// A fan-in: the leaves log nothing, nor does the join, which is the root.
	j := ts.post(t, "/api/chains/testchains/fanin_chain/JoinTask?leaves=3&salt=quiet&wait=30s")
	if j.Code != 200 || *j.run.JobStatus != runs.Done {
		t.Fatalf("JoinTask = %d %v %v", j.Code, j.run.JobStatus, j.run.Error)
	}
	if code, body := fetch(t, j.run.LogURL); code != 200 || body != "" {
		t.Errorf("the root's log_url = %d %q, want its empty log", code, body)
	}
	if len(j.run.Tasks) != 4 || j.run.Tasks[0].LogEmpty {
		t.Fatalf("tasks = %+v, want the root (with its log) and 3 leaves", j.run.Tasks)
	}
	leaf := j.run.Tasks[1].Key
	for _, task := range j.run.Tasks[1:] {
		if !task.LogEmpty || task.LogURL != "" || storeHas(t, ts.Store(), task.Key+"/log") || !storeHas(t, ts.Store(), task.Key+"/out") {
			t.Errorf("leaf %s: log_empty %v, log_url %q, log stored %v; want log_empty, no URL, no log, and its out",
				task.Key, task.LogEmpty, task.LogURL, storeHas(t, ts.Store(), task.Key+"/log"))
		}
	}
	// Where the store keeps metadata, each out says whether a log goes with it: finding the
	// out answers both (no look for the log).
	_, marks := ts.Store().(targets.MetaCommitter)
	if marks {
		for i, task := range j.run.Tasks {
			if got, want := outLogMeta(t, ts.Store(), task.Key), map[bool]string{true: "stored", false: "none"}[i == 0]; got != want {
				t.Errorf("%s's out says nectar-log %q, want %q", task.Task, got, want)
			}
		}
	}

	// A leaf POSTed on its own is done at once; its answer links no log.
	idx := j.run.Tasks[1].Params
	var p struct{ Index int }
	if err := json.Unmarshal(idx, &p); err != nil {
		t.Fatal(err)
	}
	l := ts.post(t, fmt.Sprintf("/api/chains/testchains/fanin_chain/LeafTask?index=%d&salt=quiet", p.Index))
	if l.Code != 200 || l.run.Key != leaf || l.run.LogURL != "" || l.run.ResourceURL == "" || l.run.ParamsURL == "" {
		t.Errorf("POST of a done leaf = %d, key %s, log_url %q, resource_url %q, params_url %q; want 200 for %s with no log_url",
			l.Code, l.run.Key, l.run.LogURL, l.run.ResourceURL, l.run.ParamsURL, leaf)
	}
	// Again in the next second (answers are kept for one): the done cache says it has no log.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
	if again := ts.post(t, fmt.Sprintf("/api/chains/testchains/fanin_chain/LeafTask?index=%d&salt=quiet", p.Index)); again.Code != 200 || again.run.LogURL != "" {
		t.Errorf("a second POST of the done leaf (seen done before) = %d, links its log: %q", again.Code, again.run.LogURL)
	}
	// Rerun (force) as a root, it stores a log: the POSTs after it link it (what the done
	// cache and the answers of the second before said is forgotten).
	leafPath := fmt.Sprintf("/api/chains/testchains/fanin_chain/LeafTask?index=%d&salt=quiet", p.Index)
	if f := ts.post(t, leafPath+"&force=true&wait=20s"); f.Code != 200 || *f.run.JobStatus != runs.Done || f.run.LogURL == "" {
		t.Errorf("the forced rerun of the leaf = %d %v, log_url %q; want DONE with its log", f.Code, f.run.JobStatus, f.run.LogURL)
	}
	ts.waitRetired(t, leaf)
	forced := leaf
	if again := ts.post(t, leafPath); again.Code != 200 || again.run.LogURL == "" {
		t.Errorf("a POST of the leaf after its forced rerun = %d, log_url %q; want its log", again.Code, again.run.LogURL)
	} else if code, body := fetch(t, again.run.LogURL); code != 200 || body != "" {
		t.Errorf("the leaf's log after its forced rerun = %d %q, want 200, empty", code, body)
	}

	// Its status (only its out and its log now, and its forced run's record) links its log.
	if st := ts.do(t, http.MethodGet, ts.statusURL(leaf)); st.Code != 200 || *st.run.JobStatus != runs.Done || st.run.LogURL == "" {
		t.Errorf("status of the rerun leaf = %d, log_url %q; want DONE with its log", st.Code, st.run.LogURL)
	}
	// The status of a leaf made as a dependency only (no record of its own, only its out)
	// links no log.
	leaf = j.run.Tasks[2].Key
	if st := ts.do(t, http.MethodGet, ts.statusURL(leaf)); st.Code != 200 || *st.run.JobStatus != runs.Done || st.run.LogURL != "" ||
		len(st.run.Tasks) != 1 || !st.run.Tasks[0].LogEmpty || st.run.Tasks[0].Task != "LeafTask" {
		t.Errorf("status of the done leaf = %d, log_url %q, tasks %+v; want DONE with LeafTask, log_empty, no log_url", st.Code, st.run.LogURL, st.run.Tasks)
	}
	// Its live log URL, once it ended, serves its log: complete, and empty.
	resp, err := http.Get(ts.liveLogURL(leaf, ""))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(body) != 0 || resp.Header.Get("X-Log-Complete") != "true" {
		t.Errorf("the live log of the ended leaf = %d %q, complete %q; want 200, empty, complete", resp.StatusCode, body, resp.Header.Get("X-Log-Complete"))
	}

	// A bigger fan-in finds the 3 leaves done: they are cached, and their logs looked for.
	j4 := ts.post(t, "/api/chains/testchains/fanin_chain/JoinTask?leaves=4&salt=quiet&wait=30s")
	if *j4.run.JobStatus != runs.Done || j4.run.TaskCounts == nil || j4.run.TaskCounts.Cached != 3 {
		t.Fatalf("JoinTask of 4 = %v %+v, want 3 cached leaves", j4.run.JobStatus, j4.run.TaskCounts)
	}
	for _, task := range j4.run.Tasks[1:] {
		if hasLog := task.Key == forced; task.LogEmpty == hasLog || (task.LogURL != "") != hasLog {
			t.Errorf("leaf %s (cached %v): log_empty %v, log_url %q; want a log only for the one rerun as a root", task.Key, task.Cached, task.LogEmpty, task.LogURL)
		}
	}

	// A task that failed stores its log, which its own record links; once it passes as a
	// dependency, writing none, an empty log replaces the failure's: not shown as the log of
	// the task that passed, and the failed run's log_url still answers.
	gate := filepath.Join(t.TempDir(), "gate")
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	q := "gate=" + url.QueryEscape(gate)
	alone := ts.post(t, "/api/chains/testchains/faults_chain/QuietGateTask?wait=20s&"+q)
	if *alone.run.JobStatus != runs.Failed {
		t.Fatalf("QuietGateTask alone = %v, want FAILED", alone.run.JobStatus)
	}
	if code, body := fetch(t, alone.run.LogURL); code != 200 || !strings.Contains(body, "gate "+gate+" is closed") {
		t.Errorf("the failed task's log = %d %q", code, body)
	}
	ts.waitRetired(t, alone.run.Key)
	path := "/api/chains/testchains/faults_chain/BehindQuietGateTask?wait=20s&" + q
	if first := ts.post(t, path); *first.run.JobStatus != runs.Failed || len(first.run.Tasks) != 2 || first.run.Tasks[1].Status != runs.Failed {
		t.Fatalf("first run = %v %+v, want QuietGateTask failed", first.run.JobStatus, first.run.Tasks)
	}
	if err := os.Remove(gate); err != nil {
		t.Fatal(err)
	}
	second := ts.post(t, path)
	if *second.run.JobStatus != runs.Done || len(second.run.Tasks) != 2 {
		t.Fatalf("second run = %v %v", second.run.JobStatus, second.run.Error)
	}
	dep := second.run.Tasks[1]
	old := ts.do(t, http.MethodGet, alone.run.StatusURL)
	if !marks { // the local folder: an empty log replaced the failure's
		if dep.LogEmpty || dep.LogURL == "" {
			t.Errorf("QuietGateTask passed where a log was: log_empty %v, log_url %q; want the empty log that replaced it", dep.LogEmpty, dep.LogURL)
		} else if code, body := fetch(t, dep.LogURL); code != 200 || body != "" {
			t.Errorf("QuietGateTask passed: its log = %d %q, want empty (not the failed run's)", code, body)
		}
		if code, body := fetch(t, old.run.LogURL); old.run.LogURL == "" || code != 200 || body != "" {
			t.Errorf("the failed run's status: log_url %q = %d %q; want the log there now (empty)", old.run.LogURL, code, body)
		}
		failuresAfterASilentPass(t, ts, marks, dep.Key, gate, path)
		return
	}
	// S3, MinIO: the out says it has no log; the failure's log stays the failed runs' to read.
	if !dep.LogEmpty || dep.LogURL != "" || outLogMeta(t, ts.Store(), dep.Key) != "none" {
		t.Errorf("QuietGateTask passed where a log was: log_empty %v, log_url %q, its out says %q; want no log, and an out that says so",
			dep.LogEmpty, dep.LogURL, outLogMeta(t, ts.Store(), dep.Key))
	}
	if code, body := fetch(t, old.run.LogURL); code != 200 || !strings.Contains(body, "gate "+gate+" is closed") {
		t.Errorf("the failed run's status: log_url %q = %d %q; want the failure's log, still there", old.run.LogURL, code, body)
	}
	// Whoever finds the task done now links no log: a POST, its live log, a run that finds it cached.
	if again := ts.post(t, "/api/chains/testchains/faults_chain/QuietGateTask?"+q); again.Code != 200 || again.run.LogURL != "" {
		t.Errorf("a POST of the passed QuietGateTask = %d, log_url %q; want 200 and no log (the key's is the failure's)", again.Code, again.run.LogURL)
	}
	resp, err = http.Get(ts.liveLogURL(dep.Key, ""))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(body) != 0 || resp.Header.Get("X-Log-Complete") != "true" {
		t.Errorf("the live log of the passed QuietGateTask = %d %q; want 200, empty, complete (not the failure's)", resp.StatusCode, body)
	}
	third := ts.post(t, path+"&force=true")
	if *third.run.JobStatus != runs.Done || len(third.run.Tasks) != 2 || !third.run.Tasks[1].Cached || third.run.Tasks[1].LogURL != "" {
		var got []string
		for _, task := range third.run.Tasks {
			got = append(got, fmt.Sprintf("%s cached=%v log_empty=%v log_url=%v", task.Task, task.Cached, task.LogEmpty, task.LogURL != ""))
		}
		t.Errorf("a forced run of its dependent = %v, tasks %q; want QuietGateTask cached, with no log_url", *third.run.JobStatus, got)
	}
	failuresAfterASilentPass(t, ts, marks, dep.Key, gate, path)
}

// failuresAfterASilentPass: QuietGateTask (at key) passed writing no log, where a failure's
// log was. A forced rerun that fails then shows its log at the task's live log URL (the out
// is the earlier run's); and a key that failed and passed only as a dependency (no run record
// of its own) is answered with no log of the failure as the log of the task that passed.
func failuresAfterASilentPass(t *testing.T, ts *testServer, marks bool, key, gate, path string) {
	t.Helper()
	// (S3 keeps whole seconds: the rerun's log must be of a later second than the out.)
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(1100 * time.Millisecond)))
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	q := "gate=" + url.QueryEscape(gate)
	forced := ts.post(t, "/api/chains/testchains/faults_chain/QuietGateTask?force=true&wait=20s&"+q)
	if *forced.run.JobStatus != runs.Failed || forced.run.Key != key {
		t.Fatalf("the forced rerun of %s = %v, want FAILED", key, forced.run.JobStatus)
	}
	if code, body := fetch(t, ts.liveLogURL(key, "")); code != 200 || !strings.Contains(body, "gate "+gate+" is closed") {
		t.Errorf("the live log of the failed forced rerun = %d %q; want its failure", code, body)
	}
	if code, body := fetch(t, forced.run.LogURL); code != 200 || !strings.Contains(body, "gate "+gate+" is closed") {
		t.Errorf("the failed forced rerun's log_url = %d %q; want its failure", code, body)
	}

	// Failed, then passed, only as a dependency: no record at its key.
	gate2 := gate + "-2"
	if err := os.WriteFile(gate2, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	path2 := strings.Replace(path, url.QueryEscape(gate), url.QueryEscape(gate2), 1)
	if first := ts.post(t, path2); *first.run.JobStatus != runs.Failed || len(first.run.Tasks) != 2 || first.run.Tasks[1].Status != runs.Failed {
		t.Fatalf("a run behind a closed gate = %v, want QuietGateTask failed", first.run.JobStatus)
	}
	if err := os.Remove(gate2); err != nil {
		t.Fatal(err)
	}
	passed := ts.post(t, path2)
	if *passed.run.JobStatus != runs.Done || len(passed.run.Tasks) != 2 {
		t.Fatalf("the run behind the open gate = %v %v", passed.run.JobStatus, passed.run.Error)
	}
	depKey := passed.run.Tasks[1].Key
	st := ts.do(t, http.MethodGet, ts.statusURL(depKey))
	if st.Code != 200 || *st.run.JobStatus != runs.Done {
		t.Fatalf("status of the passed dependency = %d %v", st.Code, st.run.JobStatus)
	}
	code, body := 0, ""
	if st.run.LogURL != "" {
		code, body = fetch(t, st.run.LogURL)
	}
	switch {
	case marks && (st.run.LogURL != "" || len(st.run.Tasks) != 1 || !st.run.Tasks[0].LogEmpty):
		t.Errorf("status of a dependency that failed, then passed writing no log: log_url %q, tasks %+v; want no log", st.run.LogURL, st.run.Tasks)
	case !marks && (st.run.LogURL == "" || code != 200 || body != ""):
		t.Errorf("status of a dependency that failed, then passed writing no log: log_url %q = %d %q; want the empty log that replaced the failure's", st.run.LogURL, code, body)
	}
}

// outLogMeta is what the out of key says of its log (its nectar-log metadata).
func outLogMeta(t *testing.T, s targets.Store, key string) string {
	t.Helper()
	info, err := s.Stat(context.Background(), key+"/"+runs.OutName)
	if err != nil {
		t.Fatalf("Stat of %s's out: %v", key, err)
	}
	return info.Meta["nectar-log"]
}
