// Package taskio carries what a running task is given (its context, out, log and inputs) from
// the runtime into package chains without making the Context's constructor part of the SDK.
//
// Package chains registers NewContext in its init; chains/taskrun, the only caller, is the one
// place user code is invoked (by the plugin and by chainstest alike).
package taskio

import (
	"context"
	"io"
)

// IO is what one attempt of a task reads and writes.
type IO struct {
	Context context.Context
	Out     io.Writer // the task's output, committed only when Run returns nil
	Log     io.Writer // the task's log
	Inputs  []string  // local paths of the required tasks' outputs, in Requires order
	// Report receives the task's progress each time it reports some (nil: dropped).
	Report func(Progress)
}

// Progress is what a task last said of itself: done of total units, and a status line.
type Progress struct {
	Done, Total int64
	Status      string
}

// NewContext builds a *chains.Context (typed any: this package cannot import chains, which
// imports it). Set by package chains at init.
var NewContext func(IO) any
