package ui

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"nectar/server/runs"
)

// layoutOf lays tasks out as a run page does: the shape from their places in the graph, the
// statuses from their briefs.
func layoutOf(tasks []runs.TaskState) Graph {
	shapes := make([]runs.TaskShape, len(tasks))
	briefs := make([]runs.TaskBrief, len(tasks))
	for i, t := range tasks {
		shapes[i] = runs.TaskShape{Chain: t.Chain, Task: t.Task, Requires: t.Requires}
		briefs[i] = runs.BriefOf(t.Status, t.Cached)
	}
	return layoutShape(shapes).graph(briefs)
}

func TestLayoutFanInIsOneGroup(t *testing.T) {
	// JoinTask (slot 0) requires 100 LeafTasks (slots 1..100): 98 done, one running, one failed.
	tasks := []runs.TaskState{{Chain: "fanin_chain", Task: "JoinTask", Status: runs.Pending}}
	for i := 1; i <= 100; i++ {
		st := runs.Done
		switch i {
		case 50:
			st = runs.Running
		case 51:
			st = runs.Failed
		}
		tasks = append(tasks, runs.TaskState{Chain: "fanin_chain", Task: "LeafTask", Status: st})
		tasks[0].Requires = append(tasks[0].Requires, i)
	}
	g := layoutOf(tasks)
	if len(g.Nodes) != 2 || len(g.Edges) != 1 {
		t.Fatalf("Layout(fan-in of 100) = %d nodes, %d edges; want 2 and 1", len(g.Nodes), len(g.Edges))
	}
	var group, join Node
	for _, n := range g.Nodes {
		if n.Group {
			group = n
		} else {
			join = n
		}
	}
	if group.Label != "LeafTask ×100" || group.Status != "FAILED" || group.Detail != "1 FAILED · 1 RUNNING · 98 DONE" || len(group.Tasks) != 100 {
		t.Errorf("group node = %+v", group)
	}
	if !(group.X < join.X) {
		t.Errorf("leaves at x=%d, join at x=%d: want requirements left of the task requiring them", group.X, join.X)
	}
}

func TestLayoutDiamondAndChain(t *testing.T) {
	// root(0) requires A(1) and B(3); A requires C(2); B requires C (a smaller slot than B's).
	tasks := []runs.TaskState{
		{Task: "Root", Requires: []int{1, 3}}, {Task: "A", Requires: []int{2}}, {Task: "C"}, {Task: "B", Requires: []int{2}},
	}
	g := layoutOf(tasks)
	x := map[string]int{}
	for _, n := range g.Nodes {
		x[n.Label] = n.X
	}
	if !(x["C"] < x["A"] && x["A"] == x["B"] && x["B"] < x["Root"]) {
		t.Errorf("columns = %v, want C | A B | Root", x)
	}
	if len(g.Edges) != 4 {
		t.Errorf("%d edges, want 4", len(g.Edges))
	}
	// Fewer than GroupMin siblings stay separate tasks.
	small := []runs.TaskState{{Task: "Join"}}
	for i := 1; i < GroupMin; i++ {
		small = append(small, runs.TaskState{Task: "Leaf"})
		small[0].Requires = append(small[0].Requires, i)
	}
	if g := layoutOf(small); len(g.Nodes) != GroupMin {
		t.Errorf("%d siblings gave %d nodes, want each its own", GroupMin-1, len(g.Nodes))
	}
}

func TestLayoutLongChainIsLinear(t *testing.T) {
	chain := func(n int) []runs.TaskState {
		var tasks []runs.TaskState
		for i := 0; i < n; i++ {
			st := runs.TaskState{Task: fmt.Sprintf("Step%d", i)}
			if i < n-1 {
				st.Requires = []int{i + 1}
			}
			tasks = append(tasks, st)
		}
		return tasks
	}
	g := layoutOf(chain(MaxDrawn))
	if len(g.Nodes) != MaxDrawn || len(g.Edges) != MaxDrawn-1 || g.Nodes[0].X <= g.Nodes[1].X || g.Boxes != 0 {
		t.Errorf("chain of %d: %d nodes, %d edges, %d boxes not drawn", MaxDrawn, len(g.Nodes), len(g.Edges), g.Boxes)
	}
	// One box more than a page draws: not drawn, and no task is hidden in a group.
	sh := layoutShape(shapesOf(chain(MaxDrawn + 1)))
	if g := sh.graph(make([]runs.TaskBrief, MaxDrawn+1)); len(g.Nodes) != 0 || len(g.Edges) != 0 || g.Boxes != MaxDrawn+1 {
		t.Errorf("chain of %d: %d nodes, %d edges, boxes %d; want none drawn, and %d boxes said", MaxDrawn+1, len(g.Nodes), len(g.Edges), g.Boxes, MaxDrawn+1)
	}
	if slices.Contains(sh.grouped, true) {
		t.Errorf("a graph not drawn has tasks in groups: the table would not list them")
	}
}

