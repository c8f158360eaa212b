package server

import (
	"bytes"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"nectar/server/queue/natstest"
	"nectar/server/runs"
)

// The queue path with every part a process of its own: a nats-server, an API server that
// runs no tasks (--workers 0), and `nectar worker` processes, all on one local store.

// lockedBuffer gathers a process's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startProcess runs the real nectar binary with args; its cleanup SIGKILLs it. logs gathers
// what it prints.
func startProcess(t *testing.T, target string, args []string, env ...string) (*exec.Cmd, *lockedBuffer) {
	t.Helper()
	cmd := exec.Command(filepath.Join(pluginDir, "nectar"), args...)
	cmd.Env = append(append(os.Environ(), "NECTAR_TARGET="+target, "NECTAR_PLUGIN_DIR="+pluginDir, "NECTAR_LOG_LEVEL=warn"), env...)
	logs := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, logs
}

// queueCluster is an API server and workers on one NATS server.
type queueCluster struct {
	base    string
	target  string
	env     []string
	workers map[int]*exec.Cmd // by pid
}

func startQueueCluster(t *testing.T, workers int, env ...string) *queueCluster {
	t.Helper()
	nats, err := natstest.Start(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nats.Stop)
	c := &queueCluster{target: t.TempDir(), workers: map[int]*exec.Cmd{},
		env: append([]string{"NECTAR_DISPATCH=queue", "NECTAR_NATS_URL=" + nats.URL()}, env...)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, logs := startProcess(t, c.target, []string{"serve", "--workers", "0"}, append(c.env, "NECTAR_ADDR="+addr)...)
	c.base = "http://" + addr
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get(c.base + "/healthz"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nectar serve --workers 0 did not start:\n%s", logs)
		}
	}
	for range workers {
		c.addWorker(t)
	}
	return c
}

// addWorker starts a worker and waits until it takes tasks.
func (c *queueCluster) addWorker(t *testing.T) {
	t.Helper()
	cmd, logs := startProcess(t, c.target, []string{"worker"}, append(c.env, "NECTAR_LOG_LEVEL=info")...)
	c.workers[cmd.Process.Pid] = cmd
	for deadline := time.Now().Add(15 * time.Second); !strings.Contains(logs.String(), "nectar worker: taking tasks"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("nectar worker did not start:\n%s", logs)
		}
	}
}

// workerPID is the pid in a worker id (<host>-<pid>-<random>).
func workerPID(t *testing.T, id string) int {
	t.Helper()
	parts := strings.Split(id, "-")
	if len(parts) < 3 {
		t.Fatalf("worker id %q: want <host>-<pid>-<random>", id)
	}
	pid, err := strconv.Atoi(parts[len(parts)-2])
	if err != nil {
		t.Fatalf("worker id %q: %v", id, err)
	}
	return pid
}

// waitTask polls the run until its first task satisfies ok.
func waitTask(t *testing.T, ts *testServer, statusURL string, what string, ok func(runDataView) bool) runDataView {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st := ts.do(t, "GET", statusURL)
		if st.Code == 200 && ok(st.run) {
			return st.run
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60s, still waiting for %s; status %d, tasks:\n%s", what, st.Code, taskTable(st.run.Tasks))
		}
	}
}

// A worker SIGKILLed mid-task loses nothing: the task goes to another worker once the dead
// one's AckWait has passed, the lost attempt is in the record, and the run ends DONE.
func TestAWorkerKilledMidTaskLosesNothing(t *testing.T) {
	c := startQueueCluster(t, 2, "NECTAR_TASK_ACK_WAIT=2s")
	ts := &testServer{}
	a := ts.do(t, "POST", c.base+"/api/chains/testchains/faults_chain/SleepTask?duration=3s")
	if a.Code != http.StatusAccepted {
		t.Fatalf("POST = %d %s", a.Code, a.Message)
	}
	st := waitTask(t, ts, a.run.StatusURL, "a worker to run the task", func(r runDataView) bool {
		return len(r.Tasks) == 1 && r.Tasks[0].Status == runs.Running && r.Tasks[0].Worker != ""
	})
	first := st.Tasks[0].Worker
	pid := workerPID(t, first)
	if c.workers[pid] == nil {
		t.Fatalf("task held by %s, which is none of the workers started", first)
	}
	killed := time.Now()
	syscall.Kill(pid, syscall.SIGKILL)

	end := waitTask(t, ts, a.run.StatusURL, "the run to end", func(r runDataView) bool { return r.JobStatus != nil && r.JobStatus.Final() })
	task := end.Tasks[0]
	if *end.JobStatus != runs.Done {
		t.Fatalf("run ended %s (%v), want DONE; tasks:\n%s", *end.JobStatus, end.Error, taskTable(end.Tasks))
	}
	if task.Worker == first || task.Worker == "" {
		t.Errorf("the task's worker is %q, want the one still alive (not %s)", task.Worker, first)
	}
	if len(task.Attempts) != 2 || !strings.Contains(task.Attempts[0].Error, "worker "+first+" was lost") || task.Attempts[1].Error != "" {
		t.Errorf("attempts = %+v, want the lost one (naming %s) then one that succeeded", task.Attempts, first)
	}
	if b, err := os.ReadFile(filepath.Join(c.target, task.Key, runs.OutName)); err != nil || string(b) != "slept 3s\n" {
		t.Errorf("out = %q, %v", b, err)
	}
	t.Logf("redelivered and finished %s after the kill", time.Since(killed).Round(100*time.Millisecond))
}

