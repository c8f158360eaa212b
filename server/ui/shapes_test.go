package ui

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"nectar/server/runs"
)

// glanceOfFanIn is a stored run of a join requiring n leaves, as the runs package reads it.
func glanceOfFanIn(t *testing.T, runID string, n int) runs.Glance {
	t.Helper()
	rec := runs.Record{RunID: runID, Key: "chains/t/c/Join/" + runID, Status: runs.Done}
	rec.Tasks = append(rec.Tasks, runs.TaskState{Chain: "c", Task: "Join", Status: runs.Done})
	for i := 1; i <= n; i++ {
		rec.Tasks = append(rec.Tasks, runs.TaskState{Chain: "c", Task: "Leaf", Status: runs.Done})
		rec.Tasks[0].Requires = append(rec.Tasks[0].Requires, i)
	}
	return runs.GlanceOf(&rec)
}

// A run is laid out once however many pages view it, even when they all arrive at once; the
// cache keeps the runs viewed last within its budget of tasks, and a run bigger than the
// whole budget is laid out for its view and not kept.
func TestARunIsLaidOutOnceForAllItsViews(t *testing.T) {
	c := newShapeCache(1000)
	g := glanceOfFanIn(t, "a", 500)
	shapes := make([]*shape, 16)
	var wg sync.WaitGroup
	for i := range shapes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := c.get(context.Background(), &g)
			if err != nil {
				t.Error(err)
			}
			shapes[i] = s
		}()
	}
	wg.Wait()
	for i, s := range shapes {
		if s != shapes[0] {
			t.Fatalf("view %d got a shape of its own: the run was laid out more than once", i)
		}
	}
	if gr := shapes[0].graph(g.Briefs); len(gr.Nodes) != 2 || gr.Nodes[1].Label != "Leaf ×500" || gr.Nodes[1].Detail != "500 DONE" {
		t.Errorf("fan-in of 500 = %d nodes, want its join and a group of 500 DONE", len(gr.Nodes))
	}

	// Another run of 400 tasks fits beside it; a third evicts the one used least recently.
	b := glanceOfFanIn(t, "b", 400)
	sb, _ := c.get(context.Background(), &b)
	if again, _ := c.get(context.Background(), &g); again != shapes[0] {
		t.Error("run a was laid out again while it fitted")
	}
	d := glanceOfFanIn(t, "d", 300)
	c.get(context.Background(), &d)
	if again, _ := c.get(context.Background(), &b); again == sb {
		t.Error("run b, used least recently, was kept over the budget")
	}
	if c.used > c.budget {
		t.Errorf("the cache holds %d tasks, over its budget of %d", c.used, c.budget)
	}

	// Too big for the budget: laid out each time, kept never.
	big := glanceOfFanIn(t, "big", 2000)
	s1, _ := c.get(context.Background(), &big)
	s2, _ := c.get(context.Background(), &big)
	if s1 == s2 || len(s1.grouped) != 2001 {
		t.Errorf("a run over the budget: same shape twice %v, %d tasks laid out", s1 == s2, len(s1.grouped))
	}
	if _, ok := c.byRun[fmt.Sprintf("%s %s %d", big.Header.Key, "big", 2001)]; ok {
		t.Error("a run over the budget was kept")
	}
}

// A glance whose run took other tasks since (a followed run whose server died) is not laid out
// and leaves nothing in the cache: its page glances again.
func TestARunThatChangedIsNotLaidOut(t *testing.T) {
	c := newShapeCache(1000)
	g := runs.Glance{Header: runs.Record{RunID: "x", Key: "k"}, Briefs: make([]runs.TaskBrief, 3)} // no record behind it
	if _, err := c.get(context.Background(), &g); !errors.Is(err, runs.ErrRunChanged) {
		t.Fatalf("get = %v, want ErrRunChanged", err)
	}
	if len(c.byRun) != 0 || c.used != 0 || c.lru.Len() != 0 {
		t.Errorf("the cache kept %d entries (%d tasks) of a run it could not lay out", len(c.byRun), c.used)
	}
}
