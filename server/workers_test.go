package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"nectar/server/queue"
	"nectar/server/queue/natstest"
	"nectar/server/runs"
	"nectar/tools/lockedbuf"
)

// The queue path with every part a process of its own: a nats-server, an API server that
// runs no tasks (--workers 0), and `nectar worker` processes, all on one local store.

// lockedBuffer gathers a process's output while the test reads it.
type lockedBuffer = lockedbuf.Buffer

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
	t.Cleanup(func() {
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
		_, state, _ := strings.Cut(string(stat), ") ")
		exited := strings.HasPrefix(state, "Z") // a zombie: it ended before the kill
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() { // what it said last, and whether it had died (a panic, a fatal error)
			out := logs.String()
			t.Logf("nectar %s (pid %d, had exited by itself: %v), the end of its output:\n%s", strings.Join(args, " "), cmd.Process.Pid, exited, out[max(0, len(out)-4000):])
		}
	})
	return cmd, logs
}

// queueCluster is an API server and workers on one NATS server.
type queueCluster struct {
	base       string
	logs       *lockedBuffer // the API server's
	target     string
	env        []string
	workerEnv  []string              // what workers started from now on get beyond env
	workers    map[int]*exec.Cmd     // by pid
	workerLogs map[int]*lockedBuffer // by pid
	server     *exec.Cmd             // the first API server
}

func startQueueCluster(t *testing.T, workers int, env ...string) *queueCluster {
	t.Helper()
	nats, err := natstest.Start(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nats.Stop)
	c := &queueCluster{target: t.TempDir(), workers: map[int]*exec.Cmd{}, workerLogs: map[int]*lockedBuffer{},
		env: append([]string{"NECTAR_DISPATCH=queue", "NECTAR_NATS_URL=" + nats.URL()}, env...)}
	c.base, c.logs, c.server = c.addServer(t)
	for range workers {
		c.addWorker(t)
	}
	return c
}

// freeAddr is a loopback host:port nothing listens on (for a process to take next).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// serveProcess runs `nectar serve args...` on a free port of loopback and waits until it
// answers; its cleanup SIGKILLs it.
func serveProcess(t *testing.T, target string, args []string, env ...string) (base string, logs *lockedBuffer, cmd *exec.Cmd) {
	t.Helper()
	addr := freeAddr(t)
	cmd, logs = startProcess(t, target, append([]string{"serve"}, args...), slices.Concat(env, []string{"NECTAR_ADDR=" + addr})...)
	base = "http://" + addr
	// The queue waits up to 30 s for a fresh NATS cluster's JetStream (queue.openPatience):
	// under -race, on a busy 2-core machine, a server of a 3-node cluster took longer to answer.
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get(base + "/healthz"); err == nil {
			resp.Body.Close()
			return base, logs, cmd
		}
		if time.Now().After(deadline) {
			t.Fatalf("nectar serve %v did not start:\n%s", args, logs)
		}
	}
}

// addServer starts an API server that runs no tasks (nectar serve --workers 0).
func (c *queueCluster) addServer(t *testing.T) (base string, logs *lockedBuffer, cmd *exec.Cmd) {
	t.Helper()
	return serveProcess(t, c.target, []string{"--workers", "0"}, c.env...)
}

// addWorker starts a worker (nectar worker args...) and waits until it takes tasks.
func (c *queueCluster) addWorker(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd, logs := startProcess(t, c.target, append([]string{"worker"}, args...), slices.Concat(c.env, c.workerEnv, []string{"NECTAR_LOG_LEVEL=info"})...)
	c.workers[cmd.Process.Pid], c.workerLogs[cmd.Process.Pid] = cmd, logs
	for deadline := time.Now().Add(15 * time.Second); !strings.Contains(logs.String(), "nectar worker: taking tasks"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("nectar worker did not start:\n%s", logs)
		}
	}
	return cmd
}

