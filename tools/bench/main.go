// Command bench measures Nectar end to end on this machine and prints a table: the real server
// binary (bin/nectar) on a free loopback port with a fresh local target, driven over HTTP.
//
//	go run ./tools/bench [-runs 50] [-duration 5s] [-conns 16]
//
// `make bench` builds first, then runs this and the Go micro-benchmarks.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"nectar/plugins"
	"nectar/plugins/host"
	"nectar/targets/miniotest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type row struct {
	name, p50, p95, extra, goal string
}

func run() error {
	runs := flag.Int("runs", 50, "iterations of each latency benchmark")
	duration := flag.Duration("duration", 5*time.Second, "how long the load driver runs")
	conns := flag.Int("conns", 16, "connections of the load driver")
	bin := flag.String("bin", "bin", "folder holding nectar and plugins/")
	airlineOnly := flag.Bool("airline", false, "run only the airline chain on the real flights (make demo-data fetches them)")
	minioOnly := flag.Bool("minio", false, "run only the MinIO and S3 rows")
	dagOnly := flag.Bool("dag", false, "run only the big-graph rows (fan-ins, commit syscalls, the 50,000-task run)")
	httpOnly := flag.Bool("http", false, "run only the single run, cache-hit POST and status GET rows")
	queueOnly := flag.Bool("queue", false, "run only the task queue rows (direct against queue, and 1 to 3 worker processes)")
	flag.Func("env", "NAME=value for every benchmark server (repeatable), to compare settings", func(v string) error {
		extraEnv = append(extraEnv, v)
		return nil
	})
	scratchParent := flag.String("scratch", ".bench-scratch", "folder the benchmark targets are made in (removed at the end)")
	flag.Parse()
	removeScratch, err := makeScratch(*scratchParent)
	if err != nil {
		return err
	}
	defer removeScratch()
	if *bin, err = stageBinaries(*bin); err != nil {
		return err
	}
	if *minioOnly {
		rows, err := minioRows(*bin, *runs, *conns, *duration)
		if err != nil {
			return err
		}
		return printRows(rows)
	}
	if *dagOnly {
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *conns, MaxConnsPerHost: *conns}}
		leafFloor, err := leafFilesRow(5000)
		if err != nil {
			return err
		}
		rows, err := dagRows(client, *bin, []int{10, 100, 1000, 5000}, max(*runs/10, 3), nil)
		if err != nil {
			return err
		}
		rows = append([]row{leafFloor}, rows...)
		sys, err := syscallRow(client, *bin)
		if err != nil {
			return err
		}
		big, err := bigStatusRows(*bin, *conns, *duration)
		if err != nil {
			return err
		}
		return printRows(append(append(rows, sys), big...))
	}
	if *queueOnly {
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *conns, MaxConnsPerHost: *conns}}
		rows, err := queueRows(client, *bin, *runs)
		if err != nil {
			return err
		}
		return printRows(rows)
	}
	if *airlineOnly {
		rows, err := airlineRows(*bin)
		if err != nil {
			return err
		}
		return printRows(rows)
	}

	pluginBin := filepath.Join(*bin, "plugins", "testchains")
	if _, err := os.Stat(pluginBin); err != nil {
		return fmt.Errorf("%w (run make build)", err)
	}
	var rows []row

	// Floor 1: plain exec of the plugin binary (it exits at once without the handshake cookie).
	d, err := measure(*runs, func(int) error {
		cmd := exec.Command(pluginBin)
		_ = cmd.Run() // exits 1 by design
		return nil
	})
	if err != nil {
		return err
	}
	rows = append(rows, row{"floor: exec plugin binary", ms(pct(d, 50)), ms(pct(d, 95)), "", ""})

	// Floor 2: go-plugin launch + one gRPC call + kill, without the server.
	launcher, err := host.NewLauncher(filepath.Join(*bin, "plugins"), nil)
	if err != nil {
		return err
	}
	defer launcher.Close()
	d, err = measure(*runs, func(int) error {
		p, err := launcher.Start("testchains", nil)
		if err != nil {
			return err
		}
		defer p.Kill()
		_, err = p.Graph(context.Background(), graphReq())
		return err
	})
	if err != nil {
		return err
	}
	rows = append(rows, row{"floor: plugin launch+call+kill", ms(pct(d, 50)), ms(pct(d, 95)), "", ""})
	// Floors 3 and 4: what the single run's goal was set against (a warm call and one small
	// durable write, ~0.2 ms and a few hundred microseconds where the goal was set).
	call, err := warmCallRow(launcher, *runs)
	if err != nil {
		return err
	}
	write, err := durableWriteRow(*runs)
	if err != nil {
		return err
	}
	rows = append(rows, call, write)

	target, err := scratch("nectar-bench-")
	if err != nil {
		return err
	}
	base, stop, err := startServer(filepath.Join(*bin, "nectar"), filepath.Join(*bin, "plugins"), nil, "NECTAR_TARGET="+target)
	if err != nil {
		return err
	}
	defer stop()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *conns, MaxConnsPerHost: *conns}}

	single, err := singleRun(client, base, *runs)
	if err != nil {
		return err
	}
	rows = append(rows, row{"single HelloTask run (POST?wait to DONE), warm plugin", ms(pct(single, 50)), ms(pct(single, 95)), "", "<= 3 ms p50 (luigi 250 ms)"})
	if *httpOnly {
		load, err := loadRows(client, base, *conns, *duration)
		if err != nil {
			return err
		}
		return printRows(append(rows, load...))
	}

	// The monitor's cost: the same run with sampling effectively off (an hour apart) and at
	// its densest (100 ms), each on its own server, interleaved to share the machine's mood.
	mon, err := compareRows(client, *bin, *runs, "off", []variant{
		{"single run, monitor off (every 1h)", "NECTAR_MONITOR_INTERVAL=1h", ""},
		{"single run, monitor every 1s (default)", "NECTAR_MONITOR_INTERVAL=1s", "within 5% of off"},
		{"single run, monitor every 100ms", "NECTAR_MONITOR_INTERVAL=100ms", ""},
		{"single run, no warm plugin (cold exec)", "NECTAR_WARM_PLUGINS=false", ""},
	})
	if err != nil {
		return err
	}
	rows = append(rows, mon...)
	// The run history's cost on a run: the index written in batches beside it, or not at all.
	hist, err := compareRows(client, *bin, *runs, "off", []variant{
		{"single run, run history off", "NECTAR_DATABASE_URL=off", ""},
		{"single run, run history on (default)", "", "within 1 ms of off"},
	})
	if err != nil {
		return err
	}
	rows = append(rows, hist...)
	// The task queue against the direct path it replaces, and workers in processes of their own.
	qrows, err := queueRows(client, *bin, *runs)
	if err != nil {
		return err
	}
	rows = append(rows, qrows...)

	// Big graphs: fan-ins of 10 to 5,000 leaves + a join, the system calls per task, and the
	// server's memory while 16 clients read the status of a 50,000-leaf run.
	leafFloor, err := leafFilesRow(5000)
	if err != nil {
		return err
	}
	dag, err := dagRows(client, *bin, []int{10, 100, 1000, 5000}, max(*runs/10, 3), nil)
	if err != nil {
		return err
	}
	rows = append(append(rows, leafFloor), dag...)
	sys, err := syscallRow(client, *bin)
	if err != nil {
		return err
	}
	rows = append(rows, sys)
	big, err := bigStatusRows(*bin, *conns, *duration)
	if err != nil {
		return err
	}
	rows = append(rows, big...)

	load, err := loadRows(client, base, *conns, *duration)
	if err != nil {
		return err
	}
	rows = append(rows, load...)

	lists, err := historyRows(*bin, *runs)
	if err != nil {
		return err
	}
	rows = append(rows, lists...)

	// A real ETL on real data: the airline chain, end to end.
	arows, err := airlineRows(*bin)
	if err != nil {
		return err
	}
	rows = append(rows, arows...)

	// The same on a real MinIO, through each SDK, beside the floor of one small PUT.
	mrows, err := minioRows(*bin, *runs, *conns, *duration)
	if err != nil {
		return err
	}
	rows = append(rows, mrows...)

	return printRows(rows)
}

