// Package schedules runs the tasks that declare a schedule (chains.Scheduled): it computes
// their intervals, fires the due ones through the server's one way of starting a run, and
// keeps each schedule's state (the latest interval fired, paused or not) in the target store,
// so every server sharing the store fires the same intervals and honours the same pause.
//
// A fire time ends an interval that began at the fire time before it (Airflow's data
// interval); the run is for the interval's start, which goes into the task's time parameter.
// Every interval therefore has its own key: two servers firing one tick make one run (single
// flight across servers joins them), and an interval already done is not run again.
package schedules

import (
	"errors"
	"fmt"
	"time"

	"nectar/chains/cron"
	"nectar/server/catalog"
)

// Plan is one task's schedule, ready to compute fire times.
type Plan struct {
	Task    *catalog.Task
	Expr    *cron.Schedule
	Start   time.Time // the earliest interval start (zero: none declared)
	CatchUp bool
	Param   string // the time.Time parameter that receives the interval start
}

// Path is "<type>/<chain>/<Task>", how the API and the CLI name a schedule.
func (p *Plan) Path() string { return p.Task.Type + "/" + p.Task.Chain + "/" + p.Task.Name }

// Interval is [Start, End): the run fired at End is for it.
type Interval struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// Compile reads a catalog task's declared schedule (the generator has checked it; a catalog
// built by hand is checked here).
func Compile(t *catalog.Task) (*Plan, error) {
	d := t.Schedule
	if d == nil {
		return nil, errors.New("the task declares no schedule")
	}
	loc, err := cron.Location(d.TimeZone)
	if err != nil {
		return nil, err
	}
	start, err := cron.ParseStart(d.Start, loc)
	if err != nil {
		return nil, err
	}
	expr, err := cron.ParseAnchored(d.Cron, loc, start)
	if err != nil {
		return nil, err
	}
	if !t.HasParam(d.Param) {
		return nil, fmt.Errorf("schedule parameter %q is not a parameter of %s", d.Param, t.Name)
	}
	return &Plan{Task: t, Expr: expr, Start: start, CatchUp: d.CatchUp, Param: d.Param}, nil
}

// before is the interval that ends at end (a fire time); ok is false when there is none (the
// fire time is the schedule's first).
func (p *Plan) before(end time.Time) (Interval, bool) {
	start := p.Expr.Prev(end.Add(-time.Nanosecond))
	if start.IsZero() || (!p.Start.IsZero() && start.Before(p.Start)) {
		return Interval{}, false
	}
	return Interval{Start: start, End: end}, true
}

// Due lists the complete intervals (ended by now) that start after last (the start of the
// latest interval fired; zero: none) and not before base (the earliest start allowed), oldest
// first: the latest limit of them. more reports that older ones were left out by the limit.
func (p *Plan) Due(now, last, base time.Time, limit int) (due []Interval, more bool) {
	end := p.Expr.Prev(now)
	for !end.IsZero() {
		iv, ok := p.before(end)
		if !ok || (!last.IsZero() && !iv.Start.After(last)) || iv.Start.Before(base) {
			break
		}
		if len(due) == limit {
			more = true
			break
		}
		due = append(due, iv)
		end = iv.Start
	}
	for i, j := 0, len(due)-1; i < j; i, j = i+1, j-1 {
		due[i], due[j] = due[j], due[i]
	}
	return due, more
}

// NextFires are the next n fire times after now, in the schedule's time zone (none before
// Start: the fire time at Start only begins the first interval).
func (p *Plan) NextFires(now time.Time, n int) []time.Time {
	var out []time.Time
	for t := later(now, p.Start); len(out) < n; {
		if t = p.Expr.Next(t); t.IsZero() {
			break
		}
		out = append(out, t)
	}
	return out
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Range lists the complete intervals (ended by now) whose start is within [from, to], oldest
// first, for a backfill; more than limit of them is an error.
func (p *Plan) Range(from, to, now time.Time, limit int) ([]Interval, error) {
	var out []Interval
	// Intervals start at Start or later: walking from a from long before it would be work for
	// nothing.
	for start := p.Expr.Next(later(from, p.Start).Add(-time.Nanosecond)); !start.IsZero() && !start.After(to); {
		end := p.Expr.Next(start)
		if end.IsZero() || end.After(now) {
			break
		}
		if len(out) == limit {
			return nil, fmt.Errorf("more than %d intervals of %q start between %s and %s: backfill a shorter range at a time",
				limit, p.Expr, from.Format(time.RFC3339), to.Format(time.RFC3339))
		}
		out = append(out, Interval{Start: start, End: end})
		start = end
	}
	return out, nil
}