// sleepOnAWorker POSTs a SleepTask of duration and waits until a worker runs it; it returns
// the POST's answer and that worker's id.
func (c *queueCluster) sleepOnAWorker(t *testing.T, ts *testServer, duration string) (answer, string) {
	t.Helper()
	a := ts.do(t, "POST", c.base+"/api/chains/testchains/faults_chain/SleepTask?duration="+duration)
	if a.Code != http.StatusAccepted {
		t.Fatalf("POST = %d %s", a.Code, a.Message)
	}
	st := waitTask(t, ts, a.run.StatusURL, "a worker to run the task", func(r runDataView) bool {
		return len(r.Tasks) == 1 && r.Tasks[0].Status == runs.Running && r.Tasks[0].Worker != ""
	})
	return a, st.Tasks[0].Worker
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
	a, first := c.sleepOnAWorker(t, ts, "3s")
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
	// Neither lost worker committed a log: the answer signs no URL to one.
	if end.LogURL != "" || end.Tasks[0].LogURL != "" {
		t.Errorf("the run's log_url %q, the task's %q; want none (no log was stored)", end.LogURL, end.Tasks[0].LogURL)
	}
}

// A cancel reaches the worker running the task at once: the run is CANCELLED well within 2s,
// and the worker's plugin stopped the task. A worker draining after SIGTERM hears it too (it
// finishes the tasks in hand, and a cancelled one is finished), and then exits.
func TestCancelReachesTheWorkerWithinTwoSeconds(t *testing.T) {
	for _, draining := range []bool{false, true} {
		name := "a worker taking tasks"
		if draining {
			name = "a worker draining after SIGTERM" // it still hears cancels for the tasks it finishes
		}
		t.Run(name, func(t *testing.T) {
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
			var worker *exec.Cmd
			var logs *lockedBuffer
			for pid, cmd := range c.workers {
				worker, logs = cmd, c.workerLogs[pid]
			}
			if draining {
				if err := worker.Process.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
				for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), "finishing the tasks in hand"); time.Sleep(10 * time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatalf("the worker did not start draining after SIGTERM:\n%s", logs)
					}
				}
			}
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
			if draining { // its last task ended: it exits
				exited := make(chan error, 1)
				go func() { exited <- worker.Wait() }()
				select {
				case err := <-exited:
					if err != nil {
						t.Errorf("the drained worker exited with %v, want 0:\n%s", err, logs)
					}
				case <-time.After(10 * time.Second):
					t.Errorf("the worker did not exit within 10s of its last task's cancel:\n%s", logs)
				}
			}
		})
	}
}

// A worker stopping with NECTAR_WORKER_GRACE set finishes what it can in that time and hands
// the rest back: the task's process is killed, its run's server queues it again at once (not
// after NECTAR_TASK_ACK_WAIT, a minute here), another worker runs it from the start, and the
// stopped worker exits 0. The run ends DONE; its task shows the attempt that was cut short,
// and why, then the one that made the out.
func TestAStoppingWorkerHandsBackWhatItCannotFinishInItsGrace(t *testing.T) {
	c := startQueueCluster(t, 0, "NECTAR_TASK_ACK_WAIT=60s")
	c.workerEnv = []string{"NECTAR_WORKER_GRACE=1s"}
	first := c.addWorker(t)
	c.workerEnv = nil
	ts := &testServer{}
	a, holder := c.sleepOnAWorker(t, ts, "3s")
	if pid := workerPID(t, holder); pid != first.Process.Pid {
		t.Fatalf("the task runs on worker %s, want the only one (pid %d)", holder, first.Process.Pid)
	}
	stopped := time.Now()
	if err := first.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- first.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("the stopped worker exited with %v, want 0:\n%s", err, c.workerLogs[first.Process.Pid])
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the worker did not exit within 10s of SIGTERM with a 1s grace:\n%s", c.workerLogs[first.Process.Pid])
	}
	if took := time.Since(stopped); took < time.Second {
		t.Errorf("the worker exited %s after SIGTERM, before its 1s grace", took)
	}
	if logs := c.workerLogs[first.Process.Pid].String(); !strings.Contains(logs, "handed back to their runs' servers") {
		t.Errorf("the worker's log does not say it handed the task back:\n%s", logs)
	}

	second := c.addWorker(t)
	done := waitTask(t, ts, a.run.StatusURL, "the run to end", func(r runDataView) bool {
		return r.JobStatus != nil && r.JobStatus.Final()
	})
	if *done.JobStatus != runs.Done {
		t.Fatalf("run = %s (tasks %+v), want DONE", *done.JobStatus, done.Tasks)
	}
	if took := time.Since(stopped); took > 30*time.Second {
		t.Errorf("the run ended %s after the worker stopped: the task waited for its ack wait (60s), not handed back", took)
	}
	task := done.Tasks[0]
	if pid := workerPID(t, task.Worker); pid != second.Process.Pid {
		t.Errorf("the task's worker is %s, want the second worker (pid %d)", task.Worker, second.Process.Pid)
	}
	if len(task.Attempts) != 2 {
		t.Fatalf("attempts = %+v, want the one handed back, then the one that finished", task.Attempts)
	}
	if e := task.Attempts[0].Error; !strings.Contains(e, "stopped before the task finished") || !strings.Contains(e, "NECTAR_WORKER_GRACE=1s") {
		t.Errorf("the first attempt's error = %q, want it to say its worker's grace ran out", e)
	}
	if e := task.Attempts[1].Error; e != "" || task.Attempts[1].FinishedAt == nil {
		t.Errorf("the second attempt = %+v, want it finished without error", task.Attempts[1])
	}
}

