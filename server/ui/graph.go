package ui

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"nectar/server/runs"
)

// The task graph is laid out here, on the server, and drawn as SVG by the template: no layout
// library to ship, nothing to run in the browser, and a graph of thousands of tasks costs one
// linear pass. Tasks are placed in columns left to right by depth (the tasks nothing is
// required from, at the left; the task that was POSTed, at the right). Siblings of one kind
// (the same task, in the same column, feeding the same boxes) are drawn as one group node with
// their counts by status once there are GroupMin of them: a fan-in of 100 leaves is one box,
// and so are 1,000 leaves each feeding its own one of 1,000 mid tasks (then one box too). A
// graph that still has more than MaxDrawn boxes is not drawn.

// GroupMin is how many siblings of one kind make a group node.
const GroupMin = 10

// MaxDrawn is the most boxes a graph is drawn with; a larger one is not drawn (the page says
// so, and its table lists the tasks).
const MaxDrawn = 1000

// Layout geometry, in SVG units.
const (
	nodeW, nodeH = 190, 44
	colGap       = 70
	rowGap       = 14
	pad          = 10
)

// Node is one box of the drawn graph: a task, or a group of sibling tasks.
type Node struct {
	ID     string
	X, Y   int
	W, H   int
	Label  string // the task name (with ×N for a group)
	Status string // the status (a group's: the one that matters most)
	Detail string // a group's counts by status; a task's "cached" mark
	Tasks  []int  // positions in the record's tasks (one for a task node)
	Group  bool
}

// Edge joins two nodes, from the required to the requiring one.
type Edge struct {
	From, To string
	Path     string // SVG path data
}

// Graph is a laid-out task graph.
type Graph struct {
	Nodes         []Node
	Edges         []Edge
	Width, Height int
	// Boxes, when set, is how many boxes the graph has: too many to draw (nothing else is set).
	Boxes int
}

// shape is a run's graph laid out: where each task and group sits and the edges between them,
// without statuses. A run's tasks and their requirements never change once it has them, so a
// run is laid out once (see shapeCache) and each view only counts statuses (graph).
type shape struct {
	nodes         []Node // Status and Detail unset
	edges         []Edge
	width, height int
	grouped       []bool // task i is drawn inside a group node
	tasks         int
	boxes         int // the boxes of a graph too large to draw (over MaxDrawn); 0 when drawn
}

