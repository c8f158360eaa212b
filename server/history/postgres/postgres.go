// Package postgres is the run index in PostgreSQL (jackc/pgx/v5 with a pool), for several
// servers sharing one history. Migrations take an advisory lock, so servers starting together
// apply each step once.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"nectar/server/history"
)

var dialect = history.Dialect{Placeholder: func(n int) string { return "$" + strconv.Itoa(n) }, ILike: "ILIKE"}

// migrationLock is the advisory lock key migrations hold (any constant the app owns).
const migrationLock = 0x6e65637461720001 // "nectar" + 1

// Driver is the PostgreSQL index.
type Driver struct {
	name string
	pool *pgxpool.Pool
}

var _ history.Driver = (*Driver)(nil)

// Open connects to the database named by url (postgres://user:password@host:port/db?...).
// Errors and Name never show the password.
func Open(ctx context.Context, rawURL string) (*Driver, error) {
	name := Redact(rawURL)
	cfg, err := pgxpool.ParseConfig(rawURL)
	if err != nil {
		return nil, fmt.Errorf("run history %s: not a PostgreSQL URL", name)
	}
	cfg.MaxConns = max(cfg.MaxConns, 4)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("run history %s: %w", name, err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("run history %s: cannot connect: %w", name, redactErr(err, rawURL))
	}
	return &Driver{name: name, pool: pool}, nil
}

// Redact is the URL without its password, for messages: neither the user part's nor a
// password=/sslpassword= parameter's (pgx takes either). Of a URL that does not parse, the
// host is named only when where it begins is plain.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		// Unparseable (a bad port, say): still name the host when the user part ends plainly
		// before it; an "@" after the first "/" or "?" may be a password's.
		scheme, rest, ok := strings.Cut(rawURL, "://")
		if !ok || strings.ContainsAny(scheme, "/@:?#") {
			return "(not a URL)"
		}
		hostEnd := strings.IndexAny(rest, "/?#")
		if hostEnd < 0 {
			hostEnd = len(rest)
		}
		if strings.Contains(rest[hostEnd:], "@") || strings.Contains(rest, "password=") {
			return scheme + "://… (not a URL: percent-encode a password's reserved characters)"
		}
		if at := strings.LastIndex(rest[:hostEnd], "@"); at >= 0 {
			rest = "…@" + rest[at+1:]
		}
		return scheme + "://" + rest
	}
	if q := u.Query(); q.Has("password") || q.Has("sslpassword") {
		for _, k := range []string{"password", "sslpassword"} {
			if q.Has(k) {
				q.Set(k, "xxxxx")
			}
		}
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// redactErr keeps a driver error from quoting the password (pgx's messages do not, but a
// connection string echoed by a parse error would).
func redactErr(err error, rawURL string) error {
	u, perr := url.Parse(rawURL)
	if perr != nil {
		return err
	}
	secrets := u.Query()["password"]
	secrets = append(secrets, u.Query()["sslpassword"]...)
	if u.User != nil {
		if p, ok := u.User.Password(); ok {
			secrets = append(secrets, p)
		}
	}
	msg := err.Error()
	for _, p := range secrets {
		if p != "" && strings.Contains(msg, p) {
			msg = strings.ReplaceAll(msg, p, "xxxxx")
		}
	}
	if msg != err.Error() {
		return errors.New(msg)
	}
	return err
}

// Name names the database without credentials.
func (d *Driver) Name() string { return "postgres " + d.name }

// Close closes the pool.
func (d *Driver) Close() error {
	d.pool.Close()
	return nil
}

// Migrate applies the migrations not yet applied, under an advisory lock, each in one
// transaction with its version row.
func (d *Driver) Migrate(ctx context.Context) (found, latest int, err error) {
	migs, err := history.Migrations()
	if err != nil {
		return 0, 0, err
	}
	latest = len(migs)
	conn, err := d.pool.Acquire(ctx)
	if err != nil {
		return 0, latest, err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(migrationLock)); err != nil {
		return 0, latest, fmt.Errorf("taking the migration lock: %w", err)
	}
	defer conn.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", int64(migrationLock))
	if _, err := conn.Exec(ctx, history.MigrationTableSQL); err != nil {
		return 0, latest, fmt.Errorf("creating the migration table: %w", err)
	}
	if err := conn.QueryRow(ctx, history.CurrentVersionSQL).Scan(&found); err != nil {
		return 0, latest, fmt.Errorf("reading the schema version: %w", err)
	}
	if found > latest {
		return found, latest, fmt.Errorf("%w: the index is at version %d, this server knows %d", history.ErrNewerSchema, found, latest)
	}
	for _, m := range migs[found:] {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.Up); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, history.RecordVersionSQL(dialect), m.Version, m.Name, time.Now().UnixMicro())
			return err
		})
		if err != nil {
			return found, latest, fmt.Errorf("migration %03d_%s: %w", m.Version, m.Name, err)
		}
	}
	return found, latest, nil
}

// Upsert writes a batch in one round trip (pgx batch) and one transaction.
func (d *Driver) Upsert(ctx context.Context, entries []history.Entry) error {
	if len(entries) == 0 {
		return nil
	}
	q := history.UpsertSQL(dialect)
	return pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		for _, e := range entries {
			b.Queue(q, history.UpsertArgs(e)...)
		}
		return tx.SendBatch(ctx, b).Close()
	})
}

// AddHits adds the hits in one round trip.
func (d *Driver) AddHits(ctx context.Context, hits []history.Hit) error {
	if len(hits) == 0 {
		return nil
	}
	q := history.AddHitsSQL(dialect)
	b := &pgx.Batch{}
	for _, h := range hits {
		b.Queue(q, h.N, h.Key)
	}
	return d.pool.SendBatch(ctx, b).Close()
}

// List reads a page.
func (d *Driver) List(ctx context.Context, p history.ListParams) ([]history.Entry, error) {
	q, args := history.ListSQL(dialect, p)
	rows, err := d.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return history.ScanEntries(rows)
}

// Get reads one run.
func (d *Driver) Get(ctx context.Context, runID string) (history.Entry, error) {
	e, err := history.ScanEntry(d.pool.QueryRow(ctx, history.GetSQL(dialect), runID))
	if errors.Is(err, pgx.ErrNoRows) {
		return e, history.ErrNotFound
	}
	return e, err
}

// CountByStatus counts by status.
func (d *Driver) CountByStatus(ctx context.Context, f history.Filter) (map[string]int64, error) {
	q, args := history.CountSQL(dialect, f)
	rows, err := d.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return history.ScanCounts(rows)
}

// Reset deletes every run.
func (d *Driver) Reset(ctx context.Context) error {
	_, err := d.pool.Exec(ctx, history.ResetSQL)
	return err
}