// A task whose worker dies every time it holds it stops after NECTAR_TASK_DELIVERIES, and the
// run fails saying so.
func TestATaskThatKeepsKillingItsWorkerFailsTheRun(t *testing.T) {
	c := startQueueCluster(t, 3, "NECTAR_TASK_ACK_WAIT=1s", "NECTAR_TASK_DELIVERIES=2")
	ts := &testServer{}
	a := ts.do(t, "POST", c.base+"/api/chains/testchains/faults_chain/SleepTask?duration=30s")
	if a.Code != http.StatusAccepted {
		t.Fatalf("POST = %d %s", a.Code, a.Message)
	}
	killed := map[string]bool{}
	for len(killed) < 2 {
		st := waitTask(t, ts, a.run.StatusURL, "a worker to take the task", func(r runDataView) bool {
			return len(r.Tasks) == 1 && r.Tasks[0].Worker != "" && !killed[r.Tasks[0].Worker] && r.Tasks[0].Status == runs.Running
		})
		w := st.Tasks[0].Worker
		killed[w] = true
		syscall.Kill(workerPID(t, w), syscall.SIGKILL)
	}
	end := waitTask(t, ts, a.run.StatusURL, "the run to end", func(r runDataView) bool { return r.JobStatus != nil && r.JobStatus.Final() })
	if *end.JobStatus != runs.Failed || !strings.Contains(end.Tasks[0].Error, "its worker was lost 2 times in a row") ||
		!strings.Contains(end.Tasks[0].Error, "NECTAR_TASK_DELIVERIES") {
		t.Fatalf("run ended %s, task error %q; want FAILED, naming the lost workers and NECTAR_TASK_DELIVERIES", *end.JobStatus, end.Tasks[0].Error)
	}
	if len(end.Tasks[0].Attempts) != 2 {
		t.Errorf("attempts = %+v, want the two lost ones", end.Tasks[0].Attempts)
	}
}

// A cancel reaches the worker running the task at once: the run is CANCELLED well within 2s,
// and the worker's plugin stopped the task.
func TestCancelReachesTheWorkerWithinTwoSeconds(t *testing.T) {
	c := startQueueCluster(t, 1)
	ts := &testServer{}
	path := "/api/chains/testchains/faults_chain/SleepTask?duration=60s"
	a := ts.do(t, "POST", c.base+path)
	if a.Code != http.StatusAccepted {
		t.Fatalf("POST = %d %s", a.Code, a.Message)
	}
	waitTask(t, ts, a.run.StatusURL, "the task to run", func(r runDataView) bool {
		return len(r.Tasks) == 1 && r.Tasks[0].Status == runs.Running
	})
	start := time.Now()
	d := ts.do(t, "DELETE", c.base+path)
	took := time.Since(start)
	if d.Code != 200 || d.run.JobStatus == nil || *d.run.JobStatus != runs.Cancelled {
		t.Fatalf("DELETE = %d %s (%v), want 200 and CANCELLED", d.Code, d.Message, d.run.JobStatus)
	}
	if took > 2*time.Second {
		t.Errorf("the cancel took %s to stop the task on its worker, want < 2s", took)
	}
	if !strings.Contains(d.run.Tasks[0].Error, "cancelled") {
		t.Errorf("task error = %q, want it cancelled", d.run.Tasks[0].Error)
	}
	t.Logf("cancelled in %s", took.Round(time.Millisecond))
}
