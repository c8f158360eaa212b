package server

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"nectar/server/runs"
)

// startBinary runs the real nectar binary on a free port (env adds NAME=value settings); the
// test's cleanup SIGKILLs it.
func startBinary(t *testing.T, target string, env ...string) (base string, cmd *exec.Cmd) {
	t.Helper()
	base, _, cmd = serveProcess(t, target, nil, env...)
	return base, cmd
}

// kill -9 of the server mid-run: its plugin dies with it, no out appears, the restarted server
// reports the run FAILED with the cause, and the same POST resumes at the unfinished task.
func TestKillNineMidRunThenResume(t *testing.T) {
	target := t.TempDir()
	gate := filepath.Join(t.TempDir(), "hold")
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	path := "/api/chains/testchains/faults_chain/ResumeTask?name=kill9&path=" + url.QueryEscape(gate)
	ts := &testServer{url: ""} // only for its helpers
	base, cmd := startBinary(t, target)
	a := ts.do(t, "POST", base+path)
	if a.Code != http.StatusAccepted {
		t.Fatalf("POST = %d %s", a.Code, a.Message)
	}
	// HelloTask and WaitFileTask have no order between them: the scheduler runs them side by
	// side, so WaitFileTask RUNNING says nothing about HelloTask. Kill only once HelloTask is
	// DONE in the status answer (set after its out is committed) and WaitFileTask is RUNNING:
	// then the crash leaves exactly one finished upstream task, and one interrupted.
	helloKey, waitKey := "", ""
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		st := ts.do(t, "GET", a.run.StatusURL)
		helloKey, waitKey = "", ""
		for _, task := range st.run.Tasks {
			switch {
			case task.Task == "HelloTask" && task.Status == runs.Done:
				helloKey = task.Key
			case task.Task == "WaitFileTask" && task.Status == runs.Running:
				waitKey = task.Key
			}
		}
		// (RUNNING from its lane's slot on; its out is staged once its plugin has it.)
		staged, _ := filepath.Glob(filepath.Join(target, ".tmp", "task-*-"+runs.OutName))
		if helloKey != "" && waitKey != "" && len(staged) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s HelloTask is not DONE, or WaitFileTask not RUNNING with its out staged; status %d, tasks:\n%s", st.Code, taskTable(st.run.Tasks))
		}
	}
	helloOut := filepath.Join(target, helloKey, runs.OutName)
	helloBefore, err := os.Stat(helloOut)
	if err != nil {
		t.Fatalf("HelloTask is DONE but its out is not in the store: %v", err)
	}
	plugins := pluginPIDs(t) // the run's, and the warm spare
	if len(plugins) < 1 {
		t.Fatalf("no plugin process found")
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	for _, pid := range plugins {
		for deadline := time.Now().Add(5 * time.Second); syscall.Kill(pid, 0) == nil; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("plugin %d outlived its server", pid)
			}
		}
	}
	for _, k := range []string{a.run.Key, waitKey} {
		if _, err := os.Stat(filepath.Join(target, k, runs.OutName)); err == nil {
			t.Errorf("%s/%s exists after the crash", k, runs.OutName)
		}
	}
	if b, err := os.ReadFile(helloOut); err != nil || string(b) != "hello kill9\n" {
		t.Fatalf("HelloTask's out after the crash = %q, %v; want the finished out kept", b, err)
	}
	if left, _ := filepath.Glob(filepath.Join(target, "chains", "*", "*", "*", "*", "*.tmp*")); len(left) > 0 {
		t.Errorf("partial files in the key space: %v", left)
	}
	// The interrupted task's out was staged in the store's temporary folder (a run this small
	// has its plugin fsync it there: commit.go); the run that takes the key over removes it.
	stagedOuts := filepath.Join(target, ".tmp", "task-*-"+runs.OutName)
	if left, _ := filepath.Glob(stagedOuts); len(left) != 1 {
		t.Errorf("staged outs after the crash: %v; want WaitFileTask's", left)
	}

	base2, _ := startBinary(t, target)
	statusURL := strings.Replace(a.run.StatusURL, base, base2, 1)
	st := ts.do(t, "GET", statusURL)
	if st.Code != 200 || *st.run.JobStatus != runs.Failed || st.run.Error == nil || !strings.Contains(*st.run.Error, "interrupted") {
		t.Errorf("status after restart = %d %v %v, want FAILED: interrupted", st.Code, st.run.JobStatus, st.run.Error)
	}
	// The record kept the task list (stored while the run ran); nothing in it shows as still
	// running or waiting, the run ended when its server was last heard of, and every signed URL
	// points at something that exists.
	if len(st.run.Tasks) != 3 || st.run.FinishedAt == nil {
		t.Errorf("status after restart: finished_at %v, tasks:\n%s\nwant the 3 tasks and a finish time", st.run.FinishedAt, taskTable(st.run.Tasks))
	}
	urls := []string{st.run.LogURL, st.run.ParamsURL}
	for _, task := range st.run.Tasks {
		if !task.Status.Final() {
			t.Errorf("task %s is %s after its server died", task.Task, task.Status)
		}
		urls = append(urls, task.LogURL)
	}
	for _, u := range urls {
		if u == "" {
			continue
		}
		if code, _ := fetch(t, strings.Replace(u, base, base2, 1)); code != 200 {
			t.Errorf("GET %s = %d after the restart", u, code)
		}
	}
	if err := os.Remove(gate); err != nil {
		t.Fatal(err)
	}
	b := ts.do(t, "POST", base2+path+"&wait=20s")
	if b.Code != 200 || *b.run.JobStatus != runs.Done {
		t.Fatalf("re-POST = %d %v %v", b.Code, b.run.JobStatus, b.run.Error)
	}
	ran := map[string]bool{}
	for _, task := range b.run.Tasks {
		ran[task.Task] = !task.Cached
	}
	// Through the embedded queue nothing outlives the crash but the records: the stream is in
	// memory, so the resumed run publishes WaitFileTask again and runs it itself.
	if len(ran) != 3 || ran["HelloTask"] || !ran["WaitFileTask"] || !ran["ResumeTask"] {
		t.Errorf("resumed run executed %v, want WaitFileTask and ResumeTask only; tasks:\n%s", ran, taskTable(b.run.Tasks))
	}
	// Not run again means not written again: the out committed before the crash is the same file.
	if fi, err := os.Stat(helloOut); err != nil || !os.SameFile(helloBefore, fi) {
		t.Errorf("HelloTask's out was rewritten or lost by the resumed run (%v)", err)
	}
	for _, k := range []string{a.run.Key, waitKey} {
		if _, err := os.Stat(filepath.Join(target, k, runs.OutName)); err != nil {
			t.Errorf("after the resumed run: %v", err)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(target, "chains", "*", "*", "*", "*", "*.tmp*")); len(left) > 0 {
		t.Errorf("partial files in the key space after the resumed run: %v", left)
	}
	if left, _ := filepath.Glob(stagedOuts); len(left) > 0 {
		t.Errorf("staged outs left after the resumed run: %v", left)
	}
}

