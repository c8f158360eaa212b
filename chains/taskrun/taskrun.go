// Package taskrun is the one place user code is called: it builds a task's chains.Context, runs
// Run with a panic turned into an error (the stack goes to the task's log), and calls
// DefineMetrics the same guarded way.
//
// The plugin runtime (plugins/serve) and chains/chainstest both use it, so a task behaves the
// same in a unit test as in a run. Chain authors never import it.
package taskrun

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime/debug"
	"time"

	"nectar/chains"
	"nectar/chains/internal/taskio"
)

// IO is what one attempt of a task reads and writes: its context, out, log and inputs, and
// where its progress reports go.
type IO = taskio.IO

// Progress is a task's report of itself (ctx.Progress and ctx.Status).
type Progress = taskio.Progress

// OpenFile opens a task's out or log in two system calls, not os.OpenFile's six.
var OpenFile = taskio.OpenFile

// Run calls t.Run with a Context built from io. A panic becomes an error ("panic: ...") and
// panicked is true; its stack is written to io.Log.
func Run(t chains.Task, io IO) (err error, panicked bool) {
	ctx := taskio.NewContext(io).(*chains.Context)
	defer func() {
		if p := recover(); p != nil {
			writeStack(io.Log, p)
			err, panicked = fmt.Errorf("panic: %v", p), true
		}
		// Artifacts left open are closed (and synced) before anyone commits them.
		if cerr := taskio.Finish(ctx); cerr != nil && err == nil {
			err = fmt.Errorf("writing artifacts: %w", cerr)
		}
	}()
	return t.Run(ctx), false
}

func writeStack(w io.Writer, p any) {
	if w != nil {
		fmt.Fprintf(w, "panic: %v\n\n%s\n", p, debug.Stack())
	}
}

// DefineMetrics calls t's DefineMetrics, if it has one, and returns the value as JSON. ok is
// false when t defines no metrics. A panic, an error or a value JSON cannot hold is returned as
// an error that says which.
func DefineMetrics(t chains.Task, cpuPercent float64, rssBytes uint64, elapsed time.Duration, previous json.RawMessage) (value json.RawMessage, ok bool, err error) {
	md, ok := t.(chains.MetricsDefiner)
	if !ok {
		return nil, false, nil
	}
	defer func() {
		if p := recover(); p != nil {
			value, err = nil, fmt.Errorf("panic in DefineMetrics: %v", p)
		}
	}()
	v, err := md.DefineMetrics(cpuPercent, rssBytes, elapsed, previous)
	if err != nil {
		return nil, true, err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, true, fmt.Errorf("DefineMetrics returned a value JSON cannot hold: %w", err)
	}
	return b, true, nil
}
