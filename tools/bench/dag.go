package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"nectar/tools/syscount"
)

// dagRows times fan-ins of n leaves + 1 join (testchains JoinTask) through a real server on a
// fresh local target, nothing cached: every iteration salts the leaves' parameters, so nothing
// is deleted between iterations either (on this machine's ext4, inodes freed a moment ago make
// the next creations slower, which would measure the benchmark, not Nectar). The last row is
// the server's peak RSS over all of them (VmHWM).
func dagRows(client *http.Client, bin string, sizes []int, reps int, env []string) ([]row, error) {
	target, err := scratch("nectar-bench-dag-")
	if err != nil {
		return nil, err
	}
	srv, err := startServerProc(filepath.Join(bin, "nectar"), filepath.Join(bin, "plugins"), env, "NECTAR_TARGET="+target)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	if err := postDone(client, srv.base+"/api/chains/testchains/fanin_chain/JoinTask?leaves=10&salt=warm&wait=60s"); err != nil {
		return nil, err
	}
	var rows []row
	var peak, anon, file int64
	for _, n := range sizes {
		var times []time.Duration
		for i := 0; i < reps; i++ {
			time.Sleep(20 * time.Millisecond) // the warm spare of the last run comes up
			salt := fmt.Sprintf("b%d-%d-%d", time.Now().UnixNano(), n, i)
			start := time.Now()
			if err := postDone(client, fmt.Sprintf("%s/api/chains/testchains/fanin_chain/JoinTask?leaves=%d&salt=%s&wait=300s", srv.base, n, salt)); err != nil {
				return nil, err
			}
			times = append(times, time.Since(start))
		}
		if n == 5000 {
			peak = max(peak, vmHWM(srv.pid))
			anon, file = procStatusKB(srv.pid, "RssAnon:"), procStatusKB(srv.pid, "RssFile:")
		}
		sortDurations(times)
		p50 := pct(times, 50)
		rows = append(rows, row{
			name:  fmt.Sprintf("fan-in %d leaves + join, local (POST?wait to DONE)", n),
			p50:   ms(p50),
			p95:   ms(pct(times, 95)),
			extra: fmt.Sprintf("%.3f ms per task", float64(p50.Microseconds())/1000/float64(n+1)),
			goal:  dagGoal[n],
		})
	}
	if peak > 0 {
		// What the peak is made of, as it is after the last run: the Go heap and the runtime's
		// (anonymous), and the pages of the binary the kernel has mapped (file).
		rows = append(rows, row{name: "server peak RSS, fan-ins up to 5,000 leaves", p50: fmt.Sprintf("%.0f MB", float64(peak)/1e6),
			extra: fmt.Sprintf("after: %.0f MB anonymous, %.0f MB of files (the binary)", float64(anon)/1e6, float64(file)/1e6), goal: "<= 60 MB"})
	}
	return rows, nil
}

var dagGoal = map[int]string{100: "<= 40 ms", 1000: "<= 250 ms", 5000: "<= 1.2 s"}

// vmHWM is a process's peak resident set size in bytes (0 if unknown).
func vmHWM(pid int) int64 { return procStatusKB(pid, "VmHWM:") }

// procStatusKB is the field (a size in kB) of /proc/<pid>/status, in bytes.
func procStatusKB(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// syscallRow counts, with strace, the server's system calls on the store's files during a
// 1,000-leaf fan-in, per task.
func syscallRow(client *http.Client, bin string) (row, error) {
	target, err := scratch("nectar-bench-sys-")
	if err != nil {
		return row{}, err
	}
	srv, err := startServerProc(filepath.Join(bin, "nectar"), filepath.Join(bin, "plugins"), nil, "NECTAR_TARGET="+target)
	if err != nil {
		return row{}, err
	}
	defer srv.stop()
	if err := postDone(client, srv.base+"/api/chains/testchains/fanin_chain/JoinTask?leaves=10&salt=warm&wait=60s"); err != nil {
		return row{}, err
	}
	tr, err := syscount.Start(srv.pid, target)
	if err != nil {
		return row{}, err
	}
	err = postDone(client, srv.base+"/api/chains/testchains/fanin_chain/JoinTask?leaves=1000&salt=sys&wait=120s")
	c, serr := tr.Stop()
	if err = errors.Join(err, serr); err != nil {
		return row{}, err
	}
	return row{name: "server system calls on the store per task (fan-in 1,000, strace)",
		p50: fmt.Sprintf("%.1f", float64(c.Total)/1001), extra: c.String(), goal: "<= 12"}, nil
}

// bigStatusRows runs a 50,000-leaf fan-in, then has conns clients read its status for d and
// reports the server's resident memory: peak during the reads, and the answers' rate.
func bigStatusRows(bin string, conns int, d time.Duration) ([]row, error) {
	srv, err := scratchServer(bin, "nectar-bench-big-")
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}, Timeout: 10 * time.Minute}
	start := time.Now()
	resp, err := client.Post(srv.base+"/api/chains/testchains/fanin_chain/JoinTask?leaves=50000&salt=big&wait=5m", "", nil)
	if err != nil {
		return nil, err
	}
	var env struct {
		Data struct {
			JobStatus string `json:"job_status"`
			StatusURL string `json:"status_url"`
		} `json:"data"`
	}
	err = json.NewDecoder(resp.Body).Decode(&env)
	resp.Body.Close()
	if err != nil || env.Data.JobStatus != "DONE" {
		return nil, fmt.Errorf("the 50,000-leaf fan-in: %v %s", err, env.Data.JobStatus)
	}
	took := time.Since(start)
	before := vmRSS(srv.pid)
	stopPeak := peakRSS(srv.pid)
	// The biggest page a reader may ask for (the default is 100 tasks): the memory bound holds
	// for it too.
	rps, lat, err := load(client, http.MethodGet, env.Data.StatusURL+"&tasks_limit=1000", conns, d)
	p := stopPeak()
	if err != nil {
		return nil, err
	}
	rows := []row{
		{name: "fan-in 50,000 leaves + join, local", p50: ms(took), extra: fmt.Sprintf("%.3f ms per task", float64(took.Microseconds())/1000/50001)},
		{name: fmt.Sprintf("status GET of the 50,000-task run, pages of 1,000 tasks (%d connections)", conns), p50: ms(pct(lat, 50)), p95: ms(pct(lat, 95)),
			extra: fmt.Sprintf("%.0f req/s; server RSS %.0f MB before, %.0f MB peak", rps, float64(before)/1e6, float64(p)/1e6), goal: "RSS <= 200 MB"},
	}
	srv.stop()
	ui, err := liveRunPageRow(bin, conns, d)
	if err != nil {
		return rows, err
	}
	return append(rows, ui), nil
}

