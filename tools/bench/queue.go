package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"nectar/server/queue/natstest"
)

// queueRows measure the task queue (NATS JetStream) against the direct path it replaces: a
// single run and fan-ins on two servers side by side (NECTAR_DISPATCH=direct and queue,
// round robin so both see the machine at the same moments), then the throughput of 2,000
// trivial tasks with 1, 2 and 3 worker processes on a separate nats-server.
func queueRows(client *http.Client, bin string, runs int) ([]row, error) {
	rows, err := compareRows(client, bin, runs, "direct", []variant{
		{"single run, direct (no queue)", "NECTAR_DISPATCH=direct", ""},
		{"single run, through the embedded JetStream (default)", "NECTAR_DISPATCH=queue", "within 1 ms of direct"},
	})
	if err != nil {
		return nil, err
	}
	fan, err := fanInPair(client, bin, []int{100, 1000}, max(runs/10, 5))
	if err != nil {
		return nil, err
	}
	rows = append(rows, fan...)
	curve, err := workerCurve(client, bin, 2000, []int{1, 2, 3})
	if err != nil {
		return nil, err
	}
	return append(rows, curve...), nil
}

// fanInPair times fan-ins of each size on a direct and a queue server, alternating.
func fanInPair(client *http.Client, bin string, sizes []int, reps int) ([]row, error) {
	modes := []string{"direct", "queue"}
	bases := make([]string, len(modes))
	for i, mode := range modes {
		dir, err := scratch("nectar-bench-q-")
		if err != nil {
			return nil, err
		}
		base, stop, err := startServer(filepath.Join(bin, "nectar"), filepath.Join(bin, "plugins"), nil, "NECTAR_TARGET="+dir, "NECTAR_DISPATCH="+mode)
		if err != nil {
			return nil, err
		}
		defer stop()
		bases[i] = base
		if err := postDone(client, base+"/api/chains/testchains/fanin_chain/JoinTask?leaves=10&salt=warm&wait=60s"); err != nil {
			return nil, err
		}
	}
	var rows []row
	for _, n := range sizes {
		times := make([][]time.Duration, len(modes))
		for r := range reps {
			for i, base := range bases {
				time.Sleep(20 * time.Millisecond)
				salt := fmt.Sprintf("q%d-%d-%d", time.Now().UnixNano(), n, r)
				start := time.Now()
				if err := postDone(client, fmt.Sprintf("%s/api/chains/testchains/fanin_chain/JoinTask?leaves=%d&salt=%s&wait=300s", base, n, salt)); err != nil {
					return nil, err
				}
				times[i] = append(times[i], time.Since(start))
			}
		}
		var direct float64
		for i, mode := range modes {
			sortDurations(times[i])
			p50 := pct(times[i], 50)
			r := row{name: fmt.Sprintf("fan-in %d leaves + join, %s", n, mode), p50: ms(p50), p95: ms(pct(times[i], 95))}
			if i == 0 {
				direct = float64(p50)
			} else {
				r.extra = fmt.Sprintf("%+.1f%% vs direct", 100*(float64(p50)-direct)/direct)
				r.goal = "within 20% of direct"
			}
			rows = append(rows, r)
		}
	}
	return rows, nil
}

// workerCurve runs a fan-in of n trivial leaves (+ a join) through an API server that runs no
// tasks and w worker processes, for each w, all on one nats-server.
func workerCurve(client *http.Client, bin string, n int, workers []int) ([]row, error) {
	nats, err := natstest.Start(1)
	if err != nil {
		return nil, err
	}
	defer nats.Stop()
	target, err := scratch("nectar-bench-workers-")
	if err != nil {
		return nil, err
	}
	env := []string{"NECTAR_TARGET=" + target, "NECTAR_DISPATCH=queue", "NECTAR_NATS_URL=" + nats.URL()}
	srv, err := startServerCmd(filepath.Join(bin, "nectar"), filepath.Join(bin, "plugins"), []string{"serve", "--workers", "0"}, env)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	var rows []row
	var running []func()
	defer func() {
		for _, stop := range running {
			stop()
		}
	}()
	var first float64
	for _, w := range workers {
		for len(running) < w {
			stop, err := startWorker(filepath.Join(bin, "nectar"), filepath.Join(bin, "plugins"), env)
			if err != nil {
				return nil, err
			}
			running = append(running, stop)
		}
		if err := postDone(client, fmt.Sprintf("%s/api/chains/testchains/fanin_chain/JoinTask?leaves=50&salt=warm%d&wait=60s", srv.base, w)); err != nil {
			return nil, err
		}
		var best time.Duration
		for rep := range 2 {
			start := time.Now()
			if err := postDone(client, fmt.Sprintf("%s/api/chains/testchains/fanin_chain/JoinTask?leaves=%d&salt=w%d-%d-%d&wait=300s", srv.base, n, time.Now().UnixNano(), w, rep)); err != nil {
				return nil, err
			}
			if d := time.Since(start); best == 0 || d < best {
				best = d
			}
		}
		perSec := float64(n+1) / best.Seconds()
		r := row{name: fmt.Sprintf("%d trivial tasks, %d worker process(es), nats-server on loopback", n, w), p50: ms(best),
			extra: fmt.Sprintf("%.0f tasks/s", perSec)}
		if w == workers[0] {
			first = perSec
			r.goal = "near-linear until the 2 cores saturate"
		} else {
			r.extra += fmt.Sprintf(" (%.2fx of 1 worker)", perSec/first)
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// startWorker starts `nectar worker` and waits until it takes tasks.
func startWorker(nectar, plugins string, env []string) (func(), error) {
	cmd := exec.Command(nectar, "worker")
	cmd.Env = append(append(os.Environ(), "NECTAR_PLUGIN_DIR="+plugins, "NECTAR_LOG_LEVEL=info"), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop := func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		said := false
		for sc.Scan() {
			line := sc.Text()
			if !said && strings.Contains(line, "nectar worker: taking tasks") {
				said = true
				ready <- true
			}
			if strings.Contains(line, "level=ERROR") || strings.Contains(line, "level=WARN") {
				fmt.Fprintln(os.Stderr, line)
			}
		}
		io.Copy(io.Discard, out)
		if !said {
			ready <- false
		}
	}()
	select {
	case ok := <-ready:
		if !ok {
			stop()
			return nil, errors.New("nectar worker exited at start")
		}
	case <-time.After(15 * time.Second):
		stop()
		return nil, errors.New("nectar worker did not start within 15s")
	}
	return stop, nil
}
