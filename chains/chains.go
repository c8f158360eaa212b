// Package chains is the SDK chain authors write against: the Task interface, the Context a task
// runs with, and the canonical parameter encoding that gives every run its key.
//
// It owns no process, store or HTTP concern: the host (server) and the plugin runtime
// (plugins/serve) build a Context and hand it to user code. Chain files live in
// chains/<type>/<name>_chain.go; `make generate` turns their exported *Task types into routes.
package chains

//go:generate go run ../gen -root ..

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
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