func printRows(rows []row) error {
	w := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(w, "benchmark\tp50\tp95\tthroughput\tgoal")
	fmt.Fprintln(w, "---------\t---\t---\t----------\t----")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", r.name, r.p50, r.p95, r.extra, r.goal)
	}
	return w.Flush()
}

func singleRun(client *http.Client, base string, runs int) ([]time.Duration, error) {
	prefix := fmt.Sprintf("bench%d-", time.Now().UnixNano())
	// A server's first runs share the machine with its start (the warm spare's launch, the
	// history's first writes): the row is about a warm server.
	for i := range 20 {
		if err := postDone(client, fmt.Sprintf("%s/api/chains/testchains/hello_chain/HelloTask?name=%swarm%d&wait=30s", base, prefix, i)); err != nil {
			return nil, err
		}
	}
	return measure(runs, func(i int) error {
		return postDone(client, fmt.Sprintf("%s/api/chains/testchains/hello_chain/HelloTask?name=%s%d&wait=30s", base, prefix, i))
	})
}

// variant is one server configuration of a comparison.
type variant struct{ name, env, goal string }

// compareRows times a single run on one server per variant, round robin, so every server sees
// the same machine at the same moments; each row after the first says how far it is from the
// first (named baseline).
func compareRows(client *http.Client, bin string, runs int, baseline string, configs []variant) ([]row, error) {
	bases := make([]string, len(configs))
	for i, c := range configs {
		dir, err := scratch("nectar-bench-mon-")
		if err != nil {
			return nil, err
		}
		url, stop, err := startServer(filepath.Join(bin, "nectar"), filepath.Join(bin, "plugins"), nil, "NECTAR_TARGET="+dir, c.env)
		if err != nil {
			return nil, err
		}
		defer stop()
		bases[i] = url
	}
	// Round robin, so every server sees the same machine at the same moments.
	times := make([][]time.Duration, len(configs))
	prefix := fmt.Sprintf("mon%d-", time.Now().UnixNano())
	for n := -1; n < 2*runs; n++ {
		for i, base := range bases {
			start := time.Now()
			if err := postDone(client, fmt.Sprintf("%s/api/chains/testchains/hello_chain/HelloTask?name=%s%d&wait=30s", base, prefix, n)); err != nil {
				return nil, err
			}
			if n >= 0 { // n = -1 warms up
				times[i] = append(times[i], time.Since(start))
			}
			time.Sleep(5 * time.Millisecond) // let the warm spare of the last run come up
		}
	}
	var out []row
	off := 0.0
	for i, c := range configs {
		sortDurations(times[i])
		p50 := pct(times[i], 50)
		r := row{name: c.name, p50: ms(p50), p95: ms(pct(times[i], 95)), goal: c.goal}
		if i == 0 {
			off = float64(p50)
		} else {
			r.extra = fmt.Sprintf("%+.1f%% (%+.2f ms) vs %s", 100*(float64(p50)-off)/off, (float64(p50)-off)/1e6, baseline)
		}
		out = append(out, r)
	}
	return out, nil
}

