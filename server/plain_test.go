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
// whatever its code declares (a server built before the task gained a Requires), and changed
// by edit; a name the generated catalog lacks is added, as a copy of HelloTask.
func withPlain(path string, edit func(*catalog.Task)) *catalog.Catalog {
	var tasks []*catalog.Task
	found := false
	for _, t := range catalog.Generated().Tasks() {
		if t.Type+"/"+t.Chain+"/"+t.Name == path {
			c := *t
			c.Plain, found = true, true
			if edit != nil {
				edit(&c)
			}
			t = &c
		}
		tasks = append(tasks, t)
	}
	if !found {
		hello, _ := catalog.Generated().Task("testchains", "hello_chain", "HelloTask")
		c := *hello
		p := strings.Split(path, "/")
		c.Type, c.Chain, c.Name, c.Plain = p[0], p[1], p[2], true
		tasks = append(tasks, &c)
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
		asGenerated       bool // serve the generated catalog (else one that says the task is plain)
		edit              func(*catalog.Task)
		wantGraphs        int64
		wantStatus        string
		wantErr           string // in the run's error and the task's log
		wantTasks         int
	}{
		{name: "plain", path: "testchains/hello_chain/HelloTask", query: "name=plain", generated: true, wantStatus: "DONE", wantTasks: 1},
		{name: "no longer plain", path: "testchains/fanin_chain/JoinTask", query: "leaves=3&salt=plain", wantStatus: "FAILED", wantTasks: 1,
			wantErr: "fanin_chain/JoinTask: the task declares Requires, but the server's catalog, built from older chain code, says it declares none: rebuild and restart the server (make build)"},
		{name: "other connections", path: "testchains/hello_chain/HelloTask", query: "name=conn", generated: true, wantStatus: "FAILED", wantTasks: 1,
			edit:    func(t *catalog.Task) { t.Connections = []string{"warehouse"} },
			wantErr: `hello_chain/HelloTask: the task declares the connections [], but the server's catalog says ["warehouse"]: rebuild and restart the server (make build)`},
		{name: "not in the plugin", path: "testchains/hello_chain/GoneTask", query: "name=gone", wantStatus: "FAILED", wantTasks: 1,
			wantErr: "hello_chain/GoneTask: plugin testchains has no task hello_chain/GoneTask: rebuild and restart the server (make build)"},
		{name: "not plain", path: "testchains/hello_chain/UpperTask", query: "name=ada", generated: false, asGenerated: true, wantStatus: "DONE", wantTasks: 2, wantGraphs: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if task, ok := catalogTask(tc.path); ok && task.Plain != tc.generated {
				t.Fatalf("the generated catalog lists %s as plain: %v; want %v", tc.path, task.Plain, tc.generated)
			}
			cat := withPlain(tc.path, tc.edit)
			if tc.asGenerated {
				cat = catalog.Generated()
			}
			ts := startTestServer(t, slog.New(slog.NewTextHandler(io.Discard, nil)), cat, func(c *Config) {
				c.Getenv = func(k string) string {
					if k == ConnectionEnv("warehouse") {
						return "postgres://nobody@127.0.0.1:1/none"
					}
					return os.Getenv(k)
				}
			})
			a := ts.postWait(t, "/api/chains/"+tc.path+"?wait=30s&"+tc.query, nil)
			if n := ts.Runs().GraphCalls(); n != tc.wantGraphs {
				t.Errorf("%d graph calls to the plugin; want %d", n, tc.wantGraphs)
			}
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

func catalogTask(path string) (*catalog.Task, bool) {
	p := strings.Split(path, "/")
	return catalog.Generated().Task(p[0], p[1], p[2])
}
