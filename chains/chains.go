// Package chains is the SDK a chain author writes against. A chain is a file
// chains/<type>/<name>_chain.go; every exported struct type in it whose name ends in Task is a
// task, and `make generate` makes it an endpoint:
//
//	POST /api/chains/<type>/<name>_chain/<Task>?param=value
//
// # A task
//
// A task is a struct with a Run method (value or pointer receiver):
//
//	// HelloTask greets someone. (The doc comment is the task's help in the catalog.)
//	type HelloTask struct {
//		Name string `param:"name" default:"world"` // Who to greet.
//	}
//
//	func (t HelloTask) Run(ctx *chains.Context) error {
//		_, err := fmt.Fprintf(ctx.Out(), "hello %s\n", t.Name)
//		return err
//	}
//
// # Parameters
//
// Every field is a parameter, tagged param:"name" (lower case letters, digits and _). The
// parameters are the run's identity: the same values give the same key, so a task whose out
// exists is never run again. Types: string, bool, int, int64, float64, time.Time (a date
// 2006-01-02 or RFC 3339), time.Duration (0 or more, unless tagged signed:"true"), []string
// (repeated or comma-separated), and enums (enum:"a,b" on a string). Tags: default:"..." or
// required:"true"; a field with neither defaults to its zero value. The generator checks all of
// this and reports mistakes as file:line:col.
//
// # Dependencies
//
// A task that implements [Requirer] runs after the tasks it returns (independent ones run in
// parallel, and one whose out exists is not run again); their outs are its inputs,
// [Context.Input] and [Context.ReadInput], in Requires order. Required tasks must be of the same
// chain type.
//
// # Progress
//
// [Context.Progress] and [Context.Status] report how far a long task is and what it is doing;
// the status answer, the run page and the runs list show them while it runs.
//
// # Declarations
//
// Optional methods change how the server runs a task: [Timeouter] bounds an attempt,
// [Retrier] retries after a failure, [Isolated] gives each attempt a process of its own,
// [MetricsDefiner] computes the task's own metrics while it runs, [Scheduled] runs the
// task on a schedule, [Connector] names the connections (secrets) it may read, and [Queuer]
// sends it to the workers of a queue of its own.
//
// # Data in and out
//
// Besides its inputs and out, a task can read a source object of the store no task produced
// ([Context.Source]), write named artifacts committed with out ([Context.Artifact]), publish
// them at stable paths ([Context.Publish]), and read configured connections
// ([Context.Connection]).
//
// # Testing a task
//
// Package nectar/chains/chainstest runs a task in the test's own process, with given inputs,
// and returns its out, log, error and metrics. `nectar new <type> <name>` writes a chain file
// and a test that uses it.
package chains

//go:generate go run ../gen -root ..

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"nectar/chains/internal/taskio"
)

// Task is one unit of work. Its exported fields tagged `param:"name"` are its parameters; the
// doc comment on the type is its help text.
type Task interface {
	Run(ctx *Context) error
}

// Requirer is implemented by tasks that depend on others. The outputs of the required tasks are
// available through Context.Input in the same order.
type Requirer interface {
	Requires() []Task
}

// Context is what a running task sees: where to write its output, where to log, and the outputs
// of the tasks it requires.
type Context struct {
	ctx    context.Context
	out    io.Writer
	logw   io.Writer
	logger *slog.Logger
	inputs []string
	io     taskio.IO

	artMu     sync.Mutex
	artifacts map[string]*os.File // created by Artifact, closed when Run returns
	temps     []*os.File          // SourceFile downloads, removed when Run returns
	opened    []*os.File          // SourceFile's stored files, closed when Run returns
	finished  bool                // Run has returned: no more artifacts

	report   func(taskio.Progress)
	mu       sync.Mutex
	progress taskio.Progress
}

func init() {
	taskio.NewContext = func(cfg taskio.IO) any { return newContext(cfg) }
	taskio.Finish = func(c any) error { return c.(*Context).closeArtifacts() }
}

