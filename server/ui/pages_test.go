package ui

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"nectar/server/history"
	"nectar/server/runs"
	"nectar/targets"
)

// pageBackend serves one stored run to runView; the methods it does not define are not used
// by a run page (calling one panics: the embedded interface is nil).
type pageBackend struct {
	Backend
	entry history.Entry
	rec   *runs.Record
}

func (b pageBackend) GetRun(context.Context, string) (history.Entry, error) { return b.entry, nil }
func (b pageBackend) Glance(context.Context, string) (runs.Glance, error) {
	return runs.GlanceOf(b.rec), nil
}
func (pageBackend) BaseURL() string                                   { return "http://127.0.0.1:5000" }
func (pageBackend) LiveLogURL(string, string) string                  { return "/live" }
func (pageBackend) DownloadURL(context.Context, string) string        { return "/dl" }
func (pageBackend) Head(context.Context, string, int) ([]byte, error) { return []byte("out"), nil }
func (pageBackend) Metrics(context.Context, string) *runs.Metrics     { return nil }
func (pageBackend) TokensRequired() bool                              { return false }

// pageUI is a UI serving rec, a run of task Task of chain c, as its only run.
func pageUI(rec *runs.Record, task string) *UI {
	return &UI{b: pageBackend{entry: history.Entry{RunID: rec.RunID, Key: rec.Key, Type: "t", Chain: "c", Task: task}, rec: rec},
		log: slog.Default(), shapes: newShapeCache(shapeCacheTasks)}
}

