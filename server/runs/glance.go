package runs

import (
	"context"
	"errors"
)

// A glance is how a page that draws a run's every task, and shows only a few of them in full,
// reads the run: the web UI's run page, polled every second while the run lives. Copying the
// record for it (Snapshot) cost a live 50,000-task run 15 MB and some 400 ms of CPU per view:
// sixteen open pages took a server from 110 MB to 600 MB and stalled the run they watched. A
// glance copies the record's header and, of each task, what changes as the run goes (a
// TaskBrief: one byte); the tasks a page shows in full are copied on demand (Tasks), and the
// graph's shape (TaskShape, which never changes once the run has its tasks) is read once per
// run by whoever lays it out.

// TaskBrief is what changes of a task as its run goes, as much of it as a drawing of the whole
// graph needs: its status and whether its out was there already, in a byte (sixteen pages of a
// 50,000-task run copy 800 KB of them a second, where a Status string each was 19 MB).
type TaskBrief uint8

// briefCached marks the brief of a task whose out was there already.
const briefCached TaskBrief = 0x80

// briefStatuses are the statuses a brief tells, by code (0: one this version does not know).
var briefStatuses = [...]Status{"", Pending, Running, Done, Failed, Cancelled, UpstreamFailed}

// BriefOf is the brief of a task of the given status, cached or not.
func BriefOf(st Status, cached bool) TaskBrief {
	var b TaskBrief
	switch st { // the common ones without a search
	case Done:
		b = 3
	case Pending:
		b = 1
	default:
		for i, s := range briefStatuses[1:] {
			if s == st {
				b = TaskBrief(i + 1)
			}
		}
	}
	if cached {
		b |= briefCached
	}
	return b
}

// Status is the task's status ("" for one this version does not know).
func (b TaskBrief) Status() Status {
	if i := int(b &^ briefCached); i < len(briefStatuses) {
		return briefStatuses[i]
	}
	return ""
}

// Cached reports whether the task's out was there already: it was not run again.
func (b TaskBrief) Cached() bool { return b&briefCached != 0 }

// TaskShape is where a task sits in its run's graph: set when the run gets its tasks and never
// changed after.
type TaskShape struct {
	Chain, Task string
	Requires    []int // shared with the run's record: read only
}

// Glance is a read of one run for a page (see above).
type Glance struct {
	Header   Record // the record without its tasks (Tasks is nil)
	Briefs   []TaskBrief
	progress *Progress
	live     *Run    // the run, while this server executes it
	stored   *Record // else its stored record, shared with the record cache: never modified
}

// Glance reads key's run for a page: from memory while this server executes it, else from its
// stored record (as Lookup does, a run whose server died reads as interrupted).
func (m *Manager) Glance(ctx context.Context, key string) (Glance, error) {
	if r, ok := m.Active(key); ok {
		return r.glance(), nil
	}
	rec, _, err := m.lookupStored(ctx, key)
	if err != nil {
		return Glance{}, err
	}
	return glanceOf(&rec), nil
}

// Header reads key's run record without its tasks: what a list of runs shows of each (a
// schedule's last run), without copying a big run's every task.
func (m *Manager) Header(ctx context.Context, key string) (Record, error) {
	if r, ok := m.Active(key); ok {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.rec.Header(), nil
	}
	rec, _, err := m.lookupStored(ctx, key)
	if err != nil {
		return Record{}, err
	}
	return rec.Header(), nil
}

func (r *Run) glance() Glance {
	r.mu.Lock()
	g := Glance{Header: r.rec.Header(), Briefs: briefsOf(r.rec.Tasks), progress: copyProgress(r.rec.Progress()), live: r}
	mt := r.meter
	r.mu.Unlock()
	if mt != nil {
		m := mt.withoutSamples()
		g.Header.Metrics = &m
	}
	return g
}

func glanceOf(rec *Record) Glance {
	return Glance{Header: rec.Header(), Briefs: briefsOf(rec.Tasks), progress: copyProgress(rec.Progress()), stored: rec}
}

func briefsOf(tasks []TaskState) []TaskBrief {
	b := make([]TaskBrief, len(tasks))
	for i := range tasks {
		b[i] = BriefOf(tasks[i].Status, tasks[i].Cached)
	}
	return b
}

func copyProgress(p *Progress) *Progress {
	if p == nil {
		return nil
	}
	c := *p
	return &c
}

// Progress is what the run last reported of itself (Record.Progress) at the glance.
func (g *Glance) Progress() *Progress { return g.progress }

// Shapes are the run's tasks' places in its graph, index for index with Briefs. ok is false
// when the run's tasks are no longer those of the glance: a run this server follows takes the
// record of the server executing it at each poll, and its own again (other tasks, another run
// ID) when that server dies.
func (g *Glance) Shapes() (shapes []TaskShape, ok bool) {
	if g.live != nil {
		g.live.mu.Lock()
		defer g.live.mu.Unlock()
		if !g.same(&g.live.rec) {
			return nil, false
		}
		return shapesOf(g.live.rec.Tasks), true
	}
	if g.stored != nil {
		return shapesOf(g.stored.Tasks), true
	}
	return nil, len(g.Briefs) == 0
}

// same reports whether rec is still the run the glance read.
func (g *Glance) same(rec *Record) bool {
	return rec.RunID == g.Header.RunID && len(rec.Tasks) == len(g.Briefs)
}

func shapesOf(tasks []TaskState) []TaskShape {
	s := make([]TaskShape, len(tasks))
	for i := range s {
		s[i] = TaskShape{Chain: tasks[i].Chain, Task: tasks[i].Task, Requires: tasks[i].Requires}
	}
	return s
}

// Tasks copies the tasks at the given indexes as they are now (a live run's may have moved on
// since the glance): out[i] is the task at idx[i]; an index out of range gives a zero task. ok
// is false when the run's tasks are no longer those of the glance (see Shapes).
func (g *Glance) Tasks(idx []int) (out []TaskState, ok bool) {
	var tasks []TaskState
	switch {
	case g.live != nil:
		g.live.mu.Lock()
		defer g.live.mu.Unlock()
		if !g.same(&g.live.rec) {
			return nil, false
		}
		tasks = g.live.rec.Tasks
	case g.stored != nil:
		tasks = g.stored.Tasks
	}
	out = make([]TaskState, len(idx))
	for i, at := range idx {
		if at >= 0 && at < len(tasks) {
			out[i] = cloneTask(tasks[at])
		}
	}
	return out, true
}

// GlanceOf reads a stored record as Manager.Glance does (rec must not change after).
func GlanceOf(rec *Record) Glance { return glanceOf(rec) }

// ErrRunChanged means a run's tasks changed between a glance and a read that relied on them
// (see Shapes): glance again.
var ErrRunChanged = errors.New("the run's tasks changed since it was read")
