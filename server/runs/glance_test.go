package runs

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// A glance of a live run copies its header and a brief of each task, not the tasks: the web
// UI's page of a 50,000-task run reads it every second per open page. What it does copy (the
// tasks a page lists) is the run's tasks as they are, and the copies are the page's own.
func TestAGlanceOfALiveRunCopiesNoTask(t *testing.T) {
	const n = 50_000
	started := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	rec := Record{RunID: "r1", Key: "chains/t/c/Join/0", Status: Running}
	rec.Tasks = append(rec.Tasks, TaskState{Chain: "c", Task: "Join", Status: Pending, Progress: &Progress{Done: 3, Total: 4, Fraction: 0.75}})
	for i := 1; i < n; i++ {
		st := TaskState{Chain: "c", Task: "Leaf", Key: fmt.Sprintf("k%d", i), Status: Done, Cached: i%7 == 0,
			Attempts: []Attempt{{Number: 1, StartedAt: started}}}
		if i == 4242 {
			st.Status, st.Error = Failed, "boom"
		}
		rec.Tasks[0].Requires = append(rec.Tasks[0].Requires, i)
		rec.Tasks = append(rec.Tasks, st)
	}
	r := &Run{rec: rec}

	g := r.glance()
	if g.Header.Tasks != nil || g.Header.RunID != "r1" || len(g.Briefs) != n {
		t.Fatalf("glance header tasks %d, run %q, %d briefs; want none, r1, %d", len(g.Header.Tasks), g.Header.RunID, len(g.Briefs), n)
	}
	for i, b := range g.Briefs {
		if b.Status() != rec.Tasks[i].Status || b.Cached() != rec.Tasks[i].Cached {
			t.Fatalf("brief %d = %s cached=%v, task is %s cached=%v", i, b.Status(), b.Cached(), rec.Tasks[i].Status, rec.Tasks[i].Cached)
		}
	}
	if p := g.Progress(); p == nil || p.Fraction != 0.75 {
		t.Errorf("glance progress = %+v, want the root's", p)
	}
	// A copy per task would be n allocations or more; a glance makes a handful.
	if allocs := testing.AllocsPerRun(5, func() { r.glance() }); allocs > 10 {
		t.Errorf("a glance of a %d-task run made %.0f allocations, want a handful (no copy per task)", n, allocs)
	}

	shapes, ok := g.Shapes()
	if !ok || len(shapes) != n || shapes[0].Task != "Join" || len(shapes[0].Requires) != n-1 || &shapes[0].Requires[0] != &r.rec.Tasks[0].Requires[0] {
		t.Errorf("shapes: %d, root %q requiring %d, shared with the run: want %d, Join, %d, shared", len(shapes), shapes[0].Task, len(shapes[0].Requires), n, n-1)
	}

	// What a list of runs reads of each (a schedule's last run) is its header alone.
	m := &Manager{active: map[string]*Run{rec.Key: r}}
	if h, err := m.Header(context.Background(), rec.Key); err != nil || h.RunID != "r1" || h.Status != Running || h.Tasks != nil {
		t.Errorf("Header = %q %s, %d tasks, %v; want r1 RUNNING, no tasks", h.RunID, h.Status, len(h.Tasks), err)
	}
	if allocs := testing.AllocsPerRun(5, func() { m.Header(context.Background(), rec.Key) }); allocs > 5 {
		t.Errorf("the header of a %d-task run made %.0f allocations, want a handful", n, allocs)
	}

	// The run moves on after the glance: the tasks copied later are as they are then.
	r.mu.Lock()
	r.rec.Tasks[1].Status = Failed
	r.mu.Unlock()
	got, ok := g.Tasks([]int{4242, 1, -1, n})
	if !ok || got[0].Error != "boom" || got[1].Status != Failed || got[2].Key != "" || got[3].Key != "" {
		t.Errorf("Tasks(4242, 1, -1, n) = %q %s %q %q; want the failed task, task 1 as it is now, two zero tasks", got[0].Error, got[1].Status, got[2].Key, got[3].Key)
	}
	got[1].Attempts[0].Number = 99
	if r.rec.Tasks[1].Attempts[0].Number != 1 {
		t.Error("a task copied by a glance shares its attempts with the run")
	}

	// A stored record reads the same way, and is not copied either.
	sg := glanceOf(&rec)
	st, _ := sg.Tasks([]int{4242})
	ss, _ := sg.Shapes()
	if len(sg.Briefs) != n || sg.Briefs[4242].Status() != Failed || st[0].Error != "boom" || len(ss) != n {
		t.Errorf("a stored record's glance: %d briefs, task 4242 %s", len(sg.Briefs), sg.Briefs[4242].Status())
	}
}