// shapesOf is each task's place in the graph.
func shapesOf(tasks []runs.TaskState) []runs.TaskShape {
	shapes := make([]runs.TaskShape, len(tasks))
	for i, t := range tasks {
		shapes[i] = runs.TaskShape{Chain: t.Chain, Task: t.Task, Requires: t.Requires}
	}
	return shapes
}

// Tasks that feed the same boxes are one box, whatever tasks inside those boxes they feed: a
// fan-in of n leaves, each through its own mid task, is three boxes, not n+2; leaves feeding
// two mid groups are another box; fewer than GroupMin stay single.
func TestLayoutGroupsTasksFeedingOneGroup(t *testing.T) {
	for _, tc := range []struct {
		name  string
		n     int // leaves, each through its own mid task
		extra int // leaves feeding the join directly
		want  []string
	}{
		{name: "500 leaves, each with its mid", n: 500, want: []string{"Join", "Mid ×500", "Leaf ×500"}},
		{name: "50,000 leaves, each with its mid", n: 50_000, want: []string{"Join", "Mid ×50000", "Leaf ×50000"}},
		{name: "and 20 leaves feeding the join", n: 100, extra: 20, want: []string{"Join", "Leaf ×20", "Mid ×100", "Leaf ×100"}},
		{name: "under GroupMin", n: GroupMin - 1, want: []string{"Join", "Mid", "Leaf"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tasks := []runs.TaskState{{Task: "Join"}}
			for i := 0; i < tc.n; i++ {
				tasks = append(tasks, runs.TaskState{Task: "Mid", Requires: []int{len(tasks) + 1}}, runs.TaskState{Task: "Leaf"})
				tasks[0].Requires = append(tasks[0].Requires, len(tasks)-2)
			}
			for i := 0; i < tc.extra; i++ {
				tasks = append(tasks, runs.TaskState{Task: "Leaf"})
				tasks[0].Requires = append(tasks[0].Requires, len(tasks)-1)
			}
			g := layoutOf(tasks)
			seen := map[string]bool{}
			var labels []string
			for _, n := range g.Nodes {
				if !seen[n.Label] {
					labels = append(labels, n.Label)
				}
				seen[n.Label] = true
			}
			slices.Sort(labels)
			want := slices.Clone(tc.want)
			slices.Sort(want)
			if !slices.Equal(labels, want) || (tc.n >= GroupMin && len(g.Nodes) != len(tc.want)) {
				t.Fatalf("%d nodes labelled %q; want %q", len(g.Nodes), labels, tc.want)
			}
			for _, n := range g.Nodes {
				if n.Group && len(n.Tasks) != map[string]int{"Mid": tc.n, "Leaf": tc.n}[n.Label[:strings.Index(n.Label, " ")]] && n.Label != fmt.Sprintf("Leaf ×%d", tc.extra) {
					t.Errorf("group %s holds %d tasks", n.Label, len(n.Tasks))
				}
			}
		})
	}
}

func TestCostText(t *testing.T) {
	for in, want := range map[float64]string{0: "–", 1.234e-6: "$0.0000012", 0.37: "$0.37", 12.5: "$12.50", 0.05: "$0.050"} {
		if got := costText(in); got != want {
			t.Errorf("costText(%g) = %q, want %q", in, got, want)
		}
	}
}

func TestMergeSamples(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	in := []runs.Sample{
		{At: t0, PID: 1, CPUPercent: 90, RSSBytes: 100}, {At: t0.Add(time.Millisecond), PID: 2, CPUPercent: 1, RSSBytes: 10},
		{At: t0.Add(time.Second), PID: 1, CPUPercent: 80, RSSBytes: 110}, {At: t0.Add(time.Second + 2*time.Millisecond), PID: 2, CPUPercent: 2, RSSBytes: 10},
	}
	got := mergeSamples(in)
	if len(got) != 2 || got[0].CPUPercent != 91 || got[0].RSSBytes != 110 || got[1].CPUPercent != 82 {
		t.Errorf("mergeSamples = %+v, want one point per tick with the processes summed", got)
	}
}

func TestMakePreview(t *testing.T) {
	tests := []struct {
		name string
		out  []byte
		kind string
	}{
		{"png", append([]byte("\x89PNG\r\n\x1a\n"), make([]byte, 20)...), "image"},
		{"svg", []byte(`<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>`), "image"},
		{"csv", []byte("airport,day,mean\nATL,2001-01-01,12.5\nORD,2001-01-01,8\n"), "csv"},
		{"text", []byte("hello ada\n"), "text"},
		{"one line with commas is text", []byte("a,b,c"), "text"},
		{"binary", []byte{0xff, 0xfe, 0x00, 0x01, 0x80}, "none"},
		{"empty", nil, "none"},
	}
	for _, tt := range tests {
		p := makePreview(tt.out, "/dl")
		if p.Kind != tt.kind {
			t.Errorf("%s: makePreview kind = %q, want %q", tt.name, p.Kind, tt.kind)
		}
	}
	if p := makePreview([]byte("airport,day\nATL,1\n"), ""); len(p.Rows) != 2 || p.Rows[1][0] != "ATL" {
		t.Errorf("csv rows = %v", p.Rows)
	}
}
