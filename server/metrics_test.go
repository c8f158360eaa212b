package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"nectar/plugins"
	"nectar/server/runs"
)

// Real figures from real processes: a second of CPU shows as about a second, 200 MiB of touched
// memory as a peak RSS of at least that, each on the task that used it (isolated tasks).
func TestRunsReportTheirUsageAndCost(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.MonitorInterval = 100 * time.Millisecond })
	burn := ts.post(t, "/api/chains/testchains/metrics_chain/BurnTask?for=1s&wait=30s")
	if *burn.run.JobStatus != runs.Done || burn.run.Metrics == nil {
		t.Fatalf("BurnTask = %v, metrics %v", burn.run.JobStatus, burn.run.Metrics)
	}
	u := burn.run.Metrics.Tasks[burn.run.Key].Usage
	if u == nil || u.CPUSeconds < 0.95 || u.CPUSeconds > 1.6 {
		t.Errorf("BurnTask usage = %+v, want about 1 CPU second", u)
	}
	sum := burn.run.Metrics.Summary
	if sum.CPUSeconds < 0.95 || sum.WallSeconds < 1 || sum.CostUSD <= 0 {
		t.Errorf("run summary = %+v", sum)
	}
	// The plugin's own peak, not the server's: the kernel's wait4 reports, for a process
	// started by a big one, the starter's peak RSS at the exec (this test binary holds far more
	// than a plugin that only burns CPU).
	if host := procHWM(t); u == nil || u.PeakRSSBytes == 0 || u.PeakRSSBytes >= host/2 || sum.PeakRSSBytes >= host/2 {
		t.Errorf("BurnTask peak RSS: task %+v, run %d bytes; want the plugin's own, far below this process's %d", u, sum.PeakRSSBytes, host)
	}
	want := runs.DefaultPricing.Cost(sum.CPUSeconds, sum.PeakRSSBytes, time.Duration(sum.WallSeconds*float64(time.Second)))
	if d := sum.CostUSD - want; d > want/100 || d < -want/100 {
		t.Errorf("cost = %g, want %g (Fargate prices on CPU used and peak memory)", sum.CostUSD, want)
	}
	if burn.run.MetricsURL == "" {
		t.Fatal("no metrics_url")
	}
	_, body := fetch(t, burn.run.MetricsURL)
	var stored runs.Metrics
	if err := json.Unmarshal([]byte(body), &stored); err != nil {
		t.Fatalf("metrics object: %v\n%s", err, body)
	}
	if len(stored.Samples) < 5 || stored.Interval != "100ms" {
		t.Errorf("metrics object has %d samples at %s, want about 10 at 100ms", len(stored.Samples), stored.Interval)
	}
	peak := 0.0
	for _, s := range stored.Samples {
		peak = max(peak, s.CPUPercent)
	}
	if peak < 30 {
		t.Errorf("no sample shows the burning CPU (highest %.0f%%)", peak)
	}

	// Runs that share a reused process (pool.go) each show their own usage, not the process's.
	var pids []int
	for _, d := range []string{"600ms", "700ms"} {
		b := ts.post(t, "/api/chains/testchains/metrics_chain/BurnTask?shared=true&for="+d+"&wait=30s")
		if b.run.JobStatus == nil || *b.run.JobStatus != runs.Done {
			t.Fatalf("BurnTask shared = %d %+v", b.Code, b.run)
		}
		var obj runs.Metrics // the metrics object holds the samples, each naming its process
		if _, body := fetch(t, b.run.MetricsURL); json.Unmarshal([]byte(body), &obj) != nil || len(obj.Samples) == 0 {
			t.Fatalf("BurnTask shared for=%s: no samples in the metrics object %.200s", d, body)
		}
		pids = append(pids, obj.Samples[0].PID)
		want, _ := time.ParseDuration(d)
		if sum := b.run.Metrics.Summary; sum.CPUSeconds < want.Seconds()-0.05 || sum.CPUSeconds > want.Seconds()+0.5 {
			t.Errorf("BurnTask shared for=%s: summary %+v, want about %s of CPU", d, sum, d)
		}
	}
	if pids[0] != pids[1] {
		t.Errorf("the two runs ran in processes %v: the second did not reuse the first's", pids)
	}

	alloc := ts.post(t, "/api/chains/testchains/metrics_chain/AllocTask?mb=200&hold=300ms&wait=30s")
	if *alloc.run.JobStatus != runs.Done {
		t.Fatalf("AllocTask = %v %v", alloc.run.JobStatus, alloc.run.Error)
	}
	if u := alloc.run.Metrics.Tasks[alloc.run.Key].Usage; u == nil || u.PeakRSSBytes < 200<<20 {
		t.Errorf("AllocTask usage = %+v, want a peak RSS of at least 200 MiB", u)
	}
}

