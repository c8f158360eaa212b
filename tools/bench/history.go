package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"nectar/server/history"
	"nectar/server/history/pgtest"
	"nectar/server/history/postgres"
	"nectar/server/history/sqlite"
)

// historySize is how many runs the list benchmark's index holds.
const historySize = 100_000

// historyRows measures GET /api/runs?limit=50 against an index of historySize runs, in the
// embedded SQLite and in PostgreSQL, each behind a real server.
func historyRows(bin string, runs int) ([]row, error) {
	var rows []row
	dir, err := scratch("nectar-bench-history-")
	if err != nil {
		return nil, err
	}

	dbFile := filepath.Join(dir, "history.db")
	sq, err := sqlite.Open(dbFile)
	if err != nil {
		return nil, err
	}
	err = fillHistory(sq)
	sq.Close()
	if err != nil {
		return nil, fmt.Errorf("filling the SQLite index: %w", err)
	}
	r, err := listRow(bin, dir, "sqlite:"+dbFile, "sqlite", runs)
	if err != nil {
		return nil, err
	}
	rows = append(rows, r...)

	pg, err := pgtest.Start()
	if err != nil {
		return nil, err
	}
	defer pg.Stop()
	pgURL := pg.URL("postgres")
	pd, err := postgres.Open(context.Background(), pgURL)
	if err != nil {
		return nil, err
	}
	err = fillHistory(pd)
	pd.Close()
	if err != nil {
		return nil, fmt.Errorf("filling the PostgreSQL index: %w", err)
	}
	r, err = listRow(bin, dir, pgURL, "PostgreSQL", runs)
	if err != nil {
		return nil, err
	}
	return append(rows, r...), nil
}

// fillHistory migrates d and writes historySize runs over 30 days, in batches.
func fillHistory(d history.Driver) error {
	ctx := context.Background()
	if _, _, err := d.Migrate(ctx); err != nil {
		return err
	}
	start := time.Now().Add(-30 * 24 * time.Hour)
	tasks := []string{"HelloTask", "UpperTask", "JoinTask", "FailTask"}
	statuses := []string{history.StatusDone, history.StatusDone, history.StatusDone, history.StatusFailed, history.StatusCancelled}
	batch := make([]history.Entry, 0, 2000)
	for i := 0; i < historySize; i++ {
		sub := start.Add(time.Duration(i) * 30 * 24 * time.Hour / historySize)
		started, finished := sub.Add(5*time.Millisecond), sub.Add(15*time.Millisecond)
		batch = append(batch, history.Entry{
			RunID: fmt.Sprintf("bench%08d", i), Key: fmt.Sprintf("chains/testchains/hello_chain/%s/%032x", tasks[i%4], i),
			Type: "testchains", Chain: "hello_chain", Task: tasks[i%4], Params: fmt.Sprintf(`{"name":"user%d"}`, i),
			Status: statuses[i%5], Trigger: history.TriggerAPI, SubmittedAt: sub, StartedAt: &started, FinishedAt: &finished,
			DurationMS: 10, CostUSD: 3e-7, Tasks: history.TaskCounts{Total: 1, Done: 1}, UpdatedAt: finished,
		})
		if len(batch) == cap(batch) || i == historySize-1 {
			if err := d.Upsert(ctx, batch); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	return nil
}

// listRow starts a server on the filled index and times GET /api/runs?limit=50 (one client,
// one request at a time: the latency a page load sees) and a filtered page.
func listRow(bin, dir, dbURL, name string, runs int) ([]row, error) {
	target, err := os.MkdirTemp(dir, "target-")
	if err != nil {
		return nil, err
	}
	base, stop, err := startServer(filepath.Join(bin, "nectar"), filepath.Join(bin, "plugins"), nil,
		"NECTAR_TARGET="+target, "NECTAR_DATABASE_URL="+dbURL)
	if err != nil {
		return nil, err
	}
	defer stop()
	client := &http.Client{}
	var out []row
	for _, q := range []struct{ label, path, goal string }{
		{"GET /api/runs?limit=50", "/api/runs?limit=50", "<= 10 ms p50"},
		{"GET /api/runs?status=FAILED&limit=50", "/api/runs?status=FAILED&limit=50", ""},
		{"runs page (GET /, 50 runs and counts)", "/", "<= 50 ms"},
	} {
		d, err := measure(max(runs*4, 200), func(int) error { _, err := get(client, base+q.path); return err })
		if err != nil {
			return nil, err
		}
		out = append(out, row{fmt.Sprintf("%s, %dk runs, %s", q.label, historySize/1000, name), ms(pct(d, 50)), ms(pct(d, 95)),
			"p99 " + ms(pct(d, 99)), q.goal})
	}
	if name == "sqlite" {
		w, err := pageWeight(client, base)
		if err != nil {
			return nil, err
		}
		out = append(out, row{"runs page weight (HTML + CSS + JS + icon, uncompressed)", "", "", fmt.Sprintf("%.0f KB", float64(w)/1000), "<= 300 KB"})
	}
	return out, nil
}

// pageWeight is the bytes a first visit of the runs page loads: the page and every file it links.
func pageWeight(client *http.Client, base string) (int, error) {
	html, err := get(client, base+"/")
	if err != nil {
		return 0, err
	}
	total := len(html)
	for _, m := range assetRE.FindAllStringSubmatch(string(html), -1) {
		b, err := get(client, base+m[1])
		if err != nil {
			return 0, err
		}
		total += len(b)
	}
	return total, nil
}

var assetRE = regexp.MustCompile(`(?:src|href)="(/ui/static/[^"]+)"`)

func get(client *http.Client, u string) ([]byte, error) {
	resp, err := client.Get(u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s = %d", u, resp.StatusCode)
	}
	return b, err
}
