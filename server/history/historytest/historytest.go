// Package historytest is the one test suite every history driver passes (River's
// riverdrivertest): each test gets a fresh, migrated database from open.
package historytest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"nectar/server/history"
)

// Opener makes a fresh, empty database for one test (closed by the caller's cleanup).
type Opener func(t *testing.T) history.Driver

// Run runs the suite against the driver open makes.
func Run(t *testing.T, open Opener) {
	fresh := func(t *testing.T) history.Driver {
		t.Helper()
		d := open(t)
		found, latest, err := d.Migrate(ctx(t))
		if err != nil || found != 0 || latest < 1 {
			t.Fatalf("Migrate on a new database = %d, %d, %v; want 0, >= 1, nil", found, latest, err)
		}
		return d
	}
	t.Run("MigrateTwice", func(t *testing.T) {
		d := fresh(t)
		found, latest, err := d.Migrate(ctx(t))
		if err != nil || found != latest {
			t.Errorf("second Migrate = %d, %d, %v; want found == latest", found, latest, err)
		}
	})
	t.Run("UpsertGet", func(t *testing.T) { testUpsertGet(t, fresh(t)) })
	t.Run("OlderStateIgnored", func(t *testing.T) { testOlderStateIgnored(t, fresh(t)) })
	t.Run("Hits", func(t *testing.T) { testHits(t, fresh(t)) })
	t.Run("Filters", func(t *testing.T) { testFilters(t, fresh(t)) })
	t.Run("Pagination", func(t *testing.T) { testPagination(t, fresh(t)) })
	t.Run("Reset", func(t *testing.T) { testReset(t, fresh(t)) })
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

var base = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// entry makes a run submitted i minutes after base.
func entry(i int, mods ...func(*history.Entry)) history.Entry {
	sub := base.Add(time.Duration(i) * time.Minute)
	start, end := sub.Add(time.Second), sub.Add(3*time.Second)
	e := history.Entry{
		RunID: fmt.Sprintf("run%04d", i), Key: fmt.Sprintf("chains/t/c_chain/HelloTask/%032x", i),
		Type: "t", Chain: "c_chain", Task: "HelloTask", Params: fmt.Sprintf(`{"name":"user%d"}`, i),
		Status: history.StatusDone, Trigger: history.TriggerAPI, SubmittedAt: sub, StartedAt: &start, FinishedAt: &end,
		DurationMS: 2000, CostUSD: 0.000012, Tasks: history.TaskCounts{Total: 2, Done: 2, Cached: 1},
		UpdatedAt: end,
	}
	for _, m := range mods {
		m(&e)
	}
	return e
}

func testUpsertGet(t *testing.T, d history.Driver) {
	e := entry(1, func(e *history.Entry) {
		e.Error, e.Progress, e.StatusLine = "it failed: ünïcode", 0.5, "reading 2001.csv"
		e.Tasks = history.TaskCounts{Total: 8, Pending: 1, Running: 1, Done: 1, Failed: 1, Cancelled: 1, UpstreamFailed: 2, Cached: 1}
	})
	pending := entry(2, func(e *history.Entry) {
		e.Status, e.StartedAt, e.FinishedAt, e.DurationMS = history.StatusPending, nil, nil, 0
	})
	if err := d.Upsert(ctx(t), []history.Entry{e, pending}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []history.Entry{e, pending} {
		got, err := d.Get(ctx(t), want.RunID)
		if err != nil {
			t.Fatalf("Get(%s): %v", want.RunID, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Get(%s) mismatch (-want +got):\n%s", want.RunID, diff)
		}
	}
	if _, err := d.Get(ctx(t), "nope"); !errors.Is(err, history.ErrNotFound) {
		t.Errorf("Get(nope) = %v, want ErrNotFound", err)
	}
}

func testOlderStateIgnored(t *testing.T, d history.Driver) {
	running := entry(1, func(e *history.Entry) {
		e.Status, e.FinishedAt, e.DurationMS, e.UpdatedAt = history.StatusRunning, nil, 0, e.SubmittedAt.Add(time.Second)
	})
	done := entry(1)
	if err := d.Upsert(ctx(t), []history.Entry{done}); err != nil {
		t.Fatal(err)
	}
	if err := d.Upsert(ctx(t), []history.Entry{running}); err != nil { // arrives late
		t.Fatal(err)
	}
	got, err := d.Get(ctx(t), done.RunID)
	if err != nil || got.Status != history.StatusDone {
		t.Errorf("after a late older write, Get = %s, %v; want DONE kept", got.Status, err)
	}
}

func testHits(t *testing.T, d history.Driver) {
	old := entry(1)
	newer := entry(2, func(e *history.Entry) { e.Key = old.Key }) // the same key, run again
	other := entry(3)
	if err := d.Upsert(ctx(t), []history.Entry{old, newer, other}); err != nil {
		t.Fatal(err)
	}
	if err := d.AddHits(ctx(t), []history.Hit{{Key: old.Key, N: 5}, {Key: old.Key, N: 2}, {Key: "chains/none", N: 9}}); err != nil {
		t.Fatal(err)
	}
	// An upsert of a newer state keeps the hits.
	newer.UpdatedAt = newer.UpdatedAt.Add(time.Minute)
	newer.CostUSD = 1
	if err := d.Upsert(ctx(t), []history.Entry{newer}); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]int64{old.RunID: 0, newer.RunID: 7, other.RunID: 0} {
		got, err := d.Get(ctx(t), id)
		if err != nil || got.Hits != want {
			t.Errorf("Get(%s).Hits = %d, %v; want %d (hits go to the latest run of the key)", id, got.Hits, err, want)
		}
	}
}

func testFilters(t *testing.T, d history.Driver) {
	es := []history.Entry{
		entry(1),
		entry(2, func(e *history.Entry) { e.Status, e.Error = history.StatusFailed, "boom" }),
		entry(3, func(e *history.Entry) { e.Task, e.Trigger = "UpperTask", history.TriggerCLI }),
		entry(4, func(e *history.Entry) { e.Chain, e.Task = "d_chain", "JoinTask"; e.Params = `{"leaves":100}` }),
		entry(5, func(e *history.Entry) { e.Type = "etl"; e.Params = `{"day":"2024-01-02","note":"50%_off"}` }),
		entry(6, func(e *history.Entry) { e.Params = `{"name":"ADA"}`; e.Status = history.StatusRunning }),
	}
	if err := d.Upsert(ctx(t), es); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		f    history.Filter
		want []string // run ids, newest first
	}{
		{"all", history.Filter{}, []string{"run0006", "run0005", "run0004", "run0003", "run0002", "run0001"}},
		{"type", history.Filter{Type: "etl"}, []string{"run0005"}},
		{"chain", history.Filter{Chain: "d_chain"}, []string{"run0004"}},
		{"task", history.Filter{Task: "HelloTask"}, []string{"run0006", "run0005", "run0002", "run0001"}},
		{"status", history.Filter{Status: history.StatusFailed}, []string{"run0002"}},
		{"trigger", history.Filter{Trigger: history.TriggerCLI}, []string{"run0003"}},
		{"key", history.Filter{Key: es[0].Key}, []string{"run0001"}},
		{"since inclusive", history.Filter{Since: es[4].SubmittedAt}, []string{"run0006", "run0005"}},
		{"until exclusive", history.Filter{Until: es[1].SubmittedAt}, []string{"run0001"}},
		{"q is case-insensitive", history.Filter{Query: "ada"}, []string{"run0006"}},
		{"q matches values, not names", history.Filter{Query: "name"}, nil},
		{"q takes % and _ literally", history.Filter{Query: "50%_"}, []string{"run0005"}},
		{"q does not treat _ as a wildcard", history.Filter{Query: "user_"}, nil},
		{"q on numbers", history.Filter{Query: "100"}, []string{"run0004"}},
		{"combined", history.Filter{Task: "HelloTask", Status: history.StatusDone}, []string{"run0005", "run0001"}},
	}
	for _, tt := range tests {
		got, err := d.List(ctx(t), history.ListParams{Filter: tt.f, Limit: 100})
		if err != nil {
			t.Fatalf("%s: List: %v", tt.name, err)
		}
		var ids []string
		for _, e := range got {
			ids = append(ids, e.RunID)
		}
		if diff := cmp.Diff(tt.want, ids); diff != "" {
			t.Errorf("%s: List(%+v) mismatch (-want +got):\n%s", tt.name, tt.f, diff)
		}
	}
	counts, err := d.CountByStatus(ctx(t), history.Filter{Task: "HelloTask"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]int64{"DONE": 2, "FAILED": 1, "RUNNING": 1}, counts); diff != "" {
		t.Errorf("CountByStatus(task=HelloTask) mismatch (-want +got):\n%s", diff)
	}
}

func testPagination(t *testing.T, d history.Driver) {
	var es []history.Entry
	for i := 0; i < 23; i++ {
		// Pairs share a submission time: the cursor must order by run id within it.
		es = append(es, entry(i/2, func(e *history.Entry) { e.RunID = fmt.Sprintf("r%03d", i) }))
	}
	if err := d.Upsert(ctx(t), es); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var order []string
	p := history.ListParams{Limit: 5}
	pages := 0
	for {
		page, err := history.ListPage(ctx(t), d, p)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, e := range page.Entries {
			if seen[e.RunID] {
				t.Fatalf("run %s appears on two pages", e.RunID)
			}
			seen[e.RunID] = true
			order = append(order, e.RunID)
		}
		if page.Next == "" {
			break
		}
		if p.Cursor, err = history.DecodeCursor(page.Next); err != nil {
			t.Fatalf("DecodeCursor(%q): %v", page.Next, err)
		}
	}
	if len(seen) != len(es) || pages != 5 {
		t.Errorf("paging by 5 saw %d runs in %d pages, want %d in 5", len(seen), pages, len(es))
	}
	for i := 1; i < len(order); i++ {
		a, b := es[idx(order[i-1])], es[idx(order[i])]
		if a.SubmittedAt.Before(b.SubmittedAt) || (a.SubmittedAt.Equal(b.SubmittedAt) && a.RunID < b.RunID) {
			t.Errorf("pages not newest first: %s before %s", a.RunID, b.RunID)
		}
	}
	if _, err := history.DecodeCursor("not-a-cursor!"); !errors.Is(err, history.ErrBadCursor) {
		t.Errorf("DecodeCursor(garbage) = %v, want ErrBadCursor", err)
	}
}

func idx(runID string) int {
	var i int
	fmt.Sscanf(runID, "r%03d", &i)
	return i
}

func testReset(t *testing.T, d history.Driver) {
	if err := d.Upsert(ctx(t), []history.Entry{entry(1), entry(2)}); err != nil {
		t.Fatal(err)
	}
	if err := d.Reset(ctx(t)); err != nil {
		t.Fatal(err)
	}
	got, err := d.List(ctx(t), history.ListParams{Limit: 10})
	if err != nil || len(got) != 0 {
		t.Errorf("after Reset, List = %d runs, %v; want none", len(got), err)
	}
}