func cacheHit(client *http.Client, base string, conns int, d time.Duration) (row, error) {
	hitURL := base + "/api/chains/testchains/hello_chain/HelloTask?name=cache-hit"
	if err := postDone(client, hitURL+"&wait=30s"); err != nil {
		return row{}, err
	}
	rps, lat, err := load(client, http.MethodPost, hitURL, conns, d)
	if err != nil {
		return row{}, err
	}
	return row{fmt.Sprintf("cache hit POST (%d connections)", conns), ms(pct(lat, 50)), ms(pct(lat, 95)),
		fmt.Sprintf("%.0f req/s, p99 %s", rps, ms(pct(lat, 99))), ">= 10,000 req/s, p99 <= 5 ms"}, nil
}

// loadRows are the cache-hit POST and status GET rows, at conns connections.
func loadRows(client *http.Client, base string, conns int, d time.Duration) ([]row, error) {
	hit, err := cacheHit(client, base, conns, d)
	if err != nil {
		return nil, err
	}
	st, err := statusGet(client, base, conns, d)
	if err != nil {
		return nil, err
	}
	return []row{hit, st}, nil
}

// statusGet drives GETs of a finished run's status URL.
func statusGet(client *http.Client, base string, conns int, d time.Duration) (row, error) {
	resp, err := client.Post(base+"/api/chains/testchains/hello_chain/HelloTask?name=status-get&wait=30s", "", nil)
	if err != nil {
		return row{}, err
	}
	var env struct {
		Data struct {
			StatusURL string `json:"status_url"`
		} `json:"data"`
	}
	err = json.NewDecoder(resp.Body).Decode(&env)
	resp.Body.Close()
	if err != nil {
		return row{}, err
	}
	rps, lat, err := load(client, http.MethodGet, env.Data.StatusURL, conns, d)
	if err != nil {
		return row{}, err
	}
	return row{fmt.Sprintf("status GET of a finished run (%d connections)", conns), ms(pct(lat, 50)), ms(pct(lat, 95)),
		fmt.Sprintf("%.0f req/s, p99 %s", rps, ms(pct(lat, 99))), ">= 10,000 req/s, p99 <= 5 ms"}, nil
}