// The scale-out the issue asks for, every part a process: a 3-node NATS cluster (stream
// replicas 3), two API servers and three workers on one MinIO store. A 200-leaf fan-in spreads
// over the workers and finishes DONE although a worker and a NATS node are SIGKILLed during it,
// every task committed by one successful attempt; then 200 concurrent identical POSTs spread
// over both API servers make one execution.
func TestServersAndWorkersOnANATSClusterAndMinIO(t *testing.T) {
	nats, err := natstest.Start(3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nats.Stop)
	target := fmt.Sprintf("minio://%s/%s/%s?secure=false", minioSrv.Endpoint, minioSrv.Bucket, fmt.Sprintf("scaleout-%d", time.Now().UnixNano()))
	env := []string{"NECTAR_DISPATCH=queue", "NECTAR_NATS_URL=" + nats.URL(), "NECTAR_NATS_REPLICAS=3", "NECTAR_TASK_ACK_WAIT=2s",
		"MINIO_ACCESS_KEY=" + minioSrv.AccessKey, "MINIO_SECRET_KEY=" + minioSrv.SecretKey,
		"NECTAR_SIGNING_KEY=" + strings.Repeat("ab", 32), "NECTAR_DATABASE_URL=off"}
	c := &queueCluster{target: target, env: append(env, "NECTAR_LOG_LEVEL=info"), workers: map[int]*exec.Cmd{}, workerLogs: map[int]*lockedBuffer{}}
	var bases []string
	var serverLogs []*lockedBuffer
	for range 2 {
		base, logs, _ := c.addServer(t)
		bases, serverLogs = append(bases, base), append(serverLogs, logs)
	}
	for range 3 {
		c.addWorker(t)
	}
	ts := &testServer{}

	a := ts.do(t, "POST", bases[0]+"/api/chains/testchains/fanin_chain/JoinTask?leaves=200&salt=scaleout")
	if a.Code != http.StatusAccepted {
		t.Fatalf("POST = %d %s", a.Code, a.Message)
	}
	// Once the fan-in is under way: SIGKILL a worker that holds a task, and a NATS node.
	var victim string
	waitTask(t, ts, a.run.StatusURL, "a worker to hold a task", func(r runDataView) bool {
		for _, task := range append(r.Tasks, r.RunningTasks...) {
			if task.Status == runs.Running && task.Worker != "" && r.TaskCounts != nil && r.TaskCounts.Done >= 20 {
				victim = task.Worker
				return true
			}
		}
		return false
	})
	syscall.Kill(workerPID(t, victim), syscall.SIGKILL)
	nats.Kill(0)

	end := waitTask(t, ts, strings.Replace(a.run.StatusURL, bases[0], bases[1], 1), "the fan-in to end (read from the other API server)",
		func(r runDataView) bool { return r.JobStatus != nil && r.JobStatus.Final() })
	if *end.JobStatus != runs.Done || end.TaskCounts.Done != 201 {
		var failed []string
		for _, task := range append(end.FailedTasks, end.Tasks...) {
			if task.Status == runs.Failed {
				failed = append(failed, fmt.Sprintf("%d %s: %s", task.Index, task.Task, task.Error))
			}
		}
		t.Fatalf("fan-in ended %s with %+v: %v; failed:\n%s\nthe driving API server's log:\n%s\nthe other's:\n%s",
			*end.JobStatus, end.TaskCounts, *end.Error, strings.Join(failed, "\n"), serverLogs[0], serverLogs[1])
	}
	workers, tasks := map[string]int{}, 0
	for page := end; ; {
		for _, task := range page.Tasks {
			tasks++
			workers[task.Worker]++
			ok := 0
			for _, at := range task.Attempts {
				if at.Error == "" {
					ok++
				}
			}
			if task.Status != runs.Done || ok != 1 {
				t.Errorf("task %d (%s): %s with %d successful attempts %+v, want DONE by exactly one", task.Index, task.Task, task.Status, ok, task.Attempts)
			}
		}
		if page.TasksNextURL == "" {
			break
		}
		page = ts.do(t, "GET", page.TasksNextURL).run
	}
	if tasks != 201 || len(workers) < 2 || workers[""] > 0 {
		t.Errorf("%d tasks over workers %v, want 201 over at least 2 (each task naming its worker)", tasks, workers)
	}
	t.Logf("tasks per worker: %v (killed %s)", workers, victim)

	// 200 identical POSTs at once, half to each API server: one execution.
	path := "/api/chains/testchains/fanin_chain/JoinTask?leaves=20&salt=singleflight&wait=120s"
	var wg sync.WaitGroup
	codes := make([]int, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Post(bases[i%2]+path, "", nil)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			codes[i] = resp.StatusCode
		}()
	}
	wg.Wait()
	for i, code := range codes {
		if code != http.StatusOK {
			t.Fatalf("POST %d = %d, want 200 (DONE)", i, code)
		}
	}
	key := ts.do(t, "POST", bases[1]+path).run.Key
	executions := 0
	for _, logs := range serverLogs {
		executions += strings.Count(logs.String(), `msg="run finished" key=`+key+" ")
	}
	if executions != 1 {
		t.Errorf("200 POSTs over 2 servers made %d executions of %s, want 1", executions, key)
	}
}

