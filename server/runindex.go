package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"nectar/server/history"
	"nectar/server/history/postgres"
	"nectar/server/history/sqlite"
	"nectar/server/runs"
	"nectar/targets"
	"nectar/targets/local"
	"nectar/targets/open"
)

// openHistory opens the run index NECTAR_DATABASE_URL names (the embedded SQLite file by
// default) and brings its schema up to date. rebuild is true when the index is new or was
// older than this server's schema: it must then be made again from the store's run records.
func openHistory(ctx context.Context, databaseURL string, store targets.Store) (d history.Driver, rebuild bool, err error) {
	switch {
	case databaseURL == "off":
		return nil, false, nil
	case strings.HasPrefix(databaseURL, "postgres://"), strings.HasPrefix(databaseURL, "postgresql://"):
		d, err = postgres.Open(ctx, databaseURL)
	default:
		d, err = sqlite.Open(sqlitePath(databaseURL, store))
	}
	if err != nil {
		return nil, false, err
	}
	mctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	found, latest, err := d.Migrate(mctx)
	if err != nil {
		d.Close()
		return nil, false, fmt.Errorf("run history %s: %w", d.Name(), err)
	}
	return d, found < latest, nil
}

// sqlitePath is where the embedded index lives: sqlite:<path> when given, else beside the local
// targets (a remote store keeps its index in ./local_targets).
func sqlitePath(databaseURL string, store targets.Store) string {
	if p, ok := strings.CutPrefix(databaseURL, "sqlite:"); ok {
		return p
	}
	if ls, ok := store.(*local.Store); ok {
		return filepath.Join(ls.Root(), ".history.db")
	}
	return filepath.Join("local_targets", ".history.db")
}

// entryFromRecord is the index row of a run record's own run.
func entryFromRecord(rec runs.Record, updated time.Time) history.Entry {
	return entryOf(rec, rec.Counts(), rec.Progress(), updated)
}

// entryOf is the index row of a run, from its record without tasks, their counts and the
// progress it shows.
func entryOf(rec runs.Record, counts runs.TaskCounts, progress *runs.Progress, updated time.Time) history.Entry {
	e := history.Entry{
		RunID: rec.RunID, Key: rec.Key, Type: rec.Type, Chain: rec.Chain, Task: rec.Task,
		Params: string(rec.Params), Status: string(rec.Status), Trigger: triggerOr(rec.Trigger),
		SubmittedAt: rec.SubmittedAt.UTC(), StartedAt: utc(rec.StartedAt), FinishedAt: utc(rec.FinishedAt),
		Error: history.Summarize(rec.Error), Tasks: historyCounts(counts), UpdatedAt: updated.UTC(),
	}
	if e.Params == "" {
		e.Params = "{}"
	}
	if rec.Metrics != nil {
		e.CostUSD = rec.Metrics.Summary.CostUSD
	}
	e.DurationMS = durationMS(e.SubmittedAt, e.StartedAt, e.FinishedAt)
	if p := progress; p != nil {
		e.Progress, e.StatusLine = p.Fraction, p.Status
	}
	return e
}

// entriesFromStored are the rows a stored record gives: its run and the earlier runs it
// remembers. A stored run that is not final had its server die: it is reported FAILED, as the
// status answer does.
func entriesFromStored(rec runs.Record) []history.Entry {
	cur := rec.Past() // normalises an unfinished run to FAILED (interrupted)
	e := entryFromRecord(rec, lastTime(rec.SubmittedAt, rec.StartedAt, rec.FinishedAt))
	e.Status, e.Error = string(cur.Status), history.Summarize(cur.Error)
	out := []history.Entry{e}
	for _, p := range rec.Previous {
		pe := history.Entry{
			RunID: p.RunID, Key: rec.Key, Type: rec.Type, Chain: rec.Chain, Task: rec.Task, Params: e.Params,
			Status: string(p.Status), Trigger: triggerOr(p.Trigger), SubmittedAt: p.SubmittedAt.UTC(),
			StartedAt: utc(p.StartedAt), FinishedAt: utc(p.FinishedAt), Error: history.Summarize(p.Error),
			CostUSD: p.CostUSD, Tasks: historyCounts(p.Tasks),
			UpdatedAt: lastTime(p.SubmittedAt, p.StartedAt, p.FinishedAt).UTC(),
		}
		pe.DurationMS = durationMS(pe.SubmittedAt, pe.StartedAt, pe.FinishedAt)
		out = append(out, pe)
	}
	return out
}

// liveEntry is the index row of a run executing here, as of now. A final run is stamped with
// its finish time (what a rebuild from its record gives); a live one with now, which is always
// before its finish, so an older state never wins.
func liveEntry(r *runs.Run) history.Entry {
	rec, counts, progress := r.Summary() // a big run's tasks are not copied for it
	updated := time.Now()
	if rec.Status.Final() && rec.FinishedAt != nil {
		updated = *rec.FinishedAt
	}
	return entryOf(rec, counts, progress, updated)
}

func triggerOr(t string) string {
	if t == "" {
		return history.TriggerAPI
	}
	return t
}