func minioRows(bin string, runs, conns int, d time.Duration) ([]row, error) {
	srv, err := miniotest.Start()
	if err != nil {
		return nil, err
	}
	defer srv.Stop()
	client, err := minio.New(srv.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(srv.AccessKey, srv.SecretKey, "")})
	if err != nil {
		return nil, err
	}
	put, err := measure(runs, func(i int) error {
		_, err := client.PutObject(context.Background(), srv.Bucket, fmt.Sprintf("floor/%d", i), strings.NewReader("hello bench\n"), 12, minio.PutObjectOptions{})
		return err
	})
	if err != nil {
		return nil, err
	}
	rows := []row{{"floor: one small MinIO PUT (minio-go)", ms(pct(put, 50)), ms(pct(put, 95)), "", ""}}
	floor, err := fanInFloor(client, srv.Bucket, conns)
	if err != nil {
		return nil, err
	}
	rows = append(rows, row{fmt.Sprintf("a 1,000-leaf fan-in's requests from one client, %d at a time (see fanInFloor)", conns), ms(floor), "", "", ""})
	env := []string{"MINIO_ACCESS_KEY=" + srv.AccessKey, "MINIO_SECRET_KEY=" + srv.SecretKey,
		"AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey, "AWS_REGION=us-east-1"}
	httpc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}}
	for _, t := range []struct{ name, target string }{
		{"s3", fmt.Sprintf("s3://%s/bench-s3?endpoint=%s", srv.Bucket, srv.URL())},
		{"minio", fmt.Sprintf("minio://%s/%s/bench-minio?secure=false", srv.Endpoint, srv.Bucket)},
	} {
		// A remote store's default index would be ./local_targets/.history.db: keep it apart.
		db := filepath.Join(os.TempDir(), fmt.Sprintf("nectar-bench-%s-%d.db", t.name, os.Getpid()))
		defer os.Remove(db)
		base, stop, err := startServer(filepath.Join(bin, "nectar"), filepath.Join(bin, "plugins"), env, "NECTAR_TARGET="+t.target,
			"NECTAR_DATABASE_URL=sqlite:"+db)
		if err != nil {
			return nil, err
		}
		single, err := singleRun(httpc, base, runs)
		if err == nil {
			rows = append(rows, row{"single HelloTask run on " + t.name + "://", ms(pct(single, 50)), ms(pct(single, 95)), "", ""})
			var hit row
			if hit, err = cacheHit(httpc, base, conns, d); err == nil {
				hit.name += " on " + t.name + "://"
				hit.goal = ""
				rows = append(rows, hit)
			}
			if err == nil { // a big fan-in: existence checks and commits go side by side
				var fan []time.Duration
				for i := 0; i < 2 && err == nil; i++ {
					start := time.Now()
					err = postDone(httpc, fmt.Sprintf("%s/api/chains/testchains/fanin_chain/JoinTask?leaves=1000&salt=%s%d-%d&wait=300s", base, t.name, time.Now().UnixNano(), i))
					fan = append(fan, time.Since(start))
				}
				sortDurations(fan)
				rows = append(rows, row{"fan-in 1,000 leaves + join on " + t.name + "://", ms(pct(fan, 50)), ms(pct(fan, 95)), "", "<= 2 s"})
			}
		}
		stop()
		if err != nil {
			return nil, fmt.Errorf("%s target: %w", t.name, err)
		}
	}
	return rows, nil
}