// viewRun reads run id's page (query: "?task=N" or ""), whole or its live fragment.
func viewRun(t *testing.T, u *UI, id, query string, whole bool) runView {
	t.Helper()
	c := echo.New().NewContext(httptest.NewRequest(http.MethodGet, "/runs/"+id+query, nil), httptest.NewRecorder())
	c.SetParamNames("run_id")
	c.SetParamValues(id)
	v, err := u.runView(c, whole)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// A run page lists, of a group of 500 leaves, its failed members first, then the selected one,
// then the others up to maxTaskRows; the tasks table lists the ungrouped ones and the selected
// one; every row shows the task at its index (what a page copies is picked by index, rows
// first, then each group's members, then the selected task).
func TestARunPageListsTheTasksItNames(t *testing.T) {
	const leaves = 500
	rec := &runs.Record{RunID: "r1", Key: "chains/t/c/Join/0", Status: runs.Failed}
	rec.Tasks = append(rec.Tasks, runs.TaskState{Chain: "c", Task: "Join", Key: "k0", Status: runs.UpstreamFailed})
	for i := 1; i <= leaves; i++ {
		st := runs.TaskState{Chain: "c", Task: "Leaf", Key: fmt.Sprintf("k%d", i), Status: runs.Done}
		if i == 300 || i == 420 {
			st.Status = runs.Failed
		}
		rec.Tasks = append(rec.Tasks, st)
		rec.Tasks[0].Requires = append(rec.Tasks[0].Requires, i)
	}
	// Two stand-alone tasks besides the group, so that the table has rows of its own.
	rec.Tasks = append(rec.Tasks, runs.TaskState{Chain: "c", Task: "Side", Key: fmt.Sprintf("k%d", leaves+1), Status: runs.Done})
	rec.Tasks[0].Requires = append(rec.Tasks[0].Requires, leaves+1)

	u := pageUI(rec, "Join")
	for _, tc := range []struct {
		name  string
		query string
		sel   int
	}{
		{"the first failure is selected", "", 300},
		{"a member past the first page is selected", "?task=480", 480},
		{"the root is selected", "?task=0", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := viewRun(t, u, "r1", tc.query, true)
			if v.Sel == nil || v.Sel.Task.Index != tc.sel || v.Sel.Task.Key != fmt.Sprintf("k%d", tc.sel) {
				t.Fatalf("selected task = %+v, want index %d", v.Sel, tc.sel)
			}
			if len(v.Groups) != 1 {
				t.Fatalf("%d groups, want the 500 leaves as one", len(v.Groups))
			}
			g := v.Groups[0]
			if g.Detail != "2 FAILED · 498 DONE" {
				t.Errorf("group counts %q", g.Detail)
			}
			var listed []int
			for _, m := range g.Members {
				if m.Key != fmt.Sprintf("k%d", m.Index) {
					t.Fatalf("member row %d shows task %s", m.Index, m.Key)
				}
				listed = append(listed, m.Index)
			}
			want := []int{300, 420} // the failed ones first, then the selected one if a member
			if tc.sel > 0 && tc.sel != 300 {
				want = append(want, tc.sel)
			}
			for i, w := range want {
				if i >= len(listed) || listed[i] != w {
					t.Fatalf("group lists %v first, want %v", listed[:min(len(listed), 4)], want)
				}
			}
			if len(g.Members) != maxTaskRows || g.More != leaves-maxTaskRows {
				t.Errorf("group lists %d members, %d more; want %d and %d", len(g.Members), g.More, maxTaskRows, leaves-maxTaskRows)
			}
			rows := map[int]bool{}
			for _, r := range v.TaskRows {
				if r.Key != fmt.Sprintf("k%d", r.Index) {
					t.Fatalf("table row %d shows task %s", r.Index, r.Key)
				}
				rows[r.Index] = true
			}
			if !rows[0] || !rows[leaves+1] || !rows[tc.sel] || len(rows) != 2+btoi(tc.sel != 0) {
				t.Errorf("table rows %v, want the root, the side task and the selected one", rows)
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// All groups share one budget of listed members: a graph of many small groups lists a page of
// them, not every task.
func TestARunPageOfManyGroupsListsAPage(t *testing.T) {
	// Join requires 100 Mids, each a task of its own (so each its own box); each Mid requires 20
	// Leaves: 100 groups, 2,000 members.
	rec := &runs.Record{RunID: "r2", Key: "chains/t/c/Join/1", Status: runs.Done}
	rec.Tasks = append(rec.Tasks, runs.TaskState{Chain: "c", Task: "Join", Key: "k0", Status: runs.Done})
	for i := 0; i < 100; i++ {
		mid := len(rec.Tasks)
		rec.Tasks = append(rec.Tasks, runs.TaskState{Chain: "c", Task: fmt.Sprintf("Mid%d", i), Key: fmt.Sprintf("k%d", mid), Status: runs.Done})
		rec.Tasks[0].Requires = append(rec.Tasks[0].Requires, mid)
		for j := 0; j < 20; j++ {
			leaf := len(rec.Tasks)
			rec.Tasks = append(rec.Tasks, runs.TaskState{Chain: "c", Task: "Leaf", Key: fmt.Sprintf("k%d", leaf), Status: runs.Done})
			rec.Tasks[mid].Requires = append(rec.Tasks[mid].Requires, leaf)
		}
	}
	u := pageUI(rec, "Join")
	v := viewRun(t, u, "r2", "", false)
	listed, more := 0, 0
	for _, g := range v.Groups {
		listed += len(g.Members)
		more += g.More
		for _, m := range g.Members {
			if m.Key != fmt.Sprintf("k%d", m.Index) {
				t.Fatalf("member row %d shows task %s", m.Index, m.Key)
			}
		}
	}
	if len(v.Groups) != 100 || listed != maxGroupRows || listed+more != 2000 {
		t.Errorf("%d groups list %d members, %d more; want 100 groups, %d listed of 2,000", len(v.Groups), listed, more, maxGroupRows)
	}
	if v.Sel != nil {
		t.Error("the live fragment read the selected task's out and log, which it does not show")
	}
}

// The page a login goes on to is one of this site's: browsers drop tabs and newlines from a
// URL and read a backslash as a slash, so none of those may hide a //host.
func TestSafeNextStaysOnThisSite(t *testing.T) {
	for in, want := range map[string]string{
		"/runs/abc?key=x":  "/runs/abc?key=x",
		"/catalog":         "/catalog",
		"//evil.com":       "/",
		"/\\evil.com":      "/",
		"/\t/evil.com":     "/",
		"/\n/evil.com":     "/",
		"/\r/evil.com":     "/",
		"https://evil.com": "/",
		"evil.com":         "/",
		"":                 "/",
		"/%2F%2Fevil.com":  "/%2F%2Fevil.com", // a path on this site
		"/runs/x#frag":     "/runs/x#frag",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

// cancelBackend records what it is asked to cancel.
type cancelBackend struct {
	pageBackend
	cancelled *[]string
}

func (b cancelBackend) Cancel(_ context.Context, key, _ string) error {
	*b.cancelled = append(*b.cancelled, key)
	return nil
}

// A stale page's Cancel does not stop the later run that holds its key now.
func TestCancelStopsOnlyThePagesRun(t *testing.T) {
	rec := &runs.Record{RunID: "new", Key: "chains/t/c/Join/0", Status: runs.Running}
	var cancelled []string
	u, err := New(cancelBackend{pageBackend{rec: rec}, &cancelled}, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		run       string
		code      int
		cancelled int
	}{{"old", http.StatusConflict, 0}, {"new", http.StatusSeeOther, 1}} {
		rr := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/runs/"+tc.run+"/cancel", strings.NewReader("key="+url.QueryEscape(rec.Key)))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		c := echo.New().NewContext(req, rr)
		c.SetParamNames("run_id")
		c.SetParamValues(tc.run)
		if err := u.cancelRun(c); err != nil {
			t.Fatal(err)
		}
		if rr.Code != tc.code || len(cancelled) != tc.cancelled {
			t.Errorf("cancel of run %s: %d, %d cancels sent; want %d, %d", tc.run, rr.Code, len(cancelled), tc.code, tc.cancelled)
		}
	}
}

// headBackend answers every read of a stored object with err.
type headBackend struct {
	pageBackend
	err error
}

func (b headBackend) Head(context.Context, string, int) ([]byte, error) { return nil, b.err }

// A log the store did not answer for is not shown as an empty one.
func TestAnUnreadLogIsNotAnEmptyOne(t *testing.T) {
	rec := &runs.Record{RunID: "r3", Key: "chains/t/c/T/3", Status: runs.Failed,
		Tasks: []runs.TaskState{{Chain: "c", Task: "T", Key: "chains/t/c/T/3", Status: runs.Failed}}}
	for _, tc := range []struct {
		err    error
		unread bool
	}{{targets.ErrNotExist, false}, {fmt.Errorf("reading: %w", targets.ErrUnavailable), true}} {
		u := &UI{b: headBackend{pageBackend{entry: history.Entry{RunID: "r3", Key: rec.Key}, rec: rec}, tc.err}, log: slog.Default(),
			shapes: newShapeCache(shapeCacheTasks)}
		v := viewRun(t, u, "r3", "", true)
		if v.Sel == nil || v.Sel.LogUnread != tc.unread || v.Sel.LogText != "" {
			t.Errorf("log read failing with %v: unread %v, want %v", tc.err, v.Sel != nil && v.Sel.LogUnread, tc.unread)
		}
	}
}

// A graph of more boxes than a page draws is not drawn: the page says how many it has, and
// its table lists every task a page at a time (none is hidden in a group not drawn).
func TestARunPageOfAGraphTooLargeToDrawListsItsTasks(t *testing.T) {
	const n = MaxDrawn + 500 // a chain of distinct tasks: nothing groups
	rec := &runs.Record{RunID: "r3", Key: "chains/t/c/Step0/0", Status: runs.Running}
	for i := 0; i < n; i++ {
		st := runs.TaskState{Chain: "c", Task: fmt.Sprintf("Step%d", i), Key: fmt.Sprintf("k%d", i), Status: runs.Done}
		if i < n-1 {
			st.Requires = []int{i + 1}
		}
		rec.Tasks = append(rec.Tasks, st)
	}
	rec.Tasks[0].Status = runs.Running
	u := pageUI(rec, "Step0")
	v := viewRun(t, u, "r3", "", false)
	if v.Graph.Boxes != n || len(v.Graph.Nodes) != 0 || len(v.Graph.Edges) != 0 || len(v.Groups) != 0 {
		t.Fatalf("graph: %d boxes said, %d nodes and %d edges drawn, %d groups; want %d said and none drawn", v.Graph.Boxes, len(v.Graph.Nodes), len(v.Graph.Edges), len(v.Groups), n)
	}
	if len(v.TaskRows) != maxTaskRows || v.MoreTasks != n-maxTaskRows {
		t.Errorf("the table lists %d tasks, %d more; want %d and %d", len(v.TaskRows), v.MoreTasks, maxTaskRows, n-maxTaskRows)
	}
}

// A run page links the root's params only when its run stored them.
func TestARunPageLinksParamsOnlyWhenStored(t *testing.T) {
	for _, stored := range []bool{true, false} {
		rec := &runs.Record{RunID: "r4", Key: "chains/t/c/Root/0", Status: runs.Failed, ParamsNotStored: !stored,
			Tasks: []runs.TaskState{{Chain: "c", Task: "Root", Key: "chains/t/c/Root/0", Status: runs.Failed, Error: "could not store its params"}}}
		u := pageUI(rec, "Root")
		v := viewRun(t, u, "r4", "", true)
		if v.Sel == nil || (v.Sel.ParamsURL != "") != stored {
			t.Errorf("params stored: %v; the page links them: %+v", stored, v.Sel)
		}
	}
}
