package server

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"nectar/server/catalog"
)

// withPlain is the generated catalog with the named task (type/chain/name) marked plain,
// whatever its code declares: a server built before the task gained a Requires.
func withPlain(path string) *catalog.Catalog {
	var tasks []*catalog.Task
	for _, t := range catalog.Generated().Tasks() {
		if t.Type+"/"+t.Chain+"/"+t.Name == path {
			c := *t
			c.Plain = true
			t = &c
		}
		tasks = append(tasks, t)
	}
	return catalog.New(tasks)
}

// A plain task's graph is built from the catalog: the run asks no plugin for it. Shown both
// ways, through the queue and direct (make test runs this package with each): a plain task
// runs as before, alone, and the catalog's word is what the server acts on; a plugin whose
// task is not plain (newer chain code than the server's catalog) refuses to run it alone,
// with words that say what to do, and nothing of the task's requirements runs or is stored.
func TestAPlainTaskRunsOnTheCatalogsWord(t *testing.T) {
	for _, tc := range []struct {
		name, path, query string
		generated         bool // what the generator says of the task: plain or not
		wantStatus        string
		wantErr           string // in the run's error and the task's log
		wantTasks         int
	}{
		{name: "plain", path: "testchains/hello_chain/HelloTask", query: "name=plain", generated: true, wantStatus: "DONE", wantTasks: 1},
		{name: "no longer plain", path: "testchains/fanin_chain/JoinTask", query: "leaves=3&salt=plain", wantStatus: "FAILED", wantTasks: 1,
			wantErr: "fanin_chain/JoinTask declares Requires, but the server's catalog, built from older chain code, says it declares none: rebuild and restart the server (make build)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := catalogTask(t, tc.path).Plain; got != tc.generated {
				t.Fatalf("the generated catalog lists %s as plain: %v; want %v", tc.path, got, tc.generated)
			}
			ts := startTestServer(t, slog.New(slog.NewTextHandler(io.Discard, nil)), withPlain(tc.path))
			a := ts.postWait(t, "/api/chains/"+tc.path+"?wait=30s&"+tc.query, nil)
			if status := statusOf(a); status != tc.wantStatus {
				t.Fatalf("job_status %s (%s); want %s", status, a.Data, tc.wantStatus)
			}
			if len(a.run.Tasks) != tc.wantTasks {
				t.Errorf("%d tasks in the answer; want %d: %s", len(a.run.Tasks), tc.wantTasks, a.Data)
			}
			if tc.wantErr == "" {
				return
			}
			if a.run.Error == nil || !strings.Contains(*a.run.Error, tc.wantErr) {
				t.Errorf("run error %v; want it to say %q", a.run.Error, tc.wantErr)
			}
			root := filepath.Join(ts.target, filepath.FromSlash(a.run.Key))
			if log, err := os.ReadFile(filepath.Join(root, "log")); err != nil || !strings.Contains(string(log), tc.wantErr) {
				t.Errorf("the task's log (%v): %q; want it to say %q", err, log, tc.wantErr)
			}
			if _, err := os.Stat(filepath.Join(root, "out")); !os.IsNotExist(err) {
				t.Errorf("the refused task has an out (%v)", err)
			}
			leaves, _ := filepath.Glob(filepath.Join(ts.target, "chains", "testchains", "fanin_chain", "LeafTask", "*", "out"))
			if len(leaves) != 0 {
				t.Errorf("the refused task's requirements ran: %v", leaves)
			}
		})
	}
}

func statusOf(a answer) string {
	if a.run.JobStatus == nil {
		return "<none>"
	}
	return string(*a.run.JobStatus)
}

func catalogTask(t *testing.T, path string) *catalog.Task {
	t.Helper()
	p := strings.Split(path, "/")
	task, ok := catalog.Generated().Task(p[0], p[1], p[2])
	if !ok {
		t.Fatalf("no task %s in the generated catalog", path)
	}
	return task
}