// liveRunPageRow starts a 50,000-leaf fan-in on a server of its own and, while it runs, has
// conns clients load its page in the web UI (the page a browser polls every second): the
// answers' rate, and the server's resident memory before and at its peak during the reads.
func liveRunPageRow(bin string, conns int, d time.Duration) (row, error) {
	srv, err := scratchServer(bin, "nectar-bench-live-")
	if err != nil {
		return row{}, err
	}
	defer srv.stop()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}, Timeout: time.Minute}
	resp, err := client.Post(srv.base+"/api/chains/testchains/fanin_chain/JoinTask?leaves=50000&salt=live", "", nil)
	if err != nil {
		return row{}, err
	}
	if resp.StatusCode != http.StatusAccepted {
		resp.Body.Close()
		return row{}, fmt.Errorf("starting the live 50,000-leaf fan-in: %s", resp.Status)
	}
	var env struct {
		Data struct {
			Key       string `json:"key"`
			StatusURL string `json:"status_url"`
		} `json:"data"`
	}
	err = json.NewDecoder(resp.Body).Decode(&env)
	resp.Body.Close()
	if err != nil || env.Data.Key == "" {
		return row{}, fmt.Errorf("starting the live 50,000-leaf fan-in: %v", err)
	}
	// Its run ID, from the run history (written in batches).
	var runID string
	for deadline := time.Now().Add(30 * time.Second); runID == ""; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			return row{}, fmt.Errorf("the live 50,000-leaf fan-in is not in the run history after 30 s")
		}
		r, err := client.Get(srv.base + "/api/runs?limit=1&key=" + url.QueryEscape(env.Data.Key))
		if err != nil {
			return row{}, err
		}
		var page struct {
			Data struct {
				Runs []struct {
					RunID string `json:"run_id"`
					Key   string `json:"key"`
				} `json:"runs"`
			} `json:"data"`
		}
		err = json.NewDecoder(r.Body).Decode(&page)
		r.Body.Close()
		if err == nil && len(page.Data.Runs) > 0 && page.Data.Runs[0].Key == env.Data.Key {
			runID = page.Data.Runs[0].RunID
		}
	}
	if st := jobStatus(client, env.Data.StatusURL); st != "RUNNING" && st != "PENDING" {
		return row{}, fmt.Errorf("the live 50,000-leaf fan-in is %s before its page is read", st)
	}
	before := vmRSS(srv.pid)
	stopPeak := peakRSS(srv.pid)
	rps, lat, err := load(client, http.MethodGet, srv.base+"/runs/"+runID, conns, d)
	p := stopPeak()
	if err != nil {
		return row{}, err
	}
	// Still running at the end, or some reads were of a finished run.
	live := "still running at the end"
	if st := jobStatus(client, env.Data.StatusURL); st != "RUNNING" && st != "PENDING" {
		live = "ended during the reads: " + st
	}
	return row{name: fmt.Sprintf("web UI page of a live 50,000-task run (%d connections)", conns), p50: ms(pct(lat, 50)), p95: ms(pct(lat, 95)),
		extra: fmt.Sprintf("%.0f req/s; server RSS %.0f MB before, %.0f MB peak; the run %s", rps, float64(before)/1e6, float64(p)/1e6, live), goal: "RSS <= 200 MB"}, nil
}

// scratchServer starts a server of bin on a fresh target in the scratch folder.
func scratchServer(bin, prefix string) (*server, error) {
	target, err := scratch(prefix)
	if err != nil {
		return nil, err
	}
	return startServerProc(filepath.Join(bin, "nectar"), filepath.Join(bin, "plugins"), nil, "NECTAR_TARGET="+target)
}

// jobStatus is the job_status of a status URL's answer ("" if it cannot be read).
func jobStatus(client *http.Client, statusURL string) string {
	resp, err := client.Get(statusURL + "&tasks_limit=1")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var s struct {
		Data struct {
			JobStatus string `json:"job_status"`
		} `json:"data"`
	}
	json.NewDecoder(resp.Body).Decode(&s)
	return s.Data.JobStatus
}

// peakRSS samples a process's resident set size every 20 ms until the returned function is
// called, which returns the largest.
func peakRSS(pid int) (stop func() int64) {
	done := make(chan struct{})
	peak := make(chan int64)
	go func() {
		var p int64
		for {
			p = max(p, vmRSS(pid))
			select {
			case <-done:
				peak <- p
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return func() int64 {
		close(done)
		return <-peak
	}
}

// vmRSS is a process's resident set size now, in bytes.
func vmRSS(pid int) int64 { return procStatusKB(pid, "VmRSS:") }