// taskTable is one line per task of a status answer, for failure messages.
func taskTable(tasks []taskData) string {
	var b strings.Builder
	for _, task := range tasks {
		fmt.Fprintf(&b, "  %-12s %-15s cached=%-5v %s %s\n", task.Task, task.Status, task.Cached, task.Key, task.Error)
	}
	return b.String()
}

// SIGTERM to the real binary: a run that fits in the grace period finishes DONE, one that does
// not is CANCELLED with the reason, and the process exits.
func TestSIGTERMDrainsThenCancels(t *testing.T) {
	target := t.TempDir()
	t.Setenv("NECTAR_SHUTDOWN_GRACE", "2s")
	base, cmd := startBinary(t, target)
	ts := &testServer{}
	short := ts.do(t, "POST", base+"/api/chains/testchains/faults_chain/SleepTask?duration=400ms")
	long := ts.do(t, "POST", base+"/api/chains/testchains/faults_chain/SleepTask?duration=30s")
	time.Sleep(150 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if a := ts.do(t, "POST", base+"/api/chains/testchains/hello_chain/HelloTask?name=late"); a.Code != http.StatusServiceUnavailable {
		t.Errorf("POST during shutdown = %d, want 503", a.Code)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("nectar exited with %v, want 0", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("nectar did not exit after SIGTERM")
	}
	records := map[string]string{short.run.Key: "DONE", long.run.Key: "CANCELLED"}
	for key, want := range records {
		b, err := os.ReadFile(filepath.Join(target, key, "run"))
		if err != nil {
			t.Fatalf("record of %s: %v", key, err)
		}
		if !strings.Contains(string(b), `"status":"`+want+`"`) {
			t.Errorf("record of %s = %s, want %s", key, b, want)
		}
		if want == "CANCELLED" && !strings.Contains(string(b), "grace period") {
			t.Errorf("cancelled record does not say why: %s", b)
		}
	}
}