// fanInFloor is the least a 1,000-leaf fan-in asks of the store, sent straight from a client
// with the server's parallelism: a HEAD per leaf finding no out, then a PUT of its out, with
// the metadata that says no log goes with it (a leaf logs nothing: it stores none; the join
// reads the spool copies of the outs its lane uploaded: no GET), phase after phase, conns at a
// time. MinIO runs on the same cores as the server here: this is what its requests cost it,
// not a bound (the server overlaps the phases and sends more at once).
func fanInFloor(client *minio.Client, bucket string, conns int) (time.Duration, error) {
	ctx := context.Background()
	prefix := fmt.Sprintf("floor-fan-in/%d/", time.Now().UnixNano())
	start := time.Now()
	for _, step := range []func(i int) error{
		func(i int) error {
			_, err := client.StatObject(ctx, bucket, fmt.Sprintf("%s%d/out", prefix, i), minio.StatObjectOptions{})
			if minio.ToErrorResponse(err).Code == "NoSuchKey" {
				return nil
			}
			return fmt.Errorf("HEAD of a missing object: %v", err)
		},
		func(i int) error {
			body := fmt.Sprintf("%d\n", i)
			_, err := client.PutObject(ctx, bucket, fmt.Sprintf("%s%d/out", prefix, i), strings.NewReader(body), int64(len(body)),
				minio.PutObjectOptions{UserMetadata: map[string]string{"nectar-log": "none"}})
			return err
		},
	} {
		if err := parallel(1000, conns, step); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

// parallel calls f(0..n-1), conns at a time, and returns the first error.
func parallel(n, conns int, f func(i int) error) error {
	next := make(chan int)
	errs := make(chan error, conns)
	for range conns {
		go func() {
			var first error
			for i := range next {
				if err := f(i); err != nil && first == nil {
					first = err
				}
			}
			errs <- first
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	var first error
	for range conns {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func graphReq() *plugins.GraphRequest {
	return &plugins.GraphRequest{Root: plugins.TaskRef{Chain: "hello_chain", Task: "HelloTask", Params: []byte(`{"name":"floor"}`)}}
}

// server is a nectar serve process of the benchmark.
type server struct {
	base string
	pid  int
	stop func()
}

func startServer(nectar, plugins string, env []string, extra ...string) (string, func(), error) {
	srv, err := startServerProc(nectar, plugins, env, extra...)
	if err != nil {
		return "", nil, err
	}
	return srv.base, srv.stop, nil
}

func startServerProc(nectar, plugins string, env []string, extra ...string) (*server, error) {
	return startServerCmd(nectar, plugins, []string{"serve"}, env, extra...)
}

// startServerCmd is startServerProc with the command's arguments (serve and its flags).
func startServerCmd(nectar, plugins string, args, env []string, extra ...string) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(nectar, args...)
	cmd.Env = append(os.Environ(), "NECTAR_ADDR="+addr, "NECTAR_PLUGIN_DIR="+plugins, "NECTAR_LOG_LEVEL=warn", "NECTAR_SCHEDULES=off")
	for _, kv := range append(append(env, extra...), extraEnv...) {
		if kv != "" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
		})
	}
	base := "http://" + addr
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(base + "/healthz"); err == nil {
			resp.Body.Close()
			return &server{base: base, pid: cmd.Process.Pid, stop: stop}, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	return nil, errors.New("server did not answer /healthz within 10s")
}

// extraEnv is set by -env: variables every benchmark server gets (to compare settings).
var extraEnv []string

func postDone(client *http.Client, u string) error {
	resp, err := client.Post(u, "", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var env struct {
		Data struct {
			JobStatus string `json:"job_status"`
			Error     string `json:"error"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		return err
	}
	if resp.StatusCode != 200 || env.Data.JobStatus != "DONE" {
		return fmt.Errorf("POST %s = %d %s %s", u, resp.StatusCode, env.Data.JobStatus, env.Data.Error)
	}
	return nil
}

func load(client *http.Client, method, u string, conns int, d time.Duration) (float64, []time.Duration, error) {
	var n atomic.Int64
	var firstErr atomic.Value
	lats := make([][]time.Duration, conns)
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < conns; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				t0 := time.Now()
				req, _ := http.NewRequest(method, u, nil)
				resp, err := client.Do(req)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					firstErr.CompareAndSwap(nil, fmt.Errorf("%s %s answered %d", method, u, resp.StatusCode))
					return
				}
				lats[c] = append(lats[c], time.Since(t0))
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, nil, err
	}
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	sortDurations(all)
	return float64(n.Load()) / time.Since(start).Seconds(), all, nil
}

func measure(n int, f func(i int) error) ([]time.Duration, error) {
	_ = f(-1) // warm up caches (page cache of the binary, connections)
	out := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		start := time.Now()
		if err := f(i); err != nil {
			return nil, err
		}
		out = append(out, time.Since(start))
	}
	sortDurations(out)
	return out, nil
}

func sortDurations(d []time.Duration) { sort.Slice(d, func(i, j int) bool { return d[i] < d[j] }) }

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := (len(d)*p + 99) / 100
	return d[min(max(i-1, 0), len(d)-1)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }
