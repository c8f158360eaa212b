package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// dagRows times fan-ins of n leaves + 1 join (testchains JoinTask) through a real server on a
// fresh local target, nothing cached: every iteration salts the leaves' parameters, so nothing
// is deleted between iterations either (on this machine's ext4, inodes freed a moment ago make
// the next creations slower, which would measure the benchmark, not Nectar). The last row is
// the server's peak RSS over all of them (VmHWM).
func dagRows(client *http.Client, bin string, sizes []int, reps int, env []string) ([]row, error) {
	target, err := os.MkdirTemp("", "nectar-bench-dag-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(target)
	srv, err := startServerProc(filepath.Join(bin, "nectar"), filepath.Join(bin, "plugins"), env, "NECTAR_TARGET="+target)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	if err := postDone(client, srv.base+"/api/chains/testchains/fanin_chain/JoinTask?leaves=10&salt=warm&wait=60s"); err != nil {
		return nil, err
	}
	var rows []row
	var peak int64
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
		rows = append(rows, row{name: "server peak RSS, fan-ins up to 5,000 leaves", p50: fmt.Sprintf("%d MB", peak>>20), goal: "<= 60 MB"})
	}
	return rows, nil
}

var dagGoal = map[int]string{100: "<= 40 ms", 1000: "<= 250 ms", 5000: "<= 1.2 s"}

// vmHWM is a process's peak resident set size in bytes (0 if unknown).
func vmHWM(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
