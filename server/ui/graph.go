package ui

import (
	"fmt"
	"sort"
	"strings"

	"nectar/server/runs"
)

// The task graph is laid out here, on the server, and drawn as SVG by the template: no layout
// library to ship, nothing to run in the browser, and a graph of thousands of tasks costs one
// linear pass. Tasks are placed in columns left to right by depth (the tasks nothing is
// required from, at the left; the task that was POSTed, at the right). Siblings of one kind
// (the same task, in the same column, feeding the same tasks) are drawn as one group node with
// their counts by status once there are GroupMin of them: a fan-in of 100 leaves is one box.

// GroupMin is how many siblings of one kind make a group node.
const GroupMin = 10

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
}

// Layout places the tasks of a record.
func Layout(tasks []runs.TaskState) Graph {
	n := len(tasks)
	if n == 0 {
		return Graph{}
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
	for i, t := range tasks {
		for _, r := range t.Requires {
			if r >= 0 && r < n {
				dependents[r] = append(dependents[r], i)
			}
		}
	}
	// Group siblings: same depth, same task, same dependents.
	type kind struct {
		depth int
		task  string
		deps  string
	}
	groups := map[kind][]int{}
	var order []kind
	for i, t := range tasks {
		k := kind{depth[i], t.Chain + "/" + t.Task, fmt.Sprint(dependents[i])}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], i)
	}
	nodeOf := make([]string, n)
	var nodes []Node
	for _, k := range order {
		members := groups[k]
		if len(members) >= GroupMin {
			id := fmt.Sprintf("g%d", members[0])
			for _, m := range members {
				nodeOf[m] = id
			}
			status, detail := groupStatus(tasks, members)
			nodes = append(nodes, Node{ID: id, Label: fmt.Sprintf("%s ×%d", tasks[members[0]].Task, len(members)),
				Status: status, Detail: detail, Tasks: members, Group: true})
			continue
		}
		for _, m := range members {
			id := fmt.Sprintf("t%d", m)
			nodeOf[m] = id
			detail := ""
			if tasks[m].Cached {
				detail = "cached"
			}
			nodes = append(nodes, Node{ID: id, Label: tasks[m].Task, Status: string(tasks[m].Status), Detail: detail, Tasks: []int{m}})
		}
	}
	// Columns left to right by depth: what is required first, the root last.
	maxDepth := 0
	for _, d := range depth {
		maxDepth = max(maxDepth, d)
	}
	rows := make([]int, maxDepth+1)
	for i := range nodes {
		col := depth[nodes[i].Tasks[0]]
		nodes[i].X = pad + col*(nodeW+colGap)
		nodes[i].Y = pad + rows[col]*(nodeH+rowGap)
		nodes[i].W, nodes[i].H = nodeW, nodeH
		rows[col]++
	}
	g := Graph{Nodes: nodes}
	for _, r := range rows {
		g.Height = max(g.Height, pad*2+r*(nodeH+rowGap)-rowGap)
	}
	g.Width = pad*2 + (maxDepth+1)*(nodeW+colGap) - colGap
	// Edges between nodes, once each (a group's many edges to one task are one line).
	pos := map[string]*Node{}
	for i := range g.Nodes {
		pos[g.Nodes[i].ID] = &g.Nodes[i]
	}
	seen := map[[2]string]bool{}
	for i, t := range tasks {
		for _, r := range t.Requires {
			if r < 0 || r >= n {
				continue
			}
			e := [2]string{nodeOf[r], nodeOf[i]}
			if seen[e] || e[0] == e[1] {
				continue
			}
			seen[e] = true
			a, b := pos[e[0]], pos[e[1]]
			x1, y1 := a.X+a.W, a.Y+a.H/2
			x2, y2 := b.X, b.Y+b.H/2
			mid := (x1 + x2) / 2
			g.Edges = append(g.Edges, Edge{From: e[0], To: e[1],
				Path: fmt.Sprintf("M%d,%d C%d,%d %d,%d %d,%d", x1, y1, mid, y1, mid, y2, x2, y2)})
		}
	}
	sort.Slice(g.Edges, func(i, j int) bool { return g.Edges[i].From+g.Edges[i].To < g.Edges[j].From+g.Edges[j].To })
	return g
}

// statusOrder ranks statuses by how much they matter in a group's summary.
var statusOrder = []runs.Status{runs.Failed, runs.UpstreamFailed, runs.Running, runs.Cancelled, runs.Pending, runs.Done}

// groupStatus is a group's status (the one that matters most among its members) and its counts,
// "98 DONE · 2 RUNNING".
func groupStatus(tasks []runs.TaskState, members []int) (string, string) {
	count := map[runs.Status]int{}
	for _, m := range members {
		count[tasks[m].Status]++
	}
	var parts []string
	status := ""
	for _, s := range statusOrder {
		if count[s] == 0 {
			continue
		}
		if status == "" {
			status = string(s)
		}
		parts = append(parts, fmt.Sprintf("%d %s", count[s], s))
	}
	// A group all done but one running reads RUNNING; all done reads DONE.
	return status, strings.Join(parts, " · ")
}
