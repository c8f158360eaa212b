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
	// Source opens an object of the target store by its path (nil: there is no store).
	Source func(path string) (io.ReadCloser, error)
	// ArtifactDir is the folder the task's named artifacts are written to, as files named by
	// their names ("": the task cannot make artifacts here).
	ArtifactDir string
	// Publish records that artifact name is also to be stored at path (see Context.Publish).
	Publish func(name, path string)
	// Connections are the values of the connections the task declared, by name.
	Connections map[string]string
}

// Progress is what a task last said of itself: done of total units, and a status line.
type Progress struct {
	Done, Total int64
	Status      string
}

// Finish closes what the task left open in its Context (its artifacts). Set by package chains.
var Finish func(ctx any) error

// NewContext builds a *chains.Context (typed any: this package cannot import chains, which
// imports it). Set by package chains at init.
var NewContext func(IO) any
