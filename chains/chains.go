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
// [MetricsDefiner] computes the task's own metrics while it runs, and [Scheduled] runs the
// task on a schedule.
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
	"fmt"
	"io"
	"log/slog"
	"os"
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

	report   func(taskio.Progress)
	mu       sync.Mutex
	progress taskio.Progress
}

func init() {
	taskio.NewContext = func(cfg taskio.IO) any { return newContext(cfg) }
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
	return os.Open(c.inputs[i])
}

// ReadInput returns the whole output of the i-th required task.
func (c *Context) ReadInput(i int) ([]byte, error) {
	if i < 0 || i >= len(c.inputs) {
		return nil, fmt.Errorf("chains: ReadInput(%d): task requires %d tasks", i, len(c.inputs))
	}
	return os.ReadFile(c.inputs[i])
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