// newContext is reached through chains/taskrun (the plugin runtime, and chainstest in tests),
// so that building a Context is not part of the API an author sees.
func newContext(cfg taskio.IO) *Context {
	ctx := cfg.Context
	if ctx == nil {
		ctx = context.Background()
	}
	return &Context{
		ctx:    ctx,
		out:    cfg.Out,
		logw:   cfg.Log,
		logger: slog.New(slog.NewTextHandler(cfg.Log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		inputs: cfg.Inputs,
		report: cfg.Report,
		io:     cfg,
	}
}

// Context is cancelled when the run is cancelled or times out: long tasks should watch it.
func (c *Context) Context() context.Context { return c.ctx }

// Out is the task's output. Nothing written here is visible to anyone until Run returns nil;
// then it becomes the task's `out` in one atomic step.
func (c *Context) Out() io.Writer { return c.out }

// Log is the task's structured logger; its lines go to the task's `log`.
func (c *Context) Log() *slog.Logger { return c.logger }

// Stdout writes raw text into the task's `log` (use it where you would print).
func (c *Context) Stdout() io.Writer { return c.logw }

// NumInputs is the number of tasks this task requires.
func (c *Context) NumInputs() int { return len(c.inputs) }

// Input opens the output of the i-th required task (in Requires order).
func (c *Context) Input(i int) (io.ReadCloser, error) {
	if i < 0 || i >= len(c.inputs) {
		return nil, fmt.Errorf("chains: Input(%d): task requires %d tasks", i, len(c.inputs))
	}
	return taskio.OpenFile(c.inputs[i], os.O_RDONLY)
}

// ReadInput returns the whole output of the i-th required task.
func (c *Context) ReadInput(i int) ([]byte, error) {
	if i < 0 || i >= len(c.inputs) {
		return nil, fmt.Errorf("chains: ReadInput(%d): task requires %d tasks", i, len(c.inputs))
	}
	return taskio.ReadFile(c.inputs[i])
}

// Progress reports how far the task has got: done of total units (rows, files, days). The
// status answer, the run page and the runs list show it while the task runs, and the run record
// keeps the last value. It costs a map update: call it as often as is natural. A total of 0
// means "unknown".
func (c *Context) Progress(done, total int64) {
	c.mu.Lock()
	c.progress.Done, c.progress.Total = max(done, 0), max(total, 0)
	p := c.progress
	c.mu.Unlock()
	if c.report != nil {
		c.report(p)
	}
}

// Status reports what the task is doing now, in one short line ("reading 2001.csv"), shown
// and kept like Progress.
func (c *Context) Status(line string) {
	if i := strings.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	}
	if len(line) > maxStatus {
		line = strings.ToValidUTF8(line[:maxStatus], "")
	}
	c.mu.Lock()
	c.progress.Status = line
	p := c.progress
	c.mu.Unlock()
	if c.report != nil {
		c.report(p)
	}
}

// maxStatus bounds a status line (it travels with every status answer).
const maxStatus = 200

// Source opens an object of the target store that no task produced, a data set put there by
// other means (`make demo-data` puts the flight data under datasets/flights/), by its path in
// the store: "datasets/flights/flights-3m.parquet". It streams: a large object is never read
// whole. Paths with a segment starting with "." (the store's own files) are refused. The outs
// of other tasks are read with Input, which also orders the tasks.
func (c *Context) Source(path string) (io.ReadCloser, error) {
	if err := checkStorePath(path); err != nil {
		return nil, fmt.Errorf("chains: Source(%q): %w", path, err)
	}
	if c.io.Source == nil {
		return nil, fmt.Errorf("chains: Source(%q): this task runs without a store (in a unit test, give chainstest.Sources)", path)
	}
	return c.io.Source(path)
}

// SourceFile is Source for formats read out of order (parquet keeps its index at the end): an
// open file. On the local store it is the stored file itself; otherwise the object is first
// downloaded to a temporary file, removed when Run returns. Do not write to it.
func (c *Context) SourceFile(path string) (*os.File, error) {
	rc, err := c.Source(path)
	if err != nil {
		return nil, err
	}
	if f, ok := rc.(*os.File); ok {
		c.artMu.Lock()
		c.opened = append(c.opened, f) // closed when Run returns
		c.artMu.Unlock()
		return f, nil
	}
	defer rc.Close()
	f, err := os.CreateTemp("", "nectar-source-*")
	if err != nil {
		return nil, fmt.Errorf("chains: SourceFile(%q): %w", path, err)
	}
	c.artMu.Lock()
	c.temps = append(c.temps, f)
	c.artMu.Unlock()
	if _, err := io.Copy(f, rc); err != nil {
		return nil, fmt.Errorf("chains: SourceFile(%q): downloading: %w", path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return f, nil
}

// MaxArtifacts is the most artifacts a task makes: each is listed in its run's record and in
// the status answers that show the task, with a URL of its own.
const MaxArtifacts = 1000

// Artifact creates a named output of the task besides out: a plot, a report, a file per
// airport. name is a relative path of letters, digits and "._=-" segments ("ATL/daily.png").
// What is written becomes visible only when Run returns nil, at the same moment as out, at
// <key>/artifacts/<name> in the store; the status answer lists each artifact with a download
// URL and a content type (from the name's extension), and the run page shows images inline.
// Close it when done; Run's end closes whatever is left open. Creating a name twice starts it
// again. A task makes at most MaxArtifacts.
func (c *Context) Artifact(name string) (io.WriteCloser, error) {
	if err := checkStorePath(name); err != nil {
		return nil, fmt.Errorf("chains: Artifact(%q): %w", name, err)
	}
	if c.io.ArtifactDir == "" {
		return nil, fmt.Errorf("chains: Artifact(%q): this task runs without an artifact folder", name)
	}
	p := filepath.Join(c.io.ArtifactDir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return nil, fmt.Errorf("chains: Artifact(%q): %w", name, err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("chains: Artifact(%q): %w", name, err)
	}
	c.artMu.Lock()
	if c.finished { // a goroutine the task left running: too late to add to its outputs
		c.artMu.Unlock()
		f.Close()
		os.Remove(p)
		return nil, fmt.Errorf("chains: Artifact(%q): Run has returned", name)
	}
	if c.artifacts[name] == nil && len(c.artifacts) >= MaxArtifacts {
		c.artMu.Unlock()
		f.Close()
		os.Remove(p)
		return nil, fmt.Errorf("chains: Artifact(%q): a task makes at most %d artifacts: put more files in one archive", name, MaxArtifacts)
	}
	if c.artifacts == nil {
		c.artifacts = map[string]*os.File{}
	}
	if old := c.artifacts[name]; old != nil {
		old.Close()
	}
	c.artifacts[name] = f
	c.artMu.Unlock()
	return artifactFile{f}, nil
}

// artifactFile closes its file once, whether the task or the end of Run closes it first.
type artifactFile struct{ *os.File }

func (a artifactFile) Close() error {
	if err := a.File.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return err
	}
	return nil
}

// Publish makes artifact name also available at path, a stable place in the store where readers
// find it without the run's key ("reports/airline_delays/year=2001/airport=ATL/daily.png"). It
// is stored when the task succeeds, just before out; each successful run of the task replaces
// it. path follows the artifact name rules and may not be under chains/ or schedules/ (the
// server's own).
func (c *Context) Publish(name, path string) error {
	if err := checkStorePath(name); err != nil {
		return fmt.Errorf("chains: Publish(%q, %q): %w", name, path, err)
	}
	if err := checkStorePath(path); err != nil {
		return fmt.Errorf("chains: Publish(%q, %q): %w", name, path, err)
	}
	if strings.HasPrefix(path, "chains/") || strings.HasPrefix(path, "schedules/") {
		return fmt.Errorf("chains: Publish(%q, %q): chains/ and schedules/ are the server's; publish elsewhere (such as reports/)", name, path)
	}
	if c.io.Publish == nil {
		return fmt.Errorf("chains: Publish(%q, %q): this task runs without a store", name, path)
	}
	c.io.Publish(name, path)
	return nil
}

// Connection is the value of a named connection, a database URL or an API token, configured on
// the server as NECTAR_CONN_<NAME> (NECTAR_CONN_WAREHOUSE for "warehouse"), for a task that
// declares the name ([Connector]). Secrets never travel as parameters, so they are in no key
// and no run record, and the server removes their values from the task's log and error.
func (c *Context) Connection(name string) (string, error) {
	v, ok := c.io.Connections[name]
	if !ok {
		return "", fmt.Errorf("chains: Connection(%q): the task does not declare it (Connections() []string) or the server does not configure NECTAR_CONN_%s", name, strings.ToUpper(name))
	}
	return v, nil
}

// closeArtifacts closes what the task left open (the runtime calls it when Run returns).
func (c *Context) closeArtifacts() error {
	c.artMu.Lock()
	defer c.artMu.Unlock()
	var errs []error
	for name, f := range c.artifacts {
		if err := f.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, fmt.Errorf("artifact %s: %w", name, err))
		}
		if err := (artifactFile{f}).Close(); err != nil {
			errs = append(errs, fmt.Errorf("artifact %s: %w", name, err))
		}
	}
	for _, f := range c.temps {
		f.Close()
		os.Remove(f.Name())
	}
	for _, f := range c.opened {
		f.Close()
	}
	c.temps, c.opened, c.finished = nil, nil, true
	return errors.Join(errs...)
}

// checkStorePath accepts a relative path of segments made of letters, digits and "._=-", none
// empty, "." or "..", none starting with ".".
func checkStorePath(p string) error {
	if p == "" || len(p) > 512 {
		return errors.New("want a relative path of 1 to 512 characters")
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || seg[0] == '.' {
			return errors.New("want a relative path whose segments are not empty and do not start with '.'")
		}
		for _, r := range seg {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._=-", r)) {
				return fmt.Errorf("%q: use letters, digits and ._=- in path segments", r)
			}
		}
	}
	return nil
}