// An isolated task killed for its timeout still shows the peak it reached: read from /proc
// just before the kill, where wait4's would be this test process's (or unknown).
func TestATimedOutIsolatedTaskKeepsItsPeak(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.TaskTimeout = time.Second })
	a := ts.post(t, "/api/chains/testchains/metrics_chain/AllocTask?mb=40&hold=1m&wait=30s")
	if a.run.JobStatus == nil || *a.run.JobStatus != runs.Failed || a.run.Metrics == nil {
		t.Fatalf("AllocTask = %v, metrics %v; want FAILED (timed out) with metrics", a.run.JobStatus, a.run.Metrics)
	}
	if u := a.run.Metrics.Tasks[a.run.Key].Usage; u == nil || u.PeakRSSBytes < 40<<20 || u.PeakRSSBytes >= procHWM(t) {
		t.Errorf("AllocTask usage = %+v; want its own peak of at least 40 MiB, below this process's", u)
	}
}

func TestTasksDefineTheirOwnMetrics(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.MonitorInterval = 100 * time.Millisecond })
	a := ts.post(t, "/api/chains/testchains/metrics_chain/CountedTask?for=700ms&wait=30s")
	if *a.run.JobStatus != runs.Done {
		t.Fatalf("CountedTask = %v %v", a.run.JobStatus, a.run.Error)
	}
	tm := a.run.Metrics.Tasks[a.run.Key]
	var got struct {
		Calls   int    `json:"calls"`
		LastRAM uint64 `json:"last_ram_bytes"`
	}
	if err := json.Unmarshal(tm.Custom, &got); err != nil {
		t.Fatalf("custom metrics %s: %v (error %q)", tm.Custom, err, tm.Error)
	}
	// About 7 calls in 700 ms (fewer on a busy machine); each saw the previous result, so the
	// count grew one by one.
	if got.Calls < 2 || got.Calls > 9 || got.LastRAM == 0 {
		t.Errorf("custom metrics = %s, want about 7 calls and the RAM seen", tm.Custom)
	}
}

