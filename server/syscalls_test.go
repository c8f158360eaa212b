package server

import (
	"net/http"
	"path/filepath"
	"testing"

	"nectar/server/runs"
	"nectar/tools/syscount"
)

// The commit path of a big fan-in costs the server at most 12 system calls on the store's files
// per task (the real binary, counted by strace; the plugin's own calls are its own): a folder
// made, a rename (a leaf logs nothing: it has no log to rename), the existence check of its
// out and two of its log (staged by the plugin? held by the key?), the output's size, a share
// of the batch's sync, and the run's own record and lease writes spread over the tasks.
func TestFanInSystemCallsPerTask(t *testing.T) {
	target := t.TempDir()
	base, cmd := startBinary(t, target)
	ts := &testServer{}
	warm := ts.do(t, http.MethodPost, base+"/api/chains/testchains/fanin_chain/JoinTask?leaves=10&salt=warm&wait=30s")
	if warm.Code != 200 {
		t.Fatalf("warm-up fan-in = %d %s", warm.Code, warm.Message)
	}
	tr, err := syscount.Start(cmd.Process.Pid, target)
	if err != nil {
		t.Fatalf("counting system calls: %v", err)
	}
	const leaves = 300
	a := ts.do(t, http.MethodPost, base+"/api/chains/testchains/fanin_chain/JoinTask?leaves=300&salt=count&wait=60s")
	c, err := tr.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if a.Code != 200 || *a.run.JobStatus != runs.Done {
		t.Fatalf("fan-in = %d %v %v", a.Code, a.run.JobStatus, a.run.Error)
	}
	per := float64(c.Total) / (leaves + 1)
	t.Logf("%d calls on the store for %d tasks: %.1f per task (%s)", c.Total, leaves+1, per, c)
	if c.ByCall["rename"]+c.ByCall["renameat"]+c.ByCall["renameat2"] < leaves {
		t.Errorf("fewer renames than one per task: the trace missed the server's threads (%s)", c)
	}
	leafDirs := filepath.Join(target, "chains/testchains/fanin_chain/LeafTask/*")
	if outs, _ := filepath.Glob(filepath.Join(leafDirs, "out")); len(outs) < leaves {
		t.Errorf("%d leaf outs under %s, want at least %d", len(outs), leafDirs, leaves)
	}
	if logs, _ := filepath.Glob(filepath.Join(leafDirs, "log")); len(logs) > 0 {
		t.Errorf("%d leaves that log nothing stored a log, e.g. %s", len(logs), logs[0])
	}
	// Each leaf's folder is made once.
	if mk := c.ByCall["mkdir"] + c.ByCall["mkdirat"]; mk > leaves+5 {
		t.Errorf("%d folders made for %d leaves: a leaf's folder was made twice (%s)", mk, leaves, c)
	}
	if per > 12 {
		t.Errorf("%.1f system calls on the store per task, want at most 12 (%s)", per, c)
	}
}