// A task that names a queue (chains.Queuer) runs only on workers serving that queue; until one
// comes it waits in the stream, shown PENDING with its queue, and the driver warns; the rest of
// the run goes to the chain type's queue.
func TestATaskNamingAQueueRunsOnlyOnWorkersServingIt(t *testing.T) {
	c := startQueueCluster(t, 0)
	typeWorker := c.addWorker(t, "--queues", "testchains")
	ts := &testServer{}
	a := ts.do(t, "POST", c.base+"/api/chains/testchains/queues_chain/ReportTask?name=q")
	if a.Code != http.StatusAccepted {
		t.Fatalf("POST = %d %s", a.Code, a.Message)
	}
	task := func(r runDataView, name string) runs.TaskState {
		for _, ts := range r.Tasks {
			if ts.Task == name {
				return ts.TaskState
			}
		}
		return runs.TaskState{}
	}
	st := waitTask(t, ts, a.run.StatusURL, "HelloTask to end while GPUTask waits", func(r runDataView) bool {
		return task(r, "HelloTask").Status == runs.Done
	})
	if g := task(st, "GPUTask"); g.Status != runs.Pending || g.Queue != "gpu" || g.Worker != "" {
		t.Fatalf("GPUTask = %s in queue %q on %q, want PENDING in queue gpu, on no worker; tasks:\n%s", g.Status, g.Queue, g.Worker, taskTable(st.Tasks))
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(c.logs.String(), "no worker serves this queue"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the API server did not warn that no worker serves queue gpu; its log:\n%s", c.logs)
		}
	}
	if st := ts.do(t, "GET", a.run.StatusURL); st.run.JobStatus == nil || *st.run.JobStatus != runs.Running {
		t.Fatalf("with no gpu worker the run is %v, want RUNNING (waiting)", st.run.JobStatus)
	}

	gpuWorker := c.addWorker(t, "--queues", "gpu")
	end := waitTask(t, ts, a.run.StatusURL, "the run to end", func(r runDataView) bool { return r.JobStatus != nil && r.JobStatus.Final() })
	if *end.JobStatus != runs.Done {
		t.Fatalf("run ended %s (%v); tasks:\n%s", *end.JobStatus, end.Error, taskTable(end.Tasks))
	}
	for _, want := range []struct {
		task  string
		queue string
		pid   int
	}{
		{"GPUTask", "gpu", gpuWorker.Process.Pid},
		{"HelloTask", "", typeWorker.Process.Pid},
		{"ReportTask", "", typeWorker.Process.Pid},
	} {
		got := task(end, want.task)
		if got.Queue != want.queue || got.Worker == "" || workerPID(t, got.Worker) != want.pid {
			t.Errorf("%s ran in queue %q on %s, want queue %q on the worker with pid %d", want.task, got.Queue, got.Worker, want.queue, want.pid)
		}
	}
	if b, err := os.ReadFile(filepath.Join(c.target, end.Tasks[0].Key, runs.OutName)); err != nil || string(b) != "gpu q\nhello q\n" {
		t.Errorf("out = %q, %v", b, err)
	}
}