// A run this server follows takes the record of the server executing it at each poll, and its
// own again when that server dies: a glance taken before then no longer describes its tasks,
// and says so rather than lay out or copy tasks of another record.
func TestAGlanceOfARunWhoseTasksChangedSaysSo(t *testing.T) {
	theirs := Record{RunID: "theirs", Key: "k", Status: Running, Tasks: []TaskState{{Task: "Join", Requires: []int{1, 2}}, {Task: "Leaf"}, {Task: "Leaf"}}}
	r := &Run{rec: theirs}
	for _, tc := range []struct {
		name string
		now  Record
	}{
		{"its server died: this one's own record, no tasks yet", Record{RunID: "mine", Key: "k", Status: Pending}},
		{"the same run, tasks not all there", Record{RunID: "theirs", Key: "k", Status: Running, Tasks: theirs.Tasks[:1]}},
	} {
		r.mu.Lock()
		r.rec = theirs
		r.mu.Unlock()
		g := r.glance()
		r.mu.Lock()
		r.rec = tc.now
		r.mu.Unlock()
		if s, ok := g.Shapes(); ok {
			t.Errorf("%s: Shapes = %d shapes, ok; want not ok", tc.name, len(s))
		}
		if ts, ok := g.Tasks([]int{0, 1}); ok {
			t.Errorf("%s: Tasks = %d tasks, ok; want not ok", tc.name, len(ts))
		}
	}
}

// A brief tells every status a task can have, cached or not, and none for one it does not know.
func TestABriefTellsItsTasksStatus(t *testing.T) {
	for _, st := range []Status{Pending, Running, Done, Failed, Cancelled, UpstreamFailed, "SOMETHING_NEW"} {
		for _, cached := range []bool{false, true} {
			want := st
			if st == "SOMETHING_NEW" {
				want = ""
			}
			if b := BriefOf(st, cached); b.Status() != want || b.Cached() != cached {
				t.Errorf("BriefOf(%s, %v) = %s, %v", st, cached, b.Status(), b.Cached())
			}
		}
	}
}

// A record, a status answer and a run page carry a run's usage without its samples, and copy
// none of them to drop them; a worker's lane sends its samples once each.
func TestMetricsAreReadWithTheSamplesAsked(t *testing.T) {
	mt := &meter{started: time.Now()}
	for i := range 1000 {
		mt.m.Samples = append(mt.m.Samples, Sample{PID: i})
	}
	if m := mt.withoutSamples(); m.Samples != nil {
		t.Errorf("withoutSamples has %d samples", len(m.Samples))
	}
	if allocs := testing.AllocsPerRun(5, func() { mt.withoutSamples() }); allocs > 1 { // the tasks' map
		t.Errorf("reading the usage without samples made %.0f allocations (a copy of the samples is one of 24 KB)", allocs)
	}
	if m := mt.snapshot(); len(m.Samples) != 1000 {
		t.Errorf("snapshot has %d samples, want 1000", len(m.Samples))
	}
	m, total := mt.read(990)
	if total != 1000 || len(m.Samples) != 10 || m.Samples[0].PID != 990 {
		t.Errorf("read(990) = %d samples from PID %d, %d in all; want the last 10 of 1000", len(m.Samples), m.Samples[0].PID, total)
	}
	if m, total := mt.read(1000); m.Samples != nil || total != 1000 {
		t.Errorf("read(1000) = %d samples, %d in all; want none of 1000", len(m.Samples), total)
	}
}
