package testchains

import (
	"fmt"
	"strconv"
	"strings"

	"nectar/chains"
)

// LeafTask writes its index: the trivial unit of the fan-in benchmark.
type LeafTask struct {
	Index int    `param:"index"`
	Salt  string `param:"salt" default:""` // sets a fan-in apart from earlier ones (benchmarks)
}

func (t LeafTask) Run(ctx *chains.Context) error {
	_, err := fmt.Fprintln(ctx.Out(), t.Index)
	return err
}

// JoinTask requires `leaves` LeafTasks (independent, so they run in parallel) and writes the sum
// of their indexes.
type JoinTask struct {
	Leaves int    `param:"leaves" default:"100"`
	Salt   string `param:"salt" default:""`
}

func (t JoinTask) Requires() []chains.Task {
	deps := make([]chains.Task, t.Leaves)
	for i := range deps {
		deps[i] = LeafTask{Index: i, Salt: t.Salt}
	}
	return deps
}

func (t JoinTask) Run(ctx *chains.Context) error {
	sum := 0
	for i := 0; i < ctx.NumInputs(); i++ {
		b, err := ctx.ReadInput(i)
		if err != nil {
			return err
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return fmt.Errorf("input %d: %w", i, err)
		}
		sum += n
	}
	_, err := fmt.Fprintln(ctx.Out(), sum)
	return err
}