// An API server SIGKILLed while it drives a run through the queue: the server following the
// run takes it over once the lease goes stale, the dead run's tasks are dropped from the
// stream and stopped on the workers, and the run finishes DONE with every out, the tasks the
// dead server finished kept (not run again).
func TestAnAPIServerKilledMidRunIsTakenOver(t *testing.T) {
	c := startQueueCluster(t, 2, "NECTAR_LEASE_TTL=2s", "NECTAR_TASK_PARALLELISM=2")
	other, otherLogs, _ := c.addServer(t)
	ts := &testServer{}
	path := "/api/chains/testchains/fanin_chain/OverlapTask?spans=24&hold=300ms&salt=" + strconv.FormatInt(time.Now().UnixNano(), 36)
	a := ts.do(t, "POST", c.base+path)
	if a.Code != http.StatusAccepted {
		t.Fatalf("POST = %d %s", a.Code, a.Message)
	}
	b := ts.do(t, "POST", other+path) // follows the run the first server drives
	if b.Code != http.StatusAccepted {
		t.Fatalf("POST to the other server = %d %s", b.Code, b.Message)
	}
	done := func(r runDataView) map[string]bool {
		keys := map[string]bool{}
		for _, t := range r.Tasks {
			if t.Status == runs.Done {
				keys[t.Key] = true
			}
		}
		return keys
	}
	st := waitTask(t, ts, b.run.StatusURL, "4 tasks done", func(r runDataView) bool { return len(done(r)) >= 4 })
	doneBefore := done(st)
	c.server.Process.Signal(syscall.SIGKILL)
	killed := time.Now()

	end := waitTask(t, ts, b.run.StatusURL, "the run to end on the other server", func(r runDataView) bool {
		return r.JobStatus != nil && r.JobStatus.Final()
	})
	if *end.JobStatus != runs.Done {
		t.Fatalf("run ended %s (%v); tasks:\n%s\nthe other server's log:\n%s", *end.JobStatus, end.Error, taskTable(end.Tasks), otherLogs)
	}
	if len(end.Tasks) != 25 {
		t.Fatalf("%d tasks, want 25", len(end.Tasks))
	}
	for _, task := range end.Tasks {
		if _, err := os.Stat(filepath.Join(c.target, task.Key, runs.OutName)); err != nil {
			t.Errorf("%s: %v", task.Task, err)
		}
		if doneBefore[task.Key] && !task.Cached {
			t.Errorf("%s %s was done before the kill, yet ran again", task.Task, task.Params)
		}
	}
	abandoned := 0
	for _, logs := range c.workerLogs {
		abandoned += strings.Count(logs.String(), "stopping the tasks of a run whose server stopped")
	}
	if abandoned != 2 {
		t.Errorf("%d workers were told to stop the dead run's tasks, want both", abandoned)
	}
	t.Logf("taken over and finished %s after the kill (lease 2s); %d of %d tasks were done before", time.Since(killed).Round(100*time.Millisecond), len(doneBefore), len(end.Tasks))
}

