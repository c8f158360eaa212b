package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"nectar/server/runs"
)

// A graph over NECTAR_MAX_TASKS is refused with a 400 that names the task and the limit, with
// or without wait, and no task of it runs; one within the limit runs.
func TestGraphOverTheLimitIsRefused(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.MaxTasks = 50 })
	for _, path := range []string{
		"/api/chains/testchains/fanin_chain/JoinTask?leaves=60",
		"/api/chains/testchains/fanin_chain/JoinTask?leaves=50&salt=big&wait=10s", // 51 tasks with the join
	} {
		a := ts.post(t, path)
		want := "the task graph of JoinTask has more than 50 tasks: the limit is NECTAR_MAX_TASKS=50"
		if a.Code != http.StatusBadRequest || a.Message != want {
			t.Errorf("POST %s = %d %q, want 400 %q", path, a.Code, a.Message, want)
		}
	}
	if leaves, _ := os.ReadDir(filepath.Join(ts.target, "chains", "testchains", "fanin_chain", "LeafTask")); len(leaves) != 0 {
		t.Errorf("a refused graph ran %d leaves", len(leaves))
	}
	ok := ts.post(t, "/api/chains/testchains/fanin_chain/JoinTask?leaves=49&wait=10s")
	if ok.Code != 200 || *ok.run.JobStatus != runs.Done || len(ok.run.Tasks) != 50 {
		t.Errorf("JoinTask with 49 leaves = %d %v, %d tasks", ok.Code, ok.run.JobStatus, len(ok.run.Tasks))
	}
	if !strings.Contains(ok.Message, "done") {
		t.Errorf("message %q", ok.Message)
	}
}