// layoutShape lays out a run's tasks: one linear pass, and no allocation per task but a task
// node's.
func layoutShape(tasks []runs.TaskShape) *shape {
	n := len(tasks)
	s := &shape{grouped: make([]bool, n), tasks: n}
	if n == 0 {
		return s
	}
	// depth: 0 for a task that requires nothing here, else 1 + the deepest requirement
	// (memoised: each task is visited once; -2 marks one on the current path, so a malformed
	// cycle cannot loop).
	depth := make([]int, n)
	for i := range depth {
		depth[i] = -1
	}
	var visit func(i int) int
	visit = func(i int) int {
		switch depth[i] {
		case -2:
			return 0
		case -1:
		default:
			return depth[i]
		}
		depth[i] = -2
		d := 0
		for _, r := range tasks[i].Requires {
			if r >= 0 && r < n {
				d = max(d, visit(r)+1)
			}
		}
		depth[i] = d
		return d
	}
	for i := range tasks {
		visit(i)
	}
	dependents := make([][]int, n)
	maxDepth := 0
	for i, t := range tasks {
		maxDepth = max(maxDepth, depth[i])
		for _, r := range t.Requires {
			if r >= 0 && r < n {
				dependents[r] = append(dependents[r], i)
			}
		}
	}
	// Tasks by depth (a counting sort): a column is grouped once every column right of it is,
	// as its tasks are told apart by the nodes their dependents are drawn in.
	start := make([]int, maxDepth+2)
	for _, d := range depth {
		start[d+1]++
	}
	for d := 1; d < len(start); d++ {
		start[d] += start[d-1]
	}
	byDepth := make([]int32, n)
	next := slices.Clone(start)
	for i, d := range depth {
		byDepth[next[d]] = int32(i)
		next[d]++
	}
	// Group siblings: same depth, same task, feeding the same nodes (a leaf feeding one of
	// 1,000 mid tasks, themselves drawn as one group, is grouped with the other leaves). The
	// task and the nodes fed are numbered as they are first seen (a lookup by a reused buffer
	// allocates nothing).
	type kind struct{ task, deps int }
	taskIDs := map[[2]string]int{}
	depsIDs := map[string]int{}
	var buf []byte
	var fed []int32
	groups := map[kind][]int{}
	var order []kind
	nodeOf := make([]int32, n) // the node each task is drawn in
	for i := range nodeOf {
		nodeOf[i] = -1
	}
	var nodes []Node
	for d := maxDepth; d >= 0; d-- {
		clear(groups)
		order = order[:0]
		for _, i := range byDepth[start[d]:start[d+1]] {
			t := tasks[i]
			tid, ok := taskIDs[[2]string{t.Chain, t.Task}]
			if !ok {
				tid = len(taskIDs)
				taskIDs[[2]string{t.Chain, t.Task}] = tid
			}
			fed = fed[:0]
			for _, dep := range dependents[i] {
				id := nodeOf[dep]
				if id < 0 { // not drawn yet: only in a malformed graph (a cycle); itself
					id = -1 - int32(dep)
				}
				fed = append(fed, id)
			}
			slices.Sort(fed)
			buf = buf[:0]
			for j, id := range fed {
				if j == 0 || id != fed[j-1] {
					buf = strconv.AppendInt(buf, int64(id), 10)
					buf = append(buf, ',')
				}
			}
			did, ok := depsIDs[string(buf)]
			if !ok {
				did = len(depsIDs)
				depsIDs[string(buf)] = did
			}
			k := kind{tid, did}
			g, ok := groups[k]
			if !ok {
				order = append(order, k)
			}
			groups[k] = append(g, int(i))
		}
		for _, k := range order {
			members := groups[k]
			if len(members) >= GroupMin {
				for _, m := range members {
					nodeOf[m] = int32(len(nodes))
				}
				nodes = append(nodes, Node{ID: "g" + strconv.Itoa(members[0]), Label: tasks[members[0]].Task + " ×" + strconv.Itoa(len(members)),
					Tasks: members, Group: true})
				continue
			}
			for _, m := range members {
				nodeOf[m] = int32(len(nodes))
				nodes = append(nodes, Node{ID: "t" + strconv.Itoa(m), Label: tasks[m].Task, Tasks: []int{m}})
			}
		}
	}
	if len(nodes) > MaxDrawn {
		// Not drawn: a page of thousands of boxes, sent again every second while the run
		// lives, helps nobody. Its tasks are listed in the table, a page at a time.
		s.boxes = len(nodes)
		return s
	}
	for _, nd := range nodes {
		if nd.Group {
			for _, m := range nd.Tasks {
				s.grouped[m] = true
			}
		}
	}
	// Columns left to right by depth: what is required first, the root last.
	rows := make([]int, maxDepth+1)
	for i := range nodes {
		col := depth[nodes[i].Tasks[0]]
		nodes[i].X = pad + col*(nodeW+colGap)
		nodes[i].Y = pad + rows[col]*(nodeH+rowGap)
		nodes[i].W, nodes[i].H = nodeW, nodeH
		rows[col]++
	}
	s.nodes = nodes
	for _, r := range rows {
		s.height = max(s.height, pad*2+r*(nodeH+rowGap)-rowGap)
	}
	s.width = pad*2 + (maxDepth+1)*(nodeW+colGap) - colGap
	// Edges between nodes, once each (a group's many edges to one task are one line).
	seen := map[[2]int32]bool{}
	for i, t := range tasks {
		for _, r := range t.Requires {
			if r < 0 || r >= n {
				continue
			}
			e := [2]int32{nodeOf[r], nodeOf[i]}
			if seen[e] || e[0] == e[1] {
				continue
			}
			seen[e] = true
			a, b := &nodes[e[0]], &nodes[e[1]]
			x1, y1 := a.X+a.W, a.Y+a.H/2
			x2, y2 := b.X, b.Y+b.H/2
			mid := (x1 + x2) / 2
			s.edges = append(s.edges, Edge{From: a.ID, To: b.ID,
				Path: fmt.Sprintf("M%d,%d C%d,%d %d,%d %d,%d", x1, y1, mid, y1, mid, y2, x2, y2)})
		}
	}
	sort.Slice(s.edges, func(i, j int) bool { return s.edges[i].From+s.edges[i].To < s.edges[j].From+s.edges[j].To })
	return s
}

// graph is the shape with the statuses of briefs (index for index with the tasks it was laid
// out from): the nodes are copied, the rest is shared.
func (s *shape) graph(briefs []runs.TaskBrief) Graph {
	g := Graph{Nodes: make([]Node, len(s.nodes)), Edges: s.edges, Width: s.width, Height: s.height, Boxes: s.boxes}
	if len(s.nodes) == 0 {
		g.Nodes = nil
	}
	for i, n := range s.nodes {
		switch {
		case n.Group:
			n.Status, n.Detail = groupStatus(briefs, n.Tasks)
		case n.Tasks[0] < len(briefs):
			b := briefs[n.Tasks[0]]
			n.Status = string(b.Status())
			if b.Cached() {
				n.Detail = "cached"
			}
		}
		g.Nodes[i] = n
	}
	return g
}

// statusOrder ranks statuses by how much they matter in a group's summary.
var statusOrder = []runs.Status{runs.Failed, runs.UpstreamFailed, runs.Running, runs.Cancelled, runs.Pending, runs.Done}

// groupStatus is a group's status (the one that matters most among its members) and its counts,
// "98 DONE · 2 RUNNING". It counts by brief: a group may have 50,000 members and a page of a
// live run counts them every second.
func groupStatus(briefs []runs.TaskBrief, members []int) (string, string) {
	var count [256]int
	for _, m := range members {
		if m < len(briefs) {
			count[runs.BriefOf(briefs[m].Status(), false)]++
		}
	}
	var parts []string
	status := ""
	for _, s := range statusOrder {
		c := count[runs.BriefOf(s, false)]
		if c == 0 {
			continue
		}
		if status == "" {
			status = string(s)
		}
		parts = append(parts, fmt.Sprintf("%d %s", c, s))
	}
	// A group all done but one running reads RUNNING; all done reads DONE.
	return status, strings.Join(parts, " · ")
}