// With no worker of the chain type running (none started yet, or scaled to zero), a run's
// graph request waits in the type's queue, pending where an autoscaler reads the consumer's
// lag, and the first worker to start takes it; past NECTAR_WORKER_WAIT the run fails saying
// so, and its request is gone from the queue.
func TestARunWaitsInTheQueueForItsFirstWorker(t *testing.T) {
	const wait = 6 * time.Second
	c := startQueueCluster(t, 0, "NECTAR_WORKER_WAIT="+wait.String())
	var url string
	for _, e := range c.env {
		if v, ok := strings.CutPrefix(e, "NECTAR_NATS_URL="); ok {
			url = v
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q, err := queue.Open(ctx, queue.Config{URL: url, Name: "test-observer"})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	pendingIs := func(what string, want func(int) bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			pending, _, err := q.Depth(ctx, "testchains")
			if err == nil && want(pending) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("queue testchains: %d pending (%v), want %s", pending, err, what)
			}
		}
	}
	ts := &testServer{}

	// Nobody comes: the run fails once the wait is over, naming the variable.
	a := ts.do(t, "POST", c.base+"/api/chains/testchains/hello_chain/UpperTask?name=nobody")
	if a.Code != http.StatusAccepted {
		t.Fatalf("POST = %d %s", a.Code, a.Message)
	}
	pendingIs("the graph request pending", func(n int) bool { return n == 1 })
	end := waitTask(t, ts, a.run.StatusURL, "the run to give up", func(r runDataView) bool { return r.JobStatus != nil && r.JobStatus.Final() })
	if *end.JobStatus != runs.Failed || end.Error == nil || !strings.Contains(*end.Error, "no worker with the plugin of chain type testchains took the run within "+wait.String()+" (NECTAR_WORKER_WAIT)") {
		t.Fatalf("run ended %s (%v), want FAILED for want of a worker", *end.JobStatus, end.Error)
	}
	pendingIs("the request gone", func(n int) bool { return n == 0 })

	// A worker comes: it takes the waiting request, and the run ends DONE.
	b := ts.do(t, "POST", c.base+"/api/chains/testchains/hello_chain/UpperTask?name=zero")
	if b.Code != http.StatusAccepted {
		t.Fatalf("POST = %d %s", b.Code, b.Message)
	}
	pendingIs("the graph request pending", func(n int) bool { return n == 1 })
	if st := ts.do(t, "GET", b.run.StatusURL); st.run.JobStatus == nil || st.run.JobStatus.Final() {
		t.Fatalf("with no worker the run is %v, want it waiting", st.run.JobStatus)
	}
	c.addWorker(t)
	end = waitTask(t, ts, b.run.StatusURL, "the run to end", func(r runDataView) bool { return r.JobStatus != nil && r.JobStatus.Final() })
	if *end.JobStatus != runs.Done {
		t.Fatalf("run ended %s (%v), want DONE", *end.JobStatus, end.Error)
	}
	if out, err := os.ReadFile(filepath.Join(c.target, end.Key, runs.OutName)); err != nil || string(out) != "HELLO ZERO\n" {
		t.Errorf("out = %q, %v", out, err)
	}
	pendingIs("nothing pending", func(n int) bool { return n == 0 })
}

// getWorkers is GET /api/workers on the cluster's API server.
func (c *queueCluster) getWorkers(t *testing.T) map[string]runs.WorkerInfo {
	t.Helper()
	return apiWorkers(t, c.base, c.logs)
}

// workerRow is worker id's row of the workers page's table.
func workerRow(t *testing.T, base, id string) string {
	t.Helper()
	resp, err := http.Get(base + "/ui/workers/table")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	_, row, ok := strings.Cut(string(b), `data-worker="`+id+`"`)
	if !ok {
		t.Fatalf("the workers page lists no worker %s:\n%s", id, b)
	}
	row, _, _ = strings.Cut(row, "</tr>")
	return row
}

// apiWorkers is GET /api/workers on base, by id; logs (the server's) are shown on a failure.
func apiWorkers(t *testing.T, base string, logs fmt.Stringer) map[string]runs.WorkerInfo {
	t.Helper()
	resp, err := http.Get(base + "/api/workers")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var env struct {
		Data struct {
			Workers []runs.WorkerInfo `json:"workers"`
		} `json:"data"`
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /api/workers = %d %s; the API server's log:\n%s", resp.StatusCode, b, logs)
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		t.Fatalf("GET /api/workers: %v", err)
	}
	out := map[string]runs.WorkerInfo{}
	for _, w := range env.Data.Workers {
		out[w.ID] = w
	}
	return out
}

// workerOf waits until GET /api/workers lists the worker with pid, and ok holds of it.
func (c *queueCluster) workerOf(t *testing.T, pid int, what string, ok func(runs.WorkerInfo) bool) runs.WorkerInfo {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		for _, w := range c.getWorkers(t) {
			if w.PID == pid && ok(w) {
				return w
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker %d: still not %s; workers: %+v", pid, what, c.getWorkers(t))
		}
	}
}

