package testchains

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

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

// SpanTask holds for a while and writes when it started and ended (Unix nanoseconds): what
// OverlapTask measures the parallelism of a run with.
type SpanTask struct {
	Index int           `param:"index"`
	Hold  time.Duration `param:"hold" default:"50ms"`
	Salt  string        `param:"salt" default:""`
}

func (t SpanTask) Run(ctx *chains.Context) error {
	start := time.Now()
	time.Sleep(t.Hold)
	_, err := fmt.Fprintf(ctx.Out(), "%d %d\n", start.UnixNano(), time.Now().UnixNano())
	return err
}

// OverlapTask requires `spans` SpanTasks and writes how many of them ran at once, at most.
type OverlapTask struct {
	Spans int           `param:"spans" default:"10"`
	Hold  time.Duration `param:"hold" default:"50ms"`
	Salt  string        `param:"salt" default:""`
}

func (t OverlapTask) Requires() []chains.Task {
	deps := make([]chains.Task, t.Spans)
	for i := range deps {
		deps[i] = SpanTask{Index: i, Hold: t.Hold, Salt: t.Salt}
	}
	return deps
}

func (t OverlapTask) Run(ctx *chains.Context) error {
	type edge struct {
		at    int64
		delta int
	}
	var edges []edge
	for i := 0; i < ctx.NumInputs(); i++ {
		b, err := ctx.ReadInput(i)
		if err != nil {
			return err
		}
		var start, end int64
		if _, err := fmt.Sscan(string(b), &start, &end); err != nil {
			return fmt.Errorf("input %d: %w", i, err)
		}
		edges = append(edges, edge{start, +1}, edge{end, -1})
	}
	sort.Slice(edges, func(i, j int) bool { // an end before a start at the same instant
		return edges[i].at < edges[j].at || edges[i].at == edges[j].at && edges[i].delta < edges[j].delta
	})
	now, most := 0, 0
	for _, e := range edges {
		now += e.delta
		most = max(most, now)
	}
	_, err := fmt.Fprintln(ctx.Out(), most)
	return err
}
