// Package sqlite is the embedded run index: a SQLite file (modernc.org/sqlite, pure Go, no
// cgo) beside the local targets. One connection writes (SQLite has a single writer; a pool of
// writers would only wait on each other's locks), a small pool reads, and WAL lets readers go on
// while a batch is written.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"nectar/server/history"
)

var dialect = history.Dialect{Placeholder: func(int) string { return "?" }, ILike: "LIKE"}

// Driver is the SQLite index.
type Driver struct {
	path   string
	writer *sql.DB
	reader *sql.DB
}

var _ history.Driver = (*Driver)(nil)

// Open opens (creating when missing) the index file at path.
func Open(path string) (*Driver, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("run history %s: %w", path, err)
	}
	dsn := func(extra string) string {
		v := url.Values{}
		v.Add("_pragma", "journal_mode(WAL)")
		v.Add("_pragma", "busy_timeout(5000)")
		v.Add("_pragma", "synchronous(NORMAL)") // WAL + NORMAL: durable at checkpoints, never corrupt
		if extra != "" {
			v.Add("_pragma", extra)
		}
		return "file:" + path + "?" + v.Encode()
	}
	w, err := sql.Open("sqlite", dsn(""))
	if err != nil {
		return nil, fmt.Errorf("run history %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	r, err := sql.Open("sqlite", dsn("query_only(true)"))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("run history %s: %w", path, err)
	}
	r.SetMaxOpenConns(4)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		r.Close()
		return nil, fmt.Errorf("run history %s: %w", path, err)
	}
	return &Driver{path: path, writer: w, reader: r}, nil
}

// Name is the file's path.
func (d *Driver) Name() string { return "sqlite " + d.path }

// Close closes both pools.
func (d *Driver) Close() error { return errors.Join(d.reader.Close(), d.writer.Close()) }

// Migrate applies the migrations not yet applied, each in one transaction with its version row.
func (d *Driver) Migrate(ctx context.Context) (found, latest int, err error) {
	migs, err := history.Migrations()
	if err != nil {
		return 0, 0, err
	}
	latest = len(migs)
	if _, err := d.writer.ExecContext(ctx, history.MigrationTableSQL); err != nil {
		return 0, latest, fmt.Errorf("creating the migration table: %w", err)
	}
	if err := d.writer.QueryRowContext(ctx, history.CurrentVersionSQL).Scan(&found); err != nil {
		return 0, latest, fmt.Errorf("reading the schema version: %w", err)
	}
	if found > latest {
		return found, latest, fmt.Errorf("%w: the index is at version %d, this server knows %d", history.ErrNewerSchema, found, latest)
	}
	for _, m := range migs[found:] {
		tx, err := d.writer.BeginTx(ctx, nil)
		if err != nil {
			return found, latest, err
		}
		if _, err := tx.ExecContext(ctx, m.Up); err != nil {
			tx.Rollback()
			return found, latest, fmt.Errorf("migration %03d_%s: %w", m.Version, m.Name, err)
		}
		if _, err := tx.ExecContext(ctx, history.RecordVersionSQL(dialect), m.Version, m.Name, time.Now().UnixMicro()); err != nil {
			tx.Rollback()
			return found, latest, fmt.Errorf("migration %03d_%s: %w", m.Version, m.Name, err)
		}
		if err := tx.Commit(); err != nil {
			return found, latest, fmt.Errorf("migration %03d_%s: %w", m.Version, m.Name, err)
		}
	}
	return found, latest, nil
}

// Upsert writes a batch in one transaction.
func (d *Driver) Upsert(ctx context.Context, entries []history.Entry) error {
	if len(entries) == 0 {
		return nil
	}
	tx, err := d.writer.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, history.UpsertSQL(dialect))
	if err != nil {
		return err
	}
	defer stmt.Close()
	for _, e := range entries {
		if _, err := stmt.ExecContext(ctx, history.UpsertArgs(e)...); err != nil {
			return fmt.Errorf("run %s: %w", e.RunID, err)
		}
	}
	return tx.Commit()
}

// AddHits adds the hits in one transaction.
func (d *Driver) AddHits(ctx context.Context, hits []history.Hit) error {
	if len(hits) == 0 {
		return nil
	}
	tx, err := d.writer.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	q := history.AddHitsSQL(dialect)
	for _, h := range hits {
		if _, err := tx.ExecContext(ctx, q, h.N, h.Key); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// List reads a page.
func (d *Driver) List(ctx context.Context, p history.ListParams) ([]history.Entry, error) {
	q, args := history.ListSQL(dialect, p)
	rows, err := d.reader.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return history.ScanEntries(rows)
}

// Get reads one run.
func (d *Driver) Get(ctx context.Context, runID string) (history.Entry, error) {
	e, err := history.ScanEntry(d.reader.QueryRowContext(ctx, history.GetSQL(dialect), runID))
	if errors.Is(err, sql.ErrNoRows) {
		return e, history.ErrNotFound
	}
	return e, err
}

// CountByStatus counts by status.
func (d *Driver) CountByStatus(ctx context.Context, f history.Filter) (map[string]int64, error) {
	q, args := history.CountSQL(dialect, f)
	rows, err := d.reader.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return history.ScanCounts(rows)
}

// Reset deletes every run.
func (d *Driver) Reset(ctx context.Context) error {
	_, err := d.writer.ExecContext(ctx, history.ResetSQL)
	return err
}
