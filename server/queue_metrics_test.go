package server

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"nectar/server/runs"
)

// /metrics follows a burst from any API server: 500 runs POSTed while no worker listens wait as
// 500 messages in their chain type's queue (their graph requests: what KEDA scales a worker
// Deployment up from zero on), then a worker with 8 slots takes them, never more than 8 at
// once, and pending and in-flight go back to zero as every run ends DONE. The worker's plugin
// processes stay near its slots however many runs wait.
func TestQueueMetricsFollowABurstOf500Tasks(t *testing.T) {
	const burst, slots, maxRuns = 500, 8, 2
	c := startQueueCluster(t, 0, "NECTAR_MAX_RUNS=600", "NECTAR_MAX_QUEUE=100")
	ts := &testServer{}
	if got := waitMetrics(t, c.base, "the first scrape", func(queueMetrics) bool { return true }); got.workers[runs.WorkerRunning] != 0 || got.pending != 0 {
		t.Fatalf("before the burst: %+v, want no worker and nothing pending", got)
	}

	statusURLs := make([]string, burst)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range burst {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			a := ts.do(t, "POST", fmt.Sprintf("%s/api/chains/testchains/hello_chain/HelloTask?name=burst%d", c.base, i))
			if a.Code != http.StatusAccepted {
				t.Errorf("POST %d = %d %s", i, a.Code, a.Message)
				return
			}
			statusURLs[i] = a.run.StatusURL
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	waitMetrics(t, c.base, "the burst to wait in the queue", func(m queueMetrics) bool { return m.pending == burst })
	t.Logf("%d runs waiting in the queue", burst)
	started := time.Now()

	c.workerEnv = []string{fmt.Sprintf("NECTAR_MAX_RUNS=%d", maxRuns)} // the plugin processes it keeps
	worker := c.addWorker(t, "--slots", strconv.Itoa(slots))
	peakProcs := watchChildren(t, worker.Process.Pid)
	var maxFlight, lowestPending float64 = 0, burst
	end := waitMetrics(t, c.base, "the queue to empty", func(m queueMetrics) bool {
		maxFlight, lowestPending = max(maxFlight, m.inFlight), min(lowestPending, m.pending)
		return m.pending == 0 && m.inFlight == 0 && m.workers[runs.WorkerRunning] == 1
	})
	procs := peakProcs()
	t.Logf("queue empty %s after the worker started; in flight up to %v; plugin processes up to %d", time.Since(started), maxFlight, procs)
	if maxFlight < 1 || maxFlight > slots {
		t.Errorf("in flight went up to %v, want 1 to the worker's %d slots", maxFlight, slots)
	}
	// Each message in hand may keep a process busy. Beyond those the worker keeps about
	// NECTAR_MAX_RUNS (in lanes, reserved for a run's first task, and the pool's spares), and
	// the processes of runs that just ended are on their way out: the count follows the slots,
	// not the 500 runs waiting (it went past 100 when every run kept a process of its own, and
	// to 36 when each spare taken was started again whatever the worker held). Measured here:
	// 6.
	if procs < 1 || procs > 2*slots {
		t.Errorf("the worker ran up to %d plugin processes at once; want 1 to %d (%d slots, NECTAR_MAX_RUNS=%d)", procs, 2*slots, slots, maxRuns)
	}
	for _, s := range []string{runs.WorkerDraining, runs.WorkerDrained, runs.WorkerStopped, runs.WorkerLost} {
		if end.workers[s] != 0 {
			t.Errorf("%s workers = %v, want 0 (all: %v)", s, end.workers[s], end.workers)
		}
	}
	for i, u := range statusURLs {
		st := waitTask(t, ts, u, fmt.Sprintf("run %d to end", i), func(r runDataView) bool { return r.JobStatus != nil && r.JobStatus.Final() })
		if *st.JobStatus != runs.Done {
			t.Fatalf("run %d ended %s (%v)", i, *st.JobStatus, st.Error)
		}
	}
}

// queueMetrics is what /metrics says about the testchains queue and the workers.
type queueMetrics struct {
	pending, inFlight float64
	workers           map[string]float64
	text              string
}

var (
	pendingLine = regexp.MustCompile(`(?m)^` + metricPending + `\{queue="testchains"\} (\S+)$`)
	flightLine  = regexp.MustCompile(`(?m)^` + metricInFlight + `\{queue="testchains"\} (\S+)$`)
	workersLine = regexp.MustCompile(`(?m)^` + metricWorkers + `\{state="(\w+)"\} (\S+)$`)
)

func scrapeQueue(t *testing.T, base string) queueMetrics {
	t.Helper()
	code, body := fetch(t, base+"/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics = %d %s", code, body)
	}
	m := queueMetrics{workers: map[string]float64{}, text: string(body)}
	num := func(s string) float64 {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("/metrics: %q is no number", s)
		}
		return v
	}
	if g := pendingLine.FindStringSubmatch(m.text); g != nil {
		m.pending = num(g[1])
	}
	if g := flightLine.FindStringSubmatch(m.text); g != nil {
		m.inFlight = num(g[1])
	}
	for _, g := range workersLine.FindAllStringSubmatch(m.text, -1) {
		m.workers[g[1]] = num(g[2])
	}
	return m
}

// waitMetrics scrapes every 50 ms until ok, for at most two minutes. A scrape that could not
// read the queue (its series missing: a busy machine) does not count.
func waitMetrics(t *testing.T, base, what string, ok func(queueMetrics) bool) queueMetrics {
	t.Helper()
	var m queueMetrics
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if m = scrapeQueue(t, base); len(m.workers) > 0 && ok(m) {
			return m
		}
	}
	t.Fatalf("after two minutes, still waiting for %s: pending %v, in flight %v, workers %v", what, m.pending, m.inFlight, m.workers)
	return m
}

// watchChildren counts the live child processes of pid every 10 ms until the test ends, and
// returns a function that gives the most seen at once so far.
func watchChildren(t *testing.T, pid int) func() int {
	var peak atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			peak.Store(max(peak.Load(), int64(countChildren(pid))))
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return func() int { return int(peak.Load()) }
}

// countChildren is the number of live processes whose parent is pid (field 4 of
// /proc/<n>/stat, after the command name in parentheses).
func countChildren(pid int) int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	n := 0
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		s := string(b)
		if j := strings.LastIndexByte(s, ')'); j >= 0 {
			if fields := strings.Fields(s[j+1:]); len(fields) > 1 && fields[0] != "Z" && fields[1] == strconv.Itoa(pid) {
				n++
			}
		}
	}
	return n
}