// The worker monitor: workers are listed with their queues and live counts; a drained worker
// finishes its task and takes no new one; a SIGKILLed one is shown lost within three missed
// heartbeats, cannot be drained, and its task is redelivered to another worker; SIGTERM
// drains a worker, which then exits and shows stopped.
func TestWorkersAreListedDrainedAndLost(t *testing.T) {
	c := startQueueCluster(t, 0, "NECTAR_WORKER_HEARTBEAT=1s", "NECTAR_TASK_ACK_WAIT=2s")
	gpuOnly := c.addWorker(t, "--queues", "testchains")
	other := c.addWorker(t)
	a := c.workerOf(t, gpuOnly.Process.Pid, "running", func(w runs.WorkerInfo) bool { return w.State == runs.WorkerRunning })
	b := c.workerOf(t, other.Process.Pid, "running", func(w runs.WorkerInfo) bool { return w.State == runs.WorkerRunning })
	if strings.Join(a.Queues, ",") != "testchains" || !slices.Contains(b.Queues, "gpu") || !slices.Contains(b.Queues, "testchains") {
		t.Errorf("queues %v and %v; want [testchains], and every queue (gpu among them)", a.Queues, b.Queues)
	}
	if a.Version == "" || a.Host == "" || a.RSSBytes == 0 || a.StartedAt.IsZero() {
		t.Errorf("worker entry %+v: want its version, host, RSS and start", a)
	}

	ts := &testServer{}
	slow, busy := c.sleepOnAWorker(t, ts, "2s")
	idle := a.ID
	if busy == a.ID {
		idle = b.ID
	}
	busyPID := workerPID(t, busy)
	c.workerOf(t, busyPID, "running one task", func(w runs.WorkerInfo) bool { return w.Running == 1 })

	// Drain the busy worker: its task finishes there, the next goes to the other.
	resp, err := http.Post(c.base+"/api/workers/"+busy+"/drain", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("drain = %d, want 202", resp.StatusCode)
	}
	end := waitTask(t, ts, slow.run.StatusURL, "the task to end", func(r runDataView) bool { return r.JobStatus != nil && r.JobStatus.Final() })
	if *end.JobStatus != runs.Done || end.Tasks[0].Worker != busy {
		t.Fatalf("the drained worker's task ended %s on %s; want DONE on %s", *end.JobStatus, end.Tasks[0].Worker, busy)
	}
	c.workerOf(t, busyPID, "drained, with one task done", func(w runs.WorkerInfo) bool {
		return w.State == runs.WorkerDrained && w.Done == 1 && w.Running == 0
	})
	for i := range 4 {
		next := ts.do(t, "POST", c.base+fmt.Sprintf("/api/chains/testchains/hello_chain/HelloTask?name=after-drain-%d&wait=30s", i))
		if next.Code != http.StatusOK || next.run.Tasks[0].Worker != idle {
			t.Fatalf("after the drain: %d, on %q; want DONE on the other worker %s", next.Code, next.run.Tasks[0].Worker, idle)
		}
	}
	if w := c.getWorkers(t)[busy]; w.Done != 1 || w.State != runs.WorkerDrained {
		t.Errorf("the drained worker: %s with %d done; want drained with its one task", w.State, w.Done)
	}
	c.workerOf(t, workerPID(t, idle), "4 tasks done", func(w runs.WorkerInfo) bool { return w.Done == 4 })

	// A third worker joins; SIGKILL whichever of the two takes the next task: it shows lost
	// within three missed heartbeats, cannot be drained, and its task is redelivered to the
	// other, which finishes it.
	c.addWorker(t)
	sleeper, holder := c.sleepOnAWorker(t, ts, "5s") // (until its worker's heartbeat shows it)
	if holder == busy {
		t.Fatalf("the drained worker %s took a task", busy)
	}
	c.workerOf(t, workerPID(t, holder), "running the task", func(w runs.WorkerInfo) bool { return w.Running == 1 })
	killed := time.Now()
	if err := syscall.Kill(workerPID(t, holder), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// (Its task in hand is not counted as running there any more: it is redelivered.)
	c.workerOf(t, workerPID(t, holder), "lost, running nothing", func(w runs.WorkerInfo) bool {
		return w.State == runs.WorkerLost && w.Running == 0 && w.CPUPercent == 0 && w.RSSBytes > 0
	})
	if took := time.Since(killed); took > 10*time.Second {
		t.Errorf("shown lost %s after the kill; want within a few heartbeats (1s each)", took)
	}
	// The workers page shows no figure of the moment for it, and its memory as the last seen.
	if row := workerRow(t, c.base, holder); !strings.Contains(row, "w-lost") || !strings.Contains(row, "—") || !strings.Contains(row, "(last)") {
		t.Errorf("the lost worker's row on the workers page shows no dashes and no last memory:\n%s", row)
	}
	end = waitTask(t, ts, sleeper.run.StatusURL, "the lost worker's task to end", func(r runDataView) bool { return r.JobStatus != nil && r.JobStatus.Final() })
	// (A stall of the machine longer than the ack wait may add an attempt: at least two.)
	if task := end.Tasks[0]; *end.JobStatus != runs.Done || task.Worker == holder || task.Worker == busy || len(task.Attempts) < 2 ||
		!strings.Contains(task.Attempts[0].Error, "worker "+holder+" was lost") {
		t.Errorf("the lost worker's task: %s on %s, attempts %+v; want DONE on the third worker, the lost attempt recorded first",
			*end.JobStatus, task.Worker, task.Attempts)
	}
	resp, err = http.Post(c.base+"/api/workers/"+holder+"/drain", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict {
		t.Errorf("drain of a lost worker = %d, want 409", resp.StatusCode)
	}
	resp, err = http.Post(c.base+"/api/workers/no-such-worker/drain", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("drain of an unknown worker = %d, want 404", resp.StatusCode)
	}

	// SIGTERM drains as the API does: the task in hand finishes there, then the worker exits
	// and is listed stopped.
	last, lastID := c.sleepOnAWorker(t, ts, "2500ms")
	lastPID := workerPID(t, lastID)
	if err := syscall.Kill(lastPID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	end = waitTask(t, ts, last.run.StatusURL, "the stopping worker's task to end", func(r runDataView) bool { return r.JobStatus != nil && r.JobStatus.Final() })
	if *end.JobStatus != runs.Done || end.Tasks[0].Worker != lastID || len(end.Tasks[0].Attempts) != 1 {
		t.Errorf("the task of a worker sent SIGTERM: %s on %s, %d attempts; want DONE there at once", *end.JobStatus, end.Tasks[0].Worker, len(end.Tasks[0].Attempts))
	}
	exited := make(chan error, 1)
	go func() { exited <- c.workers[lastPID].Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("the worker exited with %v after SIGTERM, want 0:\n%s", err, c.workerLogs[lastPID])
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the worker did not exit within 20s of SIGTERM:\n%s", c.workerLogs[lastPID])
	}
	c.workerOf(t, lastPID, "stopped", func(w runs.WorkerInfo) bool { return w.State == runs.WorkerStopped })
}

// A worker that takes only some queues builds graphs only for the chain types they serve: a
// run of another type waits for a worker that does (NECTAR_WORKER_WAIT), then fails saying so,
// instead of starting tasks that no worker takes. Its own types run as before.
func TestAWorkerBuildsGraphsOnlyForTheTypesItServes(t *testing.T) {
	ts := newTestServer(t, func(c *Config) {
		c.Dispatch, c.Queues, c.WorkerWait = "queue", []string{"testchains"}, time.Second
	})
	other := ts.post(t, "/api/chains/airline/delays_chain/ExtractTask?wait=30s")
	if other.run.JobStatus == nil || *other.run.JobStatus != runs.Failed || other.run.Error == nil ||
		!strings.Contains(*other.run.Error, "no worker with the plugin of chain type airline") {
		t.Errorf("a run of a type no worker serves = %d %q %v %v; want FAILED, saying no worker took it", other.Code, other.Message, other.run.JobStatus, other.run.Error)
	}
	if own := ts.post(t, "/api/chains/testchains/hello_chain/HelloTask?name=served&wait=30s"); own.run.JobStatus == nil || *own.run.JobStatus != runs.Done {
		t.Errorf("a run of the type the worker serves = %d %q", own.Code, own.Message)
	}
}
