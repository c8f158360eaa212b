package history

import (
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The queries are the same in SQLite and PostgreSQL but for two things, which Dialect names:
// how a parameter is written, and the case-insensitive LIKE. Every value is a parameter; the
// SQL text is made only of the fixed pieces below.
type Dialect struct {
	Placeholder func(n int) string // the n-th parameter (1-based): "?" or "$n"
	ILike       string             // "LIKE" in SQLite (ASCII case-insensitive), "ILIKE" in PostgreSQL
}

// Columns of the runs table, in the order scanEntry reads them.
const Columns = `run_id, run_key, type, chain, task, params, status, triggered_by, submitted_at, started_at,
	finished_at, duration_ms, error, cost_usd, tasks_total, tasks_pending, tasks_running, tasks_done,
	tasks_failed, tasks_cancelled, tasks_upstream_failed, tasks_cached, hits, progress, status_line, updated_at`

// UpsertSQL writes one entry; an older state of a run never replaces a newer one, and hits are
// left to AddHits.
func UpsertSQL(d Dialect) string {
	cols := strings.Fields(strings.ReplaceAll(Columns, ",", " "))
	cols = append(cols, "param_values")
	ph := make([]string, len(cols))
	set := make([]string, 0, len(cols))
	for i, c := range cols {
		ph[i] = d.Placeholder(i + 1)
		if c != "run_id" && c != "hits" {
			set = append(set, c+" = excluded."+c)
		}
	}
	return "INSERT INTO runs (" + strings.Join(cols, ", ") + ") VALUES (" + strings.Join(ph, ", ") + ")" +
		" ON CONFLICT (run_id) DO UPDATE SET " + strings.Join(set, ", ") +
		" WHERE runs.updated_at <= excluded.updated_at"
}

// UpsertArgs are the parameters of UpsertSQL for e.
func UpsertArgs(e Entry) []any {
	return []any{e.RunID, e.Key, e.Type, e.Chain, e.Task, e.Params, e.Status, e.Trigger,
		e.SubmittedAt.UnixMicro(), micros(e.StartedAt), micros(e.FinishedAt), e.DurationMS, e.Error, e.CostUSD,
		e.Tasks.Total, e.Tasks.Pending, e.Tasks.Running, e.Tasks.Done, e.Tasks.Failed, e.Tasks.Cancelled,
		e.Tasks.UpstreamFailed, e.Tasks.Cached, e.Hits, e.Progress, e.StatusLine, e.UpdatedAt.UnixMicro(),
		ParamValues(e.Params)}
}

// AddHitsSQL adds to the hits of the latest run of a key.
func AddHitsSQL(d Dialect) string {
	return "UPDATE runs SET hits = hits + " + d.Placeholder(1) + " WHERE run_id = (SELECT run_id FROM runs WHERE run_key = " +
		d.Placeholder(2) + " ORDER BY submitted_at DESC, run_id DESC LIMIT 1)"
}

// GetSQL reads one run.
func GetSQL(d Dialect) string {
	return "SELECT " + Columns + " FROM runs WHERE run_id = " + d.Placeholder(1)
}

// ListSQL is a page of runs matching p, newest first, and its parameters.
func ListSQL(d Dialect, p ListParams) (string, []any) {
	w := newWhere(d)
	w.filter(p.Filter, true)
	if p.Cursor != nil {
		at := p.Cursor.SubmittedAt.UnixMicro()
		w.add("(submitted_at < " + w.arg(at) + " OR (submitted_at = " + w.arg(at) + " AND run_id < " + w.arg(p.Cursor.RunID) + "))")
	}
	q := "SELECT " + Columns + " FROM runs" + w.sql() + " ORDER BY submitted_at DESC, run_id DESC LIMIT " + w.arg(p.Limit)
	return q, w.args
}

// CountSQL counts the runs matching f by status (f.Status is ignored: the counts are per status).
func CountSQL(d Dialect, f Filter) (string, []any) {
	w := newWhere(d)
	w.filter(f, false)
	return "SELECT status, COUNT(*) FROM runs" + w.sql() + " GROUP BY status", w.args
}

type where struct {
	d     Dialect
	conds []string
	args  []any
}

func newWhere(d Dialect) *where { return &where{d: d} }

func (w *where) arg(v any) string {
	w.args = append(w.args, v)
	return w.d.Placeholder(len(w.args))
}

func (w *where) add(cond string) { w.conds = append(w.conds, cond) }

func (w *where) eq(col, v string) {
	if v != "" {
		w.add(col + " = " + w.arg(v))
	}
}

func (w *where) filter(f Filter, withStatus bool) {
	w.eq("type", f.Type)
	w.eq("chain", f.Chain)
	w.eq("task", f.Task)
	w.eq("triggered_by", f.Trigger)
	w.eq("run_key", f.Key)
	if withStatus {
		w.eq("status", f.Status)
	}
	if !f.Since.IsZero() {
		w.add("submitted_at >= " + w.arg(f.Since.UnixMicro()))
	}
	if !f.Until.IsZero() {
		w.add("submitted_at < " + w.arg(f.Until.UnixMicro()))
	}
	if f.Query != "" {
		w.add("param_values " + w.d.ILike + " " + w.arg("%"+escapeLike(f.Query)+"%") + ` ESCAPE '\'`)
	}
}

func (w *where) sql() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}

// escapeLike makes % and _ in a search literal (the ESCAPE character is \).
func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