func TestPrometheusMetrics(t *testing.T) {
	ts := newTestServer(t)
	ts.post(t, "/api/chains/testchains/hello_chain/HelloTask?name=prom&wait=10s")
	ts.post(t, "/api/chains/testchains/faults_chain/FailTask?wait=10s")
	code, body := fetch(t, ts.url+"/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics = %d", code)
	}
	for _, want := range []string{
		`nectar_runs_total{chain="hello_chain",status="DONE",task="HelloTask",type="testchains"} 1`,
		`nectar_runs_total{chain="faults_chain",status="FAILED",task="FailTask",type="testchains"} 1`,
		`nectar_run_duration_seconds_count{chain="hello_chain",status="DONE",type="testchains"} 1`,
		// The second run reuses the first one's process (the test server keeps no spare).
		`nectar_plugin_launches_total{result="ok",type="testchains"} 1`,
		`nectar_plugin_launch_seconds_count{type="testchains"} 1`,
		"nectar_queue_depth 0",
		"nectar_runs_running 0",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// NECTAR_METRICS_PUBLIC=false puts /metrics behind the API tokens.
func TestMetricsBehindTheTokens(t *testing.T) {
	token := strings.Repeat("m", 24)
	ts := newTestServer(t, func(c *Config) { c.APITokens, c.MetricsPublic = []string{token}, false })
	get := func(auth string) (int, string) {
		req := httptest.NewRequest("GET", "/metrics", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := ts.serve(req)
		return rec.Code, rec.Body.String()
	}
	if code, _ := get(""); code != http.StatusUnauthorized {
		t.Errorf("GET /metrics without a token = %d, want 401", code)
	}
	if code, _ := get("Bearer " + strings.Repeat("x", 24)); code != http.StatusUnauthorized {
		t.Errorf("GET /metrics with a wrong token = %d, want 401", code)
	}
	if code, body := get("Bearer " + token); code != http.StatusOK || !strings.Contains(body, "nectar_queue_depth") {
		t.Errorf("GET /metrics with the token = %d, want 200 and the metrics", code)
	}
	// Public (the default), even with tokens set.
	open := newTestServer(t, func(c *Config) { c.APITokens = []string{token} })
	if rec := open.serve(httptest.NewRequest("GET", "/metrics", nil)); rec.Code != http.StatusOK {
		t.Errorf("GET /metrics on a public server = %d, want 200", rec.Code)
	}
}

// procHWM is this test process's peak resident memory (VmHWM), in bytes.
func procHWM(t *testing.T) uint64 {
	t.Helper()
	u, ok := plugins.ReadUsage(0)
	if !ok {
		t.Fatal("cannot read this process's usage from /proc")
	}
	return u.PeakRSS
}

// A record that says an object was not stored (the store refused it: the runs package's tests
// of the run's start and end writes) is answered without that object's URL: no signed URL
// points at an object that does not exist. Each case takes a run's record as stored, marks the
// object missing, removes it, and reads the status again.
func TestNoURLForAnObjectNeverStored(t *testing.T) {
	ts := newTestServer(t)
	for _, tc := range []struct {
		name, path string
		status     runs.Status
		object     string // under the run's key
		mark       func(rec map[string]any)
		url        func(d runDataView) string
	}{
		{"metrics", "/api/chains/testchains/hello_chain/HelloTask?name=unmetered&wait=30s", runs.Done, runs.MetricsName,
			func(rec map[string]any) { rec["metrics_not_stored"] = true },
			func(d runDataView) string { return d.MetricsURL }},
		{"params", "/api/chains/testchains/faults_chain/FailTask?message=unstored-params&wait=30s", runs.Failed, runs.ParamsName,
			func(rec map[string]any) { rec["params_not_stored"] = true },
			func(d runDataView) string { return d.ParamsURL }},
		{"a failed task's log", "/api/chains/testchains/faults_chain/FailTask?message=unstored-log&wait=30s", runs.Failed, runs.LogName,
			func(rec map[string]any) { rec["tasks"].([]any)[0].(map[string]any)["log_not_stored"] = true },
			func(d runDataView) string {
				if len(d.Tasks) > 0 && d.Tasks[0].LogURL != "" {
					return d.Tasks[0].LogURL
				}
				return d.LogURL
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := ts.post(t, tc.path)
			if a.run.JobStatus == nil || *a.run.JobStatus != tc.status || tc.url(a.run) == "" {
				t.Fatalf("POST = %d %+v; want %s with the %s URL", a.Code, a.run, tc.status, tc.name)
			}
			if code, _ := fetch(t, tc.url(a.run)); code != http.StatusOK {
				t.Fatalf("the %s URL answers %d; want 200", tc.name, code)
			}
			// Once the run has left memory (and cached its record, as stored then), the
			// record is rewritten: the status read finds the new version.
			ts.waitRetired(t, a.run.Key)
			path := filepath.Join(ts.target, a.run.Key, runs.RecordName)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var rec map[string]any
			if err := json.Unmarshal(b, &rec); err != nil {
				t.Fatal(err)
			}
			tc.mark(rec)
			if b, err = json.Marshal(rec); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(filepath.Join(ts.target, a.run.Key, tc.object)); err != nil {
				t.Fatal(err)
			}
			got := ts.do(t, http.MethodGet, ts.statusURL(a.run.Key))
			if got.Code != http.StatusOK || got.run.JobStatus == nil || *got.run.JobStatus != tc.status {
				t.Fatalf("status = %d %+v; want 200 and %s", got.Code, got.run.JobStatus, tc.status)
			}
			if u := tc.url(got.run); u != "" {
				t.Errorf("%s URL %s for an object never stored; want none", tc.name, u)
			}
		})
	}
}
