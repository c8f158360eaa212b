package main

import (
	"bytes"
	"encoding/json"
	"io"
	"nectar/tools/lockedbuf"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// syncBuffer collects a process's output while the test reads it.
type syncBuffer = lockedbuf.Buffer

// The dev loop on a copy of the repository: a saved edit of a chain is the next run's code with
// no restart; a broken edit prints its position and the old plugin keeps serving; a new task
// restarts the server with it.
func TestDevLoopRebuildsOnSave(t *testing.T) {
	work := copyRepo(t)
	bin := buildNectar(t)
	addr := freeAddr(t)
	var out syncBuffer
	dev := exec.Command(bin, "dev")
	dev.Dir = work
	dev.Env = append(os.Environ(), "NECTAR_ADDR="+addr, "NECTAR_TARGET="+t.TempDir(), "NECTAR_LOG_LEVEL=warn")
	dev.Stdout, dev.Stderr = &out, &out
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			dev.Process.Kill()
			dev.Wait()
		}
	})
	// waitFor waits for the n-th occurrence of s in the output.
	waitFor := func(s string, n int, within time.Duration) {
		t.Helper()
		for deadline := time.Now().Add(within); strings.Count(out.String(), s) < n; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q (#%d) within %s; output:\n%s", s, n, within, out.String())
			}
		}
	}
	waitFor("watching chains/", 1, 4*time.Minute)
	waitHealthy(t, addr, 30*time.Second, out.String)
	// hello runs HelloTask again (force) and returns its out.
	hello := func(task string) string {
		t.Helper()
		resp, err := http.Post("http://"+addr+"/api/chains/testchains/hello_chain/"+task+"?name=dev&force=true&wait=30s", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		var env struct {
			Message string
			Data    struct {
				JobStatus   *string `json:"job_status"`
				ResourceURL string  `json:"resource_url"`
			}
		}
		json.NewDecoder(resp.Body).Decode(&env)
		resp.Body.Close()
		if env.Data.JobStatus == nil || *env.Data.JobStatus != "DONE" {
			t.Fatalf("POST %s: %d %s", task, resp.StatusCode, env.Message)
		}
		r, err := http.Get(env.Data.ResourceURL)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return string(b)
	}
	if got := hello("HelloTask"); got != "hello dev\n" {
		t.Fatalf("before the edit: %q", got)
	}
	chain := filepath.Join(work, "chains", "testchains", "hello_chain.go")
	edit := func(old, new string) {
		t.Helper()
		b, err := os.ReadFile(chain)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte(old)) {
			t.Fatalf("hello_chain.go has no %q", old)
		}
		if err := os.WriteFile(chain, bytes.Replace(b, []byte(old), []byte(new), 1), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	serverPID := func() string { return childrenOf(dev.Process.Pid) }
	pid := serverPID()
	if pid == "" {
		t.Fatalf("nectar dev has no child process serving")
	}

	// 1. A saved edit: the next run is the new code, the server was not restarted.
	edit(`"hello %s\n"`, `"howdy %s\n"`)
	waitFor("rebuilt the plugin of testchains", 1, 2*time.Minute)
	if got := hello("HelloTask"); got != "howdy dev\n" {
		t.Errorf("after the edit: %q, want the new code's out", got)
	}
	if serverPID() != pid || strings.Contains(out.String(), "restarting the server") {
		t.Errorf("a change inside a task restarted the server")
	}

	// 2. A broken edit: the error with its position; the old plugin keeps serving.
	edit(`"howdy %s\n", t.Name`, `"howdy %s\n", t.Nme`)
	waitFor("keep serving", 1, 2*time.Minute)
	if !regexp.MustCompile(`chains/testchains/hello_chain\.go:\d+:\d+: .*Nme`).MatchString(out.String()) {
		t.Errorf("the compile error is not printed with its position:\n%s", out.String())
	}
	if got := hello("HelloTask"); got != "howdy dev\n" {
		t.Errorf("after a broken edit: %q, want the last good plugin's out", got)
	}

	// 3. A new task changes the catalog: the server is rebuilt and restarted with it.
	edit(`t.Nme`, `t.Name`)
	waitFor("rebuilt the plugin of testchains", 2, 2*time.Minute)
	f, err := os.OpenFile(chain, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("\n// ByeTask says goodbye.\ntype ByeTask struct {\n\tName string `param:\"name\" default:\"world\"`\n}\n\n" +
		"func (t ByeTask) Run(ctx *chains.Context) error {\n\t_, err := fmt.Fprintf(ctx.Out(), \"bye %s\\n\", t.Name)\n\treturn err\n}\n")
	f.Close()
	waitFor("restarting the server", 1, 3*time.Minute)
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/api/chains/testchains/hello_chain/ByeTask"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("ByeTask is not served after the restart:\n%s", out.String())
		}
	}
	if got := hello("ByeTask"); got != "bye dev\n" {
		t.Errorf("the new task: %q", got)
	}

	// Ctrl-C in a terminal reaches the dev loop and its server alike: both stop, none hangs.
	child := serverPID()
	if child == "" || child == pid {
		t.Fatalf("after the catalog changed the server is pid %q, before %q: want a new process", child, pid)
	}
	childPID, _ := strconv.Atoi(child)
	syscall.Kill(childPID, syscall.SIGINT)
	dev.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- dev.Wait() }()
	select {
	case <-done:
		stopped = true
	case <-time.After(40 * time.Second):
		t.Fatalf("nectar dev did not stop on SIGINT")
	}
	t.Logf("nectar dev said:\n%s", out.String())
	if child != "" {
		if _, err := os.Stat("/proc/" + child); err == nil {
			t.Errorf("the server (pid %s) outlived nectar dev", child)
		}
	}
}

// childrenOf lists a process's children (from every thread of it: Go forks from any).
func childrenOf(pid int) string {
	tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/children")
	var kids []string
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		kids = append(kids, strings.Fields(string(b))...)
	}
	return strings.Join(kids, " ")
}

func TestChangedTypes(t *testing.T) {
	at := func(n int64) fileState { return fileState{size: n} }
	before := map[string]fileState{
		"chains/chains.go": at(1), "chains/cron/cron.go": at(1),
		"chains/a/x_chain.go": at(1), "chains/a/helpers.go": at(1), "chains/b/y_chain.go": at(1),
	}
	with := func(edit func(m map[string]fileState)) map[string]fileState {
		m := map[string]fileState{}
		for k, v := range before {
			m[k] = v
		}
		edit(m)
		return m
	}
	for _, tc := range []struct {
		name  string
		after map[string]fileState
		want  string
		sdk   bool
	}{
		{"a chain file", with(func(m map[string]fileState) { m["chains/a/x_chain.go"] = at(2) }), "a", false},
		{"a helper beside it", with(func(m map[string]fileState) { m["chains/a/helpers.go"] = at(2) }), "a", false},
		{"a new type", with(func(m map[string]fileState) { m["chains/c/z_chain.go"] = at(1) }), "c", false},
		{"a removed type", with(func(m map[string]fileState) { delete(m, "chains/b/y_chain.go") }), "b", false},
		{"the SDK", with(func(m map[string]fileState) { m["chains/cron/cron.go"] = at(2) }), "a,b", true},
		{"nothing", with(func(map[string]fileState) {}), "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, sdk := changedTypes(before, tc.after)
			if strings.Join(got, ",") != tc.want || sdk != tc.sdk {
				t.Errorf("changedTypes = %v, sdk %v; want %s, sdk %v", got, sdk, tc.want, tc.sdk)
			}
		})
	}
}