// A run of many tasks: its status answer counts them all, lists a page of them and the failed
// ones outside it, and links to the next page, which lists the rest; a bad page is a 400; a
// record rewritten in the store (by another server) is read again, not served stale from the
// cache.
func TestStatusOfABigRunIsPaged(t *testing.T) {
	ts := newTestServer(t)
	const n = 2500
	key := runs.Key("testchains", "fanin_chain", "JoinTask", []byte(`{"leaves":2499,"salt":"paged"}`))
	rec := runs.Record{RunID: "0123456789ab", Key: key, Type: "testchains", Chain: "fanin_chain", Task: "JoinTask",
		Params: []byte(`{"leaves":2499,"salt":"paged"}`), Status: runs.Failed, Error: "LeafTask failed: boom"}
	for i := range n {
		st := runs.TaskState{Chain: "fanin_chain", Task: "LeafTask", Key: fmt.Sprintf("%s-leaf-%d", key, i), Status: runs.Done, Cached: true}
		switch {
		case i == 0:
			st.Task, st.Key, st.Status, st.Cached = "JoinTask", key, runs.UpstreamFailed, false
		case i%500 == 7:
			st.Status, st.Cached, st.Error = runs.Failed, false, "boom"
		}
		rec.Tasks = append(rec.Tasks, st)
	}
	put := func(rec runs.Record) {
		t.Helper()
		b, _ := json.Marshal(rec)
		if err := ts.Store().Put(context.Background(), key+"/"+runs.RecordName, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	put(rec)

	first := ts.do(t, http.MethodGet, ts.statusURL(key))
	if first.Code != 200 || first.run.TaskCounts == nil {
		t.Fatalf("status = %d %q", first.Code, first.Message)
	}
	if c := *first.run.TaskCounts; c.Total != n || c.Failed != 5 || c.UpstreamFailed != 1 || c.Done != n-6 {
		t.Errorf("task_counts = %+v", c)
	}
	if len(first.run.Tasks) != runs.DefaultTaskPage || first.run.Tasks[99].Index != 99 || !strings.Contains(first.run.TasksNextURL, "tasks_from=100&tasks_limit=100") {
		t.Fatalf("first page: %d tasks, next %q", len(first.run.Tasks), first.run.TasksNextURL)
	}
	failedOutside := func(a answer) (at []int) {
		for _, f := range a.run.FailedTasks {
			at = append(at, f.Index)
		}
		return at
	}
	// The failures outside the page (the one at 7 is in it) are listed beside it.
	if failed := failedOutside(first); !slices.Equal(failed, []int{507, 1007, 1507, 2007}) {
		t.Errorf("failed_tasks at %v, want 507, 1007, 1507, 2007", failed)
	}
	most := ts.do(t, http.MethodGet, ts.statusURL(key)+"&tasks_limit=1000")
	if len(most.run.Tasks) != runs.MaxTaskPage || most.run.Tasks[999].Index != 999 || !strings.Contains(most.run.TasksNextURL, "tasks_from=1000&tasks_limit=1000") {
		t.Fatalf("tasks_limit=1000: %d tasks, next %q", len(most.run.Tasks), most.run.TasksNextURL)
	}
	if failed := failedOutside(most); !slices.Equal(failed, []int{1007, 1507, 2007}) {
		t.Errorf("tasks_limit=1000: failed_tasks at %v, want 1007, 1507, 2007", failed)
	}
	seen := len(first.run.Tasks)
	for next := first.run.TasksNextURL; next != ""; {
		page := ts.do(t, http.MethodGet, next)
		if page.Code != 200 || len(page.run.Tasks) == 0 || page.run.Tasks[0].Index != seen || page.run.TasksFrom != seen {
			t.Fatalf("page at %d = %d %q, from %d", seen, page.Code, page.Message, page.run.TasksFrom)
		}
		seen += len(page.run.Tasks)
		next = page.run.TasksNextURL
	}
	if seen != n {
		t.Errorf("the pages listed %d tasks, want %d", seen, n)
	}
	small := ts.do(t, http.MethodGet, ts.statusURL(key)+"&tasks_from=2490&tasks_limit=5")
	if len(small.run.Tasks) != 5 || small.run.Tasks[0].Index != 2490 || !strings.Contains(small.run.TasksNextURL, "tasks_from=2495") {
		t.Errorf("tasks_from=2490&tasks_limit=5: %d tasks, next %q", len(small.run.Tasks), small.run.TasksNextURL)
	}
	for q, want := range map[string]string{
		"&tasks_limit=0":     `parameter "tasks_limit": "0" must be between 1 and 1000`,
		"&tasks_limit=1001":  `parameter "tasks_limit": "1001" must be between 1 and 1000`,
		"&tasks_from=-1":     `parameter "tasks_from": "-1" must be between 0 and`,
		"&tasks_from=banana": `parameter "tasks_from"`,
		"&tasks_limit=5%zz":  `parameter "tasks_limit": "tasks_limit=5%zz" has a '%' that starts no valid escape`, // not dropped for the default
	} {
		if a := ts.do(t, http.MethodGet, ts.statusURL(key)+q); a.Code != 400 || !strings.Contains(a.Message, want) {
			t.Errorf("%s = %d %q, want 400 %q", q, a.Code, a.Message, want)
		}
	}

	rec.Error, rec.Tasks = "rewritten by another server", rec.Tasks[:3]
	put(rec)
	again := ts.do(t, http.MethodGet, ts.statusURL(key))
	if again.run.Error == nil || *again.run.Error != rec.Error || again.run.TaskCounts.Total != 3 || again.run.TasksNextURL != "" {
		t.Errorf("after the record was rewritten: error %v, counts %+v", again.run.Error, again.run.TaskCounts)
	}
}

// A run executing here answers from memory with the same paging, and its POST?wait answer is
// bounded too.
func TestBigRunAnswersArePaged(t *testing.T) {
	ts := newTestServer(t)
	a := ts.post(t, "/api/chains/testchains/fanin_chain/JoinTask?leaves=1200&salt=pagedrun&wait=60s")
	if a.Code != 200 || *a.run.JobStatus != runs.Done {
		t.Fatalf("POST = %d %v %v", a.Code, a.run.JobStatus, a.run.Error)
	}
	if len(a.run.Tasks) != runs.DefaultTaskPage || a.run.TaskCounts.Total != 1201 || a.run.TaskCounts.Done != 1201 || a.run.TasksNextURL == "" {
		t.Fatalf("POST answer: %d tasks, counts %+v, next %q", len(a.run.Tasks), a.run.TaskCounts, a.run.TasksNextURL)
	}
	rest := ts.do(t, http.MethodGet, strings.Replace(a.run.TasksNextURL, "tasks_limit=100", "tasks_limit=1000", 1))
	if len(rest.run.Tasks) != 1000 || rest.run.TasksFrom != 100 || !strings.Contains(rest.run.TasksNextURL, "tasks_from=1100") {
		t.Errorf("next page of 1000: %d tasks from %d, next %q", len(rest.run.Tasks), rest.run.TasksFrom, rest.run.TasksNextURL)
	}
	last := ts.do(t, http.MethodGet, rest.run.TasksNextURL)
	if len(last.run.Tasks) != 101 || last.run.TasksNextURL != "" {
		t.Errorf("last page: %d tasks, next %q", len(last.run.Tasks), last.run.TasksNextURL)
	}
	for _, task := range append(rest.run.Tasks, last.run.Tasks...) {
		// A leaf logs nothing: it stores no log, and no URL points at one.
		if string(task.Params) == "" || task.LogURL != "" || !task.LogEmpty {
			t.Fatalf("task %d: params %s, log_url %q, log_empty %v; want params, and no log", task.Index, task.Params, task.LogURL, task.LogEmpty)
		}
	}
}

// A graph big enough for the outs to be looked up side by side before the walk (256 tasks and
// more) reuses exactly the outs that exist: the leaves an earlier, smaller fan-in made are
// cached, the others and the join run.
func TestABigGraphReusesTheOutsThatExist(t *testing.T) {
	ts := newTestServer(t)
	if a := ts.post(t, "/api/chains/testchains/fanin_chain/JoinTask?leaves=150&salt=reuse&wait=60s"); a.Code != 200 || *a.run.JobStatus != runs.Done {
		t.Fatalf("first POST = %d %v %v", a.Code, a.run.JobStatus, a.run.Error)
	}
	b := ts.post(t, "/api/chains/testchains/fanin_chain/JoinTask?leaves=400&salt=reuse&wait=60s")
	if b.Code != 200 || *b.run.JobStatus != runs.Done {
		t.Fatalf("second POST = %d %v %v", b.Code, b.run.JobStatus, b.run.Error)
	}
	if c := *b.run.TaskCounts; c.Total != 401 || c.Done != 401 || c.Cached != 150 {
		t.Fatalf("second run's counts %+v, want 401 done of which 150 cached", c)
	}
	all := ts.do(t, http.MethodGet, b.run.StatusURL+"&tasks_limit=1000") // the answer lists 100
	if len(all.run.Tasks) != 401 {
		t.Fatalf("the status lists %d tasks, want all 401", len(all.run.Tasks))
	}
	for _, task := range all.run.Tasks {
		var p struct{ Index int }
		json.Unmarshal(task.Params, &p)
		if wantCached := task.Task == "LeafTask" && p.Index < 150; task.Cached != wantCached {
			t.Errorf("task %d (%s, index %d): cached %v, want %v", task.Index, task.Task, p.Index, task.Cached, wantCached)
		}
	}
	if out := ts.read(t, b.run.Key+"/out"); out != fmt.Sprintln(399*400/2) {
		t.Errorf("the join's out = %q, want the sum of 0..399", out)
	}
}

// NECTAR_TASK_PARALLELISM bounds the tasks of a run executing at once, and the run uses all of
// it: a task's slot is freed as its user code returns, while its files are committed. The
// spans' own clocks say how many overlapped.
func TestTaskParallelismBoundsExecutingTasks(t *testing.T) {
	for _, par := range []int{1, 3} {
		t.Run(fmt.Sprintf("parallelism %d", par), func(t *testing.T) {
			ts := newTestServer(t, func(c *Config) { c.TaskParallelism = par })
			a := ts.post(t, fmt.Sprintf("/api/chains/testchains/fanin_chain/OverlapTask?spans=12&hold=100ms&salt=par%d&wait=30s", par))
			if a.Code != 200 || *a.run.JobStatus != runs.Done {
				t.Fatalf("OverlapTask = %d %s %v", a.Code, a.Message, a.run.JobStatus)
			}
			if got := strings.TrimSpace(ts.read(t, a.run.Key+"/out")); got != fmt.Sprint(par) {
				t.Errorf("at most %s spans ran at once, want %d", got, par)
			}
		})
	}
}