// Timeouter is implemented by tasks that declare how long one attempt may run. Past it the
// attempt is stopped (its context is cancelled and its process killed) and fails. Tasks that
// declare nothing get the server's default (NECTAR_TASK_TIMEOUT).
type Timeouter interface {
	Timeout() time.Duration
}

// RetryPolicy says how often a failed task is tried again, and how long to wait in between:
// Backoff before the second attempt, doubling each time up to MaxBackoff.
type RetryPolicy struct {
	Attempts   int           `json:"attempts"` // total tries, including the first
	Backoff    time.Duration `json:"backoff"`
	MaxBackoff time.Duration `json:"max_backoff,omitempty"`
}

// Retrier is implemented by tasks that may be retried after a failure (an error, a panic, a
// crash of their process, a timeout). Each attempt is recorded in the run record.
type Retrier interface {
	Retry() RetryPolicy
}

// Isolated is implemented by tasks that want a plugin process of their own for each attempt:
// a crash cannot touch other tasks, and the run's metrics get this task's own CPU and memory.
type Isolated interface {
	Isolate() bool
}

// Connector is implemented by tasks that use named connections ([Context.Connection]): the
// server gives a task only the connections it declares. Connections must return a []string
// literal of constant names (lower case letters, digits and _): the generator checks it.
type Connector interface {
	Connections() []string
}