func historyCounts(c runs.TaskCounts) history.TaskCounts {
	return history.TaskCounts{Total: c.Total, Pending: c.Pending, Running: c.Running, Done: c.Done, Failed: c.Failed,
		Cancelled: c.Cancelled, UpstreamFailed: c.UpstreamFailed, Cached: c.Cached}
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC().Truncate(time.Microsecond) // the index keeps microseconds
	return &u
}

func durationMS(submitted time.Time, started, finished *time.Time) int64 {
	if finished == nil {
		return 0
	}
	from := submitted
	if started != nil {
		from = *started
	}
	return finished.Sub(from).Milliseconds()
}

func lastTime(submitted time.Time, ts ...*time.Time) time.Time {
	last := submitted
	for _, t := range ts {
		if t != nil && t.After(last) {
			last = *t
		}
	}
	return last
}

// RebuildHistory empties the index and fills it from every run record in store, logging its
// progress. It returns how many runs it indexed. Records are read side by side (S3 and MinIO
// answer each in a round trip); a record that does not decode is logged and skipped.
func RebuildHistory(ctx context.Context, store targets.Store, d history.Driver, log *slog.Logger) (int, error) {
	start := time.Now()
	log.Info("run history: rebuilding from the store's run records", "db", d.Name())
	if err := d.Reset(ctx); err != nil {
		return 0, fmt.Errorf("run history %s: %w", d.Name(), err)
	}
	keys, err := store.List(ctx, "chains/")
	if err != nil {
		return 0, fmt.Errorf("listing the store's run records: %w", targets.Unavailable(err))
	}
	var records []string
	for _, k := range keys {
		if strings.HasSuffix(k, "/"+runs.RecordName) {
			records = append(records, k)
		}
	}
	var (
		mu       sync.Mutex
		batch    []history.Entry
		indexed  atomic.Int64
		read     atomic.Int64
		firstErr error
	)
	flush := func(force bool) error {
		mu.Lock()
		defer mu.Unlock()
		if len(batch) == 0 || (!force && len(batch) < 500) {
			return nil
		}
		err := d.Upsert(ctx, batch)
		indexed.Add(int64(len(batch)))
		batch = batch[:0]
		return err
	}
	work := make(chan string)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range work {
				rec, err := readRecord(ctx, store, k)
				read.Add(1)
				if err != nil {
					if !errors.Is(err, errUndecodable) {
						mu.Lock()
						firstErr = errors.Join(firstErr, err)
						mu.Unlock()
						continue
					}
					log.Warn("run history: skipping a record that does not decode", "record", k, "err", err)
					continue
				}
				mu.Lock()
				batch = append(batch, entriesFromStored(rec)...)
				mu.Unlock()
				if err := flush(false); err != nil {
					mu.Lock()
					firstErr = errors.Join(firstErr, err)
					mu.Unlock()
				}
			}
		}()
	}
	progress := time.NewTicker(2 * time.Second)
	defer progress.Stop()
feed:
	for _, k := range records {
		select {
		case work <- k:
		case <-progress.C:
			log.Info("run history: rebuilding", "records_read", read.Load(), "of", len(records), "runs_indexed", indexed.Load())
			work <- k
		case <-ctx.Done():
			break feed
		}
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed {
			break
		}
	}
	close(work)
	wg.Wait()
	if err := flush(true); err != nil {
		firstErr = errors.Join(firstErr, err)
	}
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		return int(indexed.Load()), fmt.Errorf("run history: rebuild stopped after %d runs: %w", indexed.Load(), firstErr)
	}
	log.Info("run history: rebuilt", "records", len(records), "runs", indexed.Load(), "elapsed", time.Since(start).Round(time.Millisecond))
	return int(indexed.Load()), nil
}

var errUndecodable = errors.New("not a run record")

func readRecord(ctx context.Context, store targets.Store, key string) (runs.Record, error) {
	var rec runs.Record
	rc, err := store.Get(ctx, key)
	if err != nil {
		if errors.Is(err, targets.ErrNotExist) { // deleted since the listing
			return rec, fmt.Errorf("%w: %s is gone", errUndecodable, key)
		}
		return rec, fmt.Errorf("reading %s: %w", key, targets.Unavailable(err))
	}
	defer rc.Close()
	if err := json.NewDecoder(rc).Decode(&rec); err != nil || rec.RunID == "" {
		return rec, fmt.Errorf("%w: %s: %v", errUndecodable, key, err)
	}
	return rec, nil
}

// Reindex rebuilds the run history cfg names from the run records of cfg's store: what
// `nectar reindex` does. It needs neither plugins nor a listening server.
func Reindex(ctx context.Context, cfg Config, log *slog.Logger) (int, error) {
	if cfg.DatabaseURL == "off" {
		return 0, errors.New("NECTAR_DATABASE_URL=off: there is no run history to rebuild")
	}
	store, err := open.Target(ctx, cfg.Target, cfg.Getenv, func(string, time.Duration) string { return "" })
	if err != nil {
		return 0, err
	}
	d, _, err := openHistory(ctx, cfg.DatabaseURL, store)
	if err != nil {
		return 0, fmt.Errorf("NECTAR_DATABASE_URL: %w", err)
	}
	defer d.Close()
	return RebuildHistory(ctx, store, d, log)
}