// Scanner is what *sql.Rows, *sql.Row and pgx rows have in common.
type Scanner interface {
	Scan(dest ...any) error
}

// Rows is what *sql.Rows and pgx.Rows have in common.
type Rows interface {
	Scanner
	Next() bool
	Err() error
}

// ScanEntries reads every row of a list query.
func ScanEntries(rows Rows) ([]Entry, error) {
	var out []Entry
	for rows.Next() {
		e, err := ScanEntry(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// ScanCounts reads the rows of CountSQL.
func ScanCounts(rows Rows) (map[string]int64, error) {
	out := map[string]int64{}
	for rows.Next() {
		var s string
		var n int64
		if err := rows.Scan(&s, &n); err != nil {
			return nil, err
		}
		out[s] = n
	}
	return out, rows.Err()
}

// ScanEntry reads one row of Columns.
func ScanEntry(s Scanner) (Entry, error) {
	var e Entry
	var submitted, updated int64
	var started, finished sql.NullInt64
	err := s.Scan(&e.RunID, &e.Key, &e.Type, &e.Chain, &e.Task, &e.Params, &e.Status, &e.Trigger,
		&submitted, &started, &finished, &e.DurationMS, &e.Error, &e.CostUSD,
		&e.Tasks.Total, &e.Tasks.Pending, &e.Tasks.Running, &e.Tasks.Done, &e.Tasks.Failed, &e.Tasks.Cancelled,
		&e.Tasks.UpstreamFailed, &e.Tasks.Cached, &e.Hits, &e.Progress, &e.StatusLine, &updated)
	if err != nil {
		return e, err
	}
	e.SubmittedAt = time.UnixMicro(submitted).UTC()
	e.UpdatedAt = time.UnixMicro(updated).UTC()
	e.StartedAt, e.FinishedAt = fromMicros(started), fromMicros(finished)
	return e, nil
}

func micros(t *time.Time) any {
	if t == nil {
		return nil
	}
	return t.UnixMicro()
}

func fromMicros(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := time.UnixMicro(v.Int64).UTC()
	return &t
}

// ParamValues is the text `q` searches: the values of the canonical parameter JSON, one per
// line, so that q matches values and not the parameter names.
func ParamValues(params string) string {
	var m map[string]any
	if json.Unmarshal([]byte(params), &m) != nil {
		return params
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		switch v := m[k].(type) {
		case string:
			b.WriteString(v)
		case []any:
			for i, x := range v {
				if i > 0 {
					b.WriteByte(',')
				}
				fmt.Fprint(&b, x)
			}
		default:
			raw, _ := json.Marshal(v)
			b.Write(raw)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

//go:embed migration/*.sql
var migrationFS embed.FS

// Migrations are the schema's steps, the same for every driver (the schema is written to read
// the same in SQLite and PostgreSQL).
func Migrations() ([]Migration, error) { return LoadMigrations(migrationFS, "migration") }

// The migration bookkeeping, the same in both databases.
const (
	MigrationTableSQL = `CREATE TABLE IF NOT EXISTS history_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT NOT NULL,
		applied_at BIGINT NOT NULL)`
	CurrentVersionSQL = `SELECT COALESCE(MAX(version), 0) FROM history_migrations`
	ResetSQL          = `DELETE FROM runs`
)

// RecordVersionSQL notes an applied migration (version, name, applied_at).
func RecordVersionSQL(d Dialect) string {
	return "INSERT INTO history_migrations (version, name, applied_at) VALUES (" +
		d.Placeholder(1) + ", " + d.Placeholder(2) + ", " + d.Placeholder(3) + ")"
}

// ErrNewerSchema is an index written by a newer server: this one must not touch it.
var ErrNewerSchema = errors.New("the run history's schema is newer than this server")

// Migration is one numbered step of the schema.
type Migration struct {
	Version  int
	Name     string
	Up, Down string
}

var migrationRE = regexp.MustCompile(`^(\d{3})_([a-z0-9_]+)\.(up|down)\.sql$`)

// LoadMigrations reads dir of fsys: NNN_name.up.sql and NNN_name.down.sql, every version with
// both halves, numbered from 1 without gaps (River's rivermigrate checks the same).
func LoadMigrations(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	byVersion := map[int]*Migration{}
	for _, e := range entries {
		m := migrationRE.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration %s: want NNN_name.up.sql or NNN_name.down.sql", e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		b, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		mg := byVersion[v]
		if mg == nil {
			mg = &Migration{Version: v, Name: m[2]}
			byVersion[v] = mg
		}
		if mg.Name != m[2] {
			return nil, fmt.Errorf("migration %03d has two names: %s and %s", v, mg.Name, m[2])
		}
		if m[3] == "up" {
			mg.Up = string(b)
		} else {
			mg.Down = string(b)
		}
	}
	out := make([]Migration, 0, len(byVersion))
	for v := 1; v <= len(byVersion); v++ {
		mg := byVersion[v]
		switch {
		case mg == nil:
			return nil, fmt.Errorf("migrations: version %03d is missing (versions must run 001, 002, ... without gaps)", v)
		case strings.TrimSpace(mg.Up) == "" || strings.TrimSpace(mg.Down) == "":
			return nil, fmt.Errorf("migration %03d_%s: needs both an up and a down file", v, mg.Name)
		}
		out = append(out, *mg)
	}
	return out, nil
}