// Queuer is implemented by tasks that must run on particular workers: with queue dispatch
// (the default), the task goes to the named queue instead of its chain type's, and
// only workers serving that queue (nectar worker --queues gpu) take it; it waits in the queue
// until one does. Queue must return a string constant (the generator reads it): 1 to 64
// letters, digits, '_' or '-'. Workers started without --queues serve their chain types'
// queues and every queue a task names. With direct dispatch the server runs every task itself.
//
//	func (TrainTask) Queue() string { return "gpu" }
type Queuer interface {
	Queue() string
}

// CheckQueueName reports whether name can name a queue ([Queuer]), and if not, why: it is a
// token of the queue's subject and part of its consumer's name.
func CheckQueueName(name string) error {
	if !queueName.MatchString(name) {
		return fmt.Errorf("queue name %q: use 1 to 64 letters, digits, '_' or '-'", name)
	}
	return nil
}

var queueName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// MetricsDefiner lets a task compute its own metrics while it runs, like QoA's
// define_metrics_object(cpu, ram, elapsed_time, previous_result): the host calls it once per
// monitor interval with the process's CPU percent, resident memory in bytes, the time since
// the task started and what the previous call returned (JSON; nil the first time). The value
// returned is stored with the run (JSON-encoded) and passed back next time.
type MetricsDefiner interface {
	DefineMetrics(cpuPercent float64, ramBytes uint64, elapsed time.Duration, previous json.RawMessage) (any, error)
}

// Scheduled is implemented by tasks that the server runs on its own, on a schedule:
//
//	// DailyReportTask sums yesterday's orders.
//	type DailyReportTask struct {
//		Day time.Time `param:"day" required:"true"` // the start of the interval
//	}
//
//	func (DailyReportTask) Schedule() chains.Schedule {
//		return chains.Schedule{Cron: "@daily", TimeZone: "Europe/Paris", Start: "2026-01-01", CatchUp: true}
//	}
//
// Each fire time ends an interval, which began at the fire time before it (Airflow's data
// interval): the run fired at midnight on 2 March is for the day 1 March, and the task's one
// time.Time parameter (or the one Schedule.Param names) receives the interval's start, in UTC.
// Its other parameters take their defaults. So every interval has its own key: a tick fired by
// several servers is one run, and an interval already done is not run again.
//
// Schedule must return a composite literal of constants: the generator reads it, and reports a
// bad expression, time zone or start date at its line.
type Scheduled interface {
	Schedule() Schedule
}

// Schedule says when a [Scheduled] task runs.
type Schedule struct {
	// Cron is a cron expression of five fields (minute hour day-of-month month day-of-week,
	// with names, ranges, lists and steps), or @yearly, @monthly, @weekly, @daily, @hourly, or
	// "@every <duration>" (such as "@every 15m", counted from Start).
	Cron string
	// TimeZone is the IANA name the expression is read in ("Europe/Paris"); empty means UTC.
	TimeZone string
	// Start is the earliest interval start, a date (2006-01-02, midnight in TimeZone) or an
	// RFC 3339 time. Empty: intervals from when a server first runs the schedule.
	Start string
	// CatchUp runs the intervals missed while no server was running the schedule (or while it
	// was paused), oldest first, up to the server's cap (NECTAR_SCHEDULE_CATCHUP); without it,
	// only the latest missed interval runs.
	CatchUp bool
	// Param names the time.Time parameter that receives the interval start; empty means the
	// task's only time.Time parameter.
	Param string
}
