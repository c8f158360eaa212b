package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// pagedRun serves the status of a run of n tasks as the server does: a page of tasks_limit
// (default 100) from tasks_from, with tasks_next_url, and the failed and running tasks outside
// the page. Task i is named name(i), failed when status(i) says so.
func pagedRun(t *testing.T, n int, name, status func(int) string) *httptest.Server {
	t.Helper()
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("signature") != "sig" {
			http.Error(w, `{"status":403,"message":"bad signature"}`, http.StatusForbidden)
			return
		}
		from, _ := strconv.Atoi(q.Get("tasks_from"))
		limit := 100
		if v := q.Get("tasks_limit"); v != "" {
			limit, _ = strconv.Atoi(v)
		}
		task := func(i int) map[string]any {
			return map[string]any{"task": name(i), "key": fmt.Sprintf("k%d", i), "status": status(i), "log_url": fmt.Sprintf("%s/log/%d", srv.URL, i)}
		}
		d := map[string]any{"key": "k0", "job_status": "FAILED", "status_url": srv.URL + "/api/chainstatus?chain=k0&signature=sig",
			"task_counts": map[string]int{"total": n}, "tasks_from": from}
		var tasks, failed, running []map[string]any
		for i := range n {
			switch {
			case i >= from && i < from+limit:
				tasks = append(tasks, task(i))
			case status(i) == "FAILED":
				failed = append(failed, task(i))
			case status(i) == "RUNNING":
				running = append(running, task(i))
			}
		}
		d["tasks"], d["failed_tasks"], d["running_tasks"] = tasks, failed, running
		if from+limit < n {
			d["tasks_next_url"] = fmt.Sprintf("%s/api/chainstatus?chain=k0&signature=sig&tasks_from=%d&tasks_limit=%d", srv.URL, from+limit, limit)
		}
		json.NewEncoder(w).Encode(map[string]any{"status": 200, "message": "failed", "data": d})
	}))
	t.Cleanup(srv.Close)
	return srv
}

// The client finds a task wherever the server lists it: on the first page, among the failed
// and running ones outside it, or pages later; a page's URL reads the run from its start.
func TestTheClientLooksBeyondTheFirstPage(t *testing.T) {
	name := func(i int) string {
		switch i {
		case 0:
			return "JoinTask"
		case 450:
			return "LateTask"
		case 620:
			return "FlakyTask"
		}
		return "LeafTask"
	}
	statusOf := func(i int) string {
		switch i {
		case 0:
			return "UPSTREAM_FAILED"
		case 620:
			return "FAILED"
		case 700:
			return "RUNNING"
		}
		return "DONE"
	}
	srv := pagedRun(t, 1001, name, statusOf)
	c := newClient(clientOpts{server: srv.URL})
	ctx := context.Background()
	st, err := c.findRun(ctx, srv.URL+"/api/chainstatus?chain=k0&signature=sig&tasks_from=300&tasks_limit=5")
	if err != nil || st.TasksFrom != 0 || len(st.Tasks) != 100 {
		t.Fatalf("findRun of a page's URL: from %d, %d tasks, %v; want the first page", st.TasksFrom, len(st.Tasks), err)
	}
	for _, tc := range []struct {
		task string
		want string // its key
	}{
		{"JoinTask", "k0"},    // on the first page
		{"FlakyTask", "k620"}, // among the failed ones outside it
		{"LateTask", "k450"},  // pages later
	} {
		got, _, err := c.findTask(ctx, st, func(t taskStatus) bool { return t.Task == tc.task })
		if err != nil || got == nil || got.Key != tc.want {
			t.Errorf("findTask(%s) = %+v, %v; want key %s", tc.task, got, err, tc.want)
		}
	}
	got, names, err := c.findTask(ctx, st, func(t taskStatus) bool { return t.Task == "NopeTask" })
	if got != nil || err != nil || strings.Join(names, ",") != "JoinTask,LeafTask,FlakyTask,LateTask" {
		t.Errorf("findTask(NopeTask) = %+v, names %v, %v; want none, and every name seen once", got, names, err)
	}
	if err := c.finish(st, &strings.Builder{}, &strings.Builder{}); err == nil || !strings.Contains(err.Error(), "log of FlakyTask: "+srv.URL+"/log/620") {
		t.Errorf("finish of the failed run: %v; want the failed task's log, from outside the page", err)
	}
	var out strings.Builder
	if err := status(ctx, []string{"--server", srv.URL, srv.URL + "/api/chainstatus?chain=k0&signature=sig"}, func(string) string { return "" }, &out, &out); err == nil ||
		!strings.Contains(out.String(), "(102 of 1001 tasks listed: the first 100, and the failed and running ones after them; --all lists every one)") {
		t.Errorf("status: %v\n%s", err, out.String())
	}
	out.Reset()
	status(ctx, []string{"--server", srv.URL, "--all", srv.URL + "/api/chainstatus?chain=k0&signature=sig"}, func(string) string { return "" }, &out, &out)
	if n := strings.Count(out.String(), "\nLeafTask "); n != 998 || strings.Contains(out.String(), "tasks listed") {
		t.Errorf("status --all listed %d leaves, want 998:\n%s", n, out.String()[:min(out.Len(), 300)])
	}
}
