package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"time"

	"nectar/server/history/pgtest"
)

// demoData is where make fetches vega-datasets (see the Makefile's DEMO_DATA).
const demoData = ".tools/vega-datasets-3.2.1/package/data"

// airlineRows runs the whole airline chain (extract, detect, plot, load into a real
// PostgreSQL, report) on the real 3,000,000 flights, nothing cached, through a real server,
// and reports the run's wall time, each task's, and the peak RSS of the plugin process.
func airlineRows(bin string) ([]row, error) {
	dir, err := scratch("nectar-bench-airline-")
	if err != nil {
		return nil, err
	}
	for src, dst := range map[string]string{"flights-3m.parquet": "flights-3m.parquet", "airports.csv": "airports.csv"} {
		b, err := os.ReadFile(filepath.Join(demoData, src))
		if err != nil {
			return nil, fmt.Errorf("%w (make bench fetches the flight data first; run it through make)", err)
		}
		p := filepath.Join(dir, "datasets", "flights", dst)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return nil, err
		}
	}
	pg, err := pgtest.Start()
	if err != nil {
		return nil, err
	}
	defer pg.Stop()
	base, stop, err := startServer(filepath.Join(bin, "nectar"), filepath.Join(bin, "plugins"), nil,
		"NECTAR_TARGET="+dir, "NECTAR_CONN_WAREHOUSE="+pg.URL("postgres"), "NECTAR_MONITOR_INTERVAL=100ms")
	if err != nil {
		return nil, err
	}
	defer stop()
	start := time.Now()
	resp, err := http.Post(base+"/api/chains/airline/delays_chain/ReportTask?year=2001&wait=5m", "", nil)
	if err != nil {
		return nil, err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	wall := time.Since(start)
	var env struct {
		Data struct {
			JobStatus string `json:"job_status"`
			Error     string `json:"error"`
			Tasks     []struct {
				Task       string     `json:"task"`
				StartedAt  *time.Time `json:"started_at"`
				FinishedAt *time.Time `json:"finished_at"`
			} `json:"tasks"`
			Metrics struct {
				Summary struct {
					PeakRSS uint64 `json:"peak_rss_bytes"`
				} `json:"summary"`
			} `json:"metrics"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil || env.Data.JobStatus != "DONE" {
		return nil, fmt.Errorf("airline chain: %s %s", env.Data.JobStatus, env.Data.Error)
	}
	rows := []row{{"airline chain, 3M flights: extract to dashboard (POST?wait to DONE)", ms(wall), "", "", "<= 6 s (the Airflow way: ~26 s)"}}
	tasks := env.Data.Tasks
	sort.Slice(tasks, func(i, j int) bool { // in the order they started
		return tasks[i].StartedAt != nil && (tasks[j].StartedAt == nil || tasks[i].StartedAt.Before(*tasks[j].StartedAt))
	})
	for _, t := range tasks {
		if t.StartedAt != nil && t.FinishedAt != nil {
			rows = append(rows, row{"  " + t.Task + fmt.Sprintf(" (from +%.2f s)", t.StartedAt.Sub(start).Seconds()), ms(t.FinishedAt.Sub(*t.StartedAt)), "", "", ""})
		}
	}
	rows = append(rows, row{"airline chain: peak RSS of the plugin process", fmt.Sprintf("%.0f MB", float64(env.Data.Metrics.Summary.PeakRSS)/1e6), "", "", "<= 300 MB (the Airflow way: ~600 MB)"})
	return rows, nil
}
