// Package history is the run index: one row per run (id, key, task, parameters, status, times,
// error summary, cost, task counts, trigger, hits), listed and filtered by GET /api/runs and the
// UI. It is derived data: the run records in the store stay the truth, and Rebuild makes the
// index again from them.
//
// The shape follows River's driver layer: a small Driver interface with one method per query,
// one package per database (history/sqlite, embedded and the default; history/postgres, shared
// by several servers), migrations numbered alike in both, and one test suite
// (history/historytest) run against each. Index sits in front of a Driver and batches writes,
// so a run never waits for, nor fails because of, the index.
package history

import (
	"context"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Statuses a run goes through (the same words as the run record's).
const (
	StatusPending   = "PENDING"
	StatusRunning   = "RUNNING"
	StatusDone      = "DONE"
	StatusFailed    = "FAILED"
	StatusCancelled = "CANCELLED"
)

// Statuses lists the run statuses in the order the UI shows them.
var Statuses = []string{StatusPending, StatusRunning, StatusDone, StatusFailed, StatusCancelled}

// Triggers say how a run was started.
const (
	TriggerAPI      = "api"
	TriggerCLI      = "cli"
	TriggerUI       = "ui"
	TriggerSchedule = "schedule"
	TriggerBackfill = "backfill"
)

// Triggers lists the known triggers.
var Triggers = []string{TriggerAPI, TriggerCLI, TriggerUI, TriggerSchedule, TriggerBackfill}

// TaskCounts counts a run's tasks by status; Cached counts the DONE ones that were not run again.
type TaskCounts struct {
	Total          int `json:"total"`
	Pending        int `json:"pending"`
	Running        int `json:"running"`
	Done           int `json:"done"`
	Failed         int `json:"failed"`
	Cancelled      int `json:"cancelled"`
	UpstreamFailed int `json:"upstream_failed"`
	Cached         int `json:"cached"`
}

// Entry is one run in the index.
type Entry struct {
	RunID       string     `json:"run_id"`
	Key         string     `json:"key"`
	Type        string     `json:"type"`
	Chain       string     `json:"chain"`
	Task        string     `json:"task"`
	Params      string     `json:"params"` // canonical JSON
	Status      string     `json:"status"`
	Trigger     string     `json:"trigger"`
	SubmittedAt time.Time  `json:"submitted_at"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	FinishedAt  *time.Time `json:"finished_at,omitempty"`
	// DurationMS is finished - started (or - submitted when it never started); 0 while it runs.
	DurationMS int64      `json:"duration_ms"`
	Error      string     `json:"error,omitempty"` // a summary: the first line, at most MaxError bytes
	CostUSD    float64    `json:"cost_usd"`
	Tasks      TaskCounts `json:"tasks"`
	// Hits counts the POSTs that joined the run or found its out done (batched, approximate
	// while a flush is pending). It lives in the index only: a rebuild starts it at 0.
	Hits int64 `json:"hits"`
	// Progress and StatusLine are what the root task last reported (0..1; "" when it never did).
	Progress   float64 `json:"progress"`
	StatusLine string  `json:"status_line,omitempty"`
	// UpdatedAt orders writes of the same run: an older state never replaces a newer one.
	UpdatedAt time.Time `json:"updated_at"`
}

// MaxError bounds the error summary kept in the index (the record has it whole).
const MaxError = 500

// Summarize shortens an error to its first line and MaxError bytes.
func Summarize(err string) string {
	if i := strings.IndexByte(err, '\n'); i >= 0 {
		err = err[:i]
	}
	if len(err) > MaxError {
		n := MaxError
		for n > 0 && err[n]&0xC0 == 0x80 { // do not cut a UTF-8 sequence
			n--
		}
		err = err[:n] + "…"
	}
	return err
}

// Filter selects runs. Zero fields match everything.
type Filter struct {
	Type, Chain, Task string
	Status            string
	Trigger           string
	Key               string
	Since, Until      time.Time // on SubmittedAt: Since inclusive, Until exclusive
	Query             string    // a substring of a parameter value (case-insensitive for ASCII)
}

// ListParams is a page request: Filter, at most Limit entries, after Cursor.
type ListParams struct {
	Filter
	Limit  int
	Cursor *Cursor
}

// Cursor is where a page ends: the next page starts after (SubmittedAt, RunID), newest first.
type Cursor struct {
	SubmittedAt time.Time
	RunID       string
}

// Limits of a page.
const (
	DefaultLimit = 50
	MaxLimit     = 500
)

// ErrBadCursor is a cursor this server did not make.
var ErrBadCursor = errors.New("not a cursor from a previous page")

// ErrNotFound is a run id the index does not hold.
var ErrNotFound = errors.New("no run with this id in the history")

// Encode makes the opaque text of a cursor.
func (c Cursor) Encode() string {
	raw := strconv.FormatInt(c.SubmittedAt.UnixMicro(), 10) + ":" + c.RunID
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

// DecodeCursor reads a cursor made by Encode.
func DecodeCursor(s string) (*Cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, ErrBadCursor
	}
	ts, id, ok := strings.Cut(string(b), ":")
	micros, err := strconv.ParseInt(ts, 10, 64)
	if !ok || err != nil || id == "" || len(id) > 64 || !Text(id) {
		return nil, ErrBadCursor
	}
	return &Cursor{SubmittedAt: time.UnixMicro(micros).UTC(), RunID: id}, nil
}

// Text reports whether s can be a value the index compares: valid UTF-8 without a NUL byte
// (PostgreSQL refuses either in a text parameter, which would read as the database failing).
func Text(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }

// Hit is a number of POSTs to count on the latest run of a key.
type Hit struct {
	Key string
	N   int64
}

// Driver is one database's implementation of the index. Every method takes a context with a
// deadline; none builds SQL from its arguments.
type Driver interface {
	// Migrate brings the schema to the latest version and reports the version it found
	// (0: a new database) and the latest.
	Migrate(ctx context.Context) (found, latest int, err error)
	// Upsert writes entries; an entry whose UpdatedAt is older than the stored one's is ignored,
	// and Hits are kept (they are counted by AddHits).
	Upsert(ctx context.Context, entries []Entry) error
	// AddHits adds each Hit's N to the latest run of its key.
	AddHits(ctx context.Context, hits []Hit) error
	// List returns a page of runs, newest first.
	List(ctx context.Context, p ListParams) ([]Entry, error)
	// Get returns one run, or ErrNotFound.
	Get(ctx context.Context, runID string) (Entry, error)
	// CountByStatus counts the runs matching f (its Status ignored), by status.
	CountByStatus(ctx context.Context, f Filter) (map[string]int64, error)
	// Reset deletes every entry (a rebuild starts from nothing).
	Reset(ctx context.Context) error
	// Name names the database in logs, without credentials.
	Name() string
	Close() error
}

// Page is a list answer.
type Page struct {
	Entries []Entry
	Next    string // cursor of the next page; "" on the last
}

// ListPage runs a page query and computes the next cursor.
func ListPage(ctx context.Context, d Driver, p ListParams) (Page, error) {
	if p.Limit <= 0 {
		p.Limit = DefaultLimit
	}
	p.Limit = min(p.Limit, MaxLimit)
	want := p.Limit
	p.Limit++ // one more tells whether there is a next page
	entries, err := d.List(ctx, p)
	if err != nil {
		return Page{}, err
	}
	page := Page{Entries: entries}
	if len(entries) > want {
		page.Entries = entries[:want]
		last := page.Entries[want-1]
		page.Next = Cursor{SubmittedAt: last.SubmittedAt, RunID: last.RunID}.Encode()
	}
	return page, nil
}
