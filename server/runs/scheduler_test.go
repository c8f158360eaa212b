package runs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"nectar/chains"
	"nectar/plugins"
	"nectar/targets"
	"nectar/targets/local"
)

// These tests drive the real Manager (direct dispatch, a local store in a temporary folder)
// with the fake plugin of fakeproc_test.go.

// runGuard bounds how long a test waits for anything: a failure guard, never a synchronization.
const runGuard = 5 * time.Second

// taskWatch turns run changes into channels: a channel is closed once a change leaves the
// run's record as its predicate wants.
type taskWatch struct {
	mu    sync.Mutex
	conds []watchCond
}

type watchCond struct {
	pred func(Record) bool
	ch   chan struct{}
}

// whenRecord is closed once pred holds of the run's record (pred runs in OnChange).
func (w *taskWatch) whenRecord(pred func(Record) bool) chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := make(chan struct{})
	w.conds = append(w.conds, watchCond{pred, ch})
	return ch
}

// when is closed once the run's task has status.
func (w *taskWatch) when(task string, status Status) chan struct{} {
	return w.whenRecord(func(rec Record) bool {
		for _, t := range rec.Tasks {
			if t.Task == task && t.Status == status {
				return true
			}
		}
		return false
	})
}

func (w *taskWatch) onChange(r *Run) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.conds) == 0 {
		return
	}
	rec := r.Snapshot()
	keep := w.conds[:0]
	for _, c := range w.conds {
		if c.pred(rec) {
			close(c.ch)
		} else {
			keep = append(keep, c)
		}
	}
	w.conds = keep
}

type testRig struct {
	m     *Manager
	store *local.Store
	f     *fakePlugins
	watch *taskWatch
}

// newRig is a Manager on a fresh local store with f as its plugins. It is shut down when the
// test ends.
func newRig(t *testing.T, f *fakePlugins, parallelism int, edit ...func(*Config)) *testRig {
	t.Helper()
	store, err := local.New(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	w := &taskWatch{}
	cfg := Config{Store: store, Plugins: f, TaskParallelism: parallelism, OnChange: w.onChange}
	for _, e := range edit {
		e(&cfg)
	}
	m, err := NewManager(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), runGuard)
		defer cancel()
		if err := m.Shutdown(ctx); err != nil {
			t.Errorf("shutting the manager down: %v", err)
		}
	})
	return &testRig{m: m, store: store, f: f, watch: w}
}

// firstAttemptEnded is closed once task's first attempt is reported ended; killedAt is then
// the plugin event at which that attempt's process was killed (0: not yet).
func (g *testRig) firstAttemptEnded(task string) (ended chan struct{}, killedAt *int) {
	killedAt = new(int)
	ended = g.watch.whenRecord(func(rec Record) bool {
		for _, ts := range rec.Tasks {
			if ts.Task == task && len(ts.Attempts) > 0 && ts.Attempts[0].FinishedAt != nil {
				if calls := g.f.calls(task); len(calls) > 0 {
					*killedAt = g.f.killedAt(calls[0].proc)
				}
				return true
			}
		}
		return false
	})
	return ended, killedAt
}

// submit starts a run and fails the test if it was refused or joined another.
func (g *testRig) submit(t *testing.T, spec Spec) *Run {
	t.Helper()
	r, joined, err := g.m.Submit(spec)
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	if joined {
		t.Fatalf("Submit joined a run; want a new one")
	}
	return r
}

// await waits for r's end and returns its record as stored.
func (g *testRig) await(t *testing.T, r *Run) Record {
	t.Helper()
	select {
	case <-r.Done():
	case <-time.After(runGuard):
		t.Fatalf("the run did not end within %s; it is %+v", runGuard, r.Snapshot())
	}
	rc, err := g.store.Get(context.Background(), r.Key()+"/"+RecordName)
	if err != nil {
		t.Fatalf("reading the stored run record: %v", err)
	}
	defer rc.Close()
	var rec Record
	if err := json.NewDecoder(rc).Decode(&rec); err != nil {
		t.Fatalf("decoding the stored run record: %v", err)
	}
	if rec.RunID != r.ID() {
		t.Fatalf("the stored record is of run %s; want %s", rec.RunID, r.ID())
	}
	return rec
}

// run submits spec and returns its final record.
func (g *testRig) run(t *testing.T, spec Spec) Record {
	t.Helper()
	return g.await(t, g.submit(t, spec))
}

// object is the stored object key ("" and false when there is none).
func (g *testRig) object(t *testing.T, key string) (string, bool) {
	t.Helper()
	rc, err := g.store.Get(context.Background(), key)
	if err != nil {
		return "", false
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading %s: %v", key, err)
	}
	return string(b), true
}

func (g *testRig) put(t *testing.T, key, content string) {
	t.Helper()
	if err := g.store.Put(context.Background(), key, bytes.NewReader([]byte(content))); err != nil {
		t.Fatal(err)
	}
}

// taskOf is the record's task named name.
func taskOf(t *testing.T, rec Record, name string) TaskState {
	t.Helper()
	for _, ts := range rec.Tasks {
		if ts.Task == name {
			return ts
		}
	}
	t.Fatalf("the record has no task %s: %+v", name, rec.Tasks)
	return TaskState{}
}

func hasTask(rec Record, name string) bool {
	for _, ts := range rec.Tasks {
		if ts.Task == name {
			return true
		}
	}
	return false
}

// Every task runs once, after each task it requires has ended, and reads their outs in the
// order it requires them; the run is DONE with the root's out committed, and each task's log
// holds what it wrote and what its process printed. No more tasks execute at once than
// TaskParallelism.
func TestTasksRunAfterTheirRequirements(t *testing.T) {
	for _, tc := range []struct {
		name        string
		chain       fakeChain
		parallelism int
	}{
		{"chain", fakeChain{
			{name: "Root", requires: []string{"Mid"}},
			{name: "Mid", requires: []string{"Leaf"}},
			{name: "Leaf"},
		}, 2},
		{"diamond", fakeChain{
			{name: "Root", requires: []string{"Left", "Right"}},
			{name: "Left", params: `{"side":"l"}`, requires: []string{"Leaf"}},
			{name: "Right", params: `{"side":"r"}`, requires: []string{"Leaf"}},
			{name: "Leaf"},
		}, 2},
		{"fan-in keeps the order of requires", fakeChain{
			{name: "Join", params: `{"n":3}`, requires: []string{"C", "A", "B"}},
			{name: "A", params: `{"i":1}`},
			{name: "B", params: `{"i":2}`},
			{name: "C", params: `{"i":3}`},
		}, 4},
		{"deep and wide, one at a time", fakeChain{
			{name: "Root", requires: []string{"X", "Y", "Z"}},
			{name: "X", requires: []string{"Y", "W"}},
			{name: "Y", requires: []string{"W"}},
			{name: "Z"},
			{name: "W"},
		}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakePlugins(tc.chain, nil)
			g := newRig(t, f, tc.parallelism)
			rec := g.run(t, tc.chain.spec())
			if rec.Status != Done || rec.Error != "" {
				t.Fatalf("run ended %s (%q); want DONE", rec.Status, rec.Error)
			}
			if len(rec.Tasks) != len(tc.chain) {
				t.Errorf("the record lists %d tasks; want %d", len(rec.Tasks), len(tc.chain))
			}
			slotOf := map[string]int{}
			for i, ts := range rec.Tasks {
				slotOf[ts.Task] = i
			}
			for _, task := range tc.chain {
				calls := f.calls(task.name)
				if len(calls) != 1 {
					t.Fatalf("%s ran %d times; want once", task.name, len(calls))
				}
				for _, req := range task.requires {
					if dep := f.calls(req); len(dep) != 1 || dep[0].end == 0 || dep[0].end > calls[0].start {
						t.Errorf("%s started (event %d) before %s ended (%+v)", task.name, calls[0].start, req, dep)
					}
				}
				ts := taskOf(t, rec, task.name)
				if ts.Status != Done || ts.Cached || ts.Error != "" || len(ts.Attempts) != 1 {
					t.Errorf("%s: status %s cached %v error %q, %d attempts; want DONE, run once", task.name, ts.Status, ts.Cached, ts.Error, len(ts.Attempts))
				}
				if ts.Key != tc.chain.key(task.name) {
					t.Errorf("%s has key %s; want %s", task.name, ts.Key, tc.chain.key(task.name))
				}
				var wantReq []int
				for _, req := range task.requires {
					wantReq = append(wantReq, slotOf[req])
				}
				if !slices.Equal(ts.Requires, wantReq) {
					t.Errorf("%s requires slots %v; want %v", task.name, ts.Requires, wantReq)
				}
				want := tc.chain.wantOut(task.name, nil)
				if out, ok := g.object(t, ts.Key+"/"+OutName); !ok || out != want {
					t.Errorf("out of %s = %q (exists %v); want %q", task.name, out, ok, want)
				}
				log, _ := g.object(t, ts.Key+"/"+LogName)
				if !strings.Contains(log, "log of "+task.name+",") || !strings.Contains(log, "stdout of "+task.name+",") {
					t.Errorf("log of %s = %q; want its own log lines and its printed output", task.name, log)
				}
			}
			if got := f.maxRunning(); got > tc.parallelism {
				t.Errorf("%d tasks executed at once; TaskParallelism is %d", got, tc.parallelism)
			}
			if n := f.processes(); n != 1 {
				t.Errorf("%d plugin processes started; want 1 for a run without failures", n)
			}
		})
	}
}

// Independent tasks execute side by side, TaskParallelism of them at once and no more: the
// leaves hold until the test has seen that many executing together, and no further one
// starting meanwhile.
func TestIndependentTasksOverlapUpToTaskParallelism(t *testing.T) {
	for _, parallelism := range []int{1, 2, 3} {
		t.Run(fmt.Sprintf("parallelism %d", parallelism), func(t *testing.T) {
			chain := fakeChain{{name: "Root", requires: []string{"A", "B", "C", "D"}}, {name: "A"}, {name: "B"}, {name: "C"}, {name: "D"}}
			gate := make(chan struct{})
			beh := map[string]fakeBehaviour{}
			for _, leaf := range chain[0].requires {
				beh[leaf] = fakeBehaviour{gate: gate}
			}
			f := newFakePlugins(chain, beh)
			g := newRig(t, f, parallelism)
			r := g.submit(t, chain.spec())
			select {
			case <-f.peakReached(parallelism):
			case <-time.After(runGuard):
				t.Fatalf("%d independent tasks never executed at once (at most %d); TaskParallelism is %d", parallelism, f.maxRunning(), parallelism)
			}
			// Whatever the timing, a correct lane never starts another; the window only gives a
			// broken one the time to show it.
			select {
			case <-f.peakReached(parallelism + 1):
				t.Errorf("%d tasks executed at once; TaskParallelism is %d", f.maxRunning(), parallelism)
			case <-time.After(50 * time.Millisecond):
			}
			close(gate)
			if rec := g.await(t, r); rec.Status != Done {
				t.Fatalf("run ended %s (%q); want DONE", rec.Status, rec.Error)
			}
			if got := f.maxRunning(); got != parallelism {
				t.Errorf("at most %d tasks executed at once; want %d (TaskParallelism)", got, parallelism)
			}
		})
	}
}

// A task that fails makes every task that requires it, transitively, UPSTREAM_FAILED without
// running them, and the run FAILED with that task's error. A task failure is not fatal to the
// run: a branch that does not need the failed task still executes, even a task of it that
// becomes ready only after the failure.
func TestAFailedTaskFailsItsDependentsOnly(t *testing.T) {
	chain := fakeChain{
		{name: "Root", requires: []string{"Mid", "Side"}},
		{name: "Mid", requires: []string{"Bad"}},
		{name: "Bad"},
		{name: "Side", requires: []string{"Pre"}},
		{name: "Pre"},
	}
	gate := make(chan struct{})
	f := newFakePlugins(chain, map[string]fakeBehaviour{
		"Bad": {script: []string{actFail}, err: "disk full"},
		"Pre": {gate: gate},
	})
	g := newRig(t, f, 2)
	failed := g.watch.when("Bad", Failed)
	go func() {
		select {
		case <-failed:
		case <-time.After(runGuard):
		}
		close(gate) // Pre finishes, and Side becomes ready, only once Bad is recorded FAILED
	}()
	rec := g.run(t, chain.spec())

	if rec.Status != Failed || rec.Error != "Bad failed: disk full" {
		t.Errorf("run ended %s (%q); want FAILED (%q)", rec.Status, rec.Error, "Bad failed: disk full")
	}
	for _, tc := range []struct {
		task   string
		status Status
		err    string
		ran    bool
		out    bool
	}{
		{"Bad", Failed, "disk full", true, false},
		{"Mid", UpstreamFailed, "requires Bad, which did not finish", false, false},
		{"Root", UpstreamFailed, "requires Mid, which did not finish", false, false},
		{"Pre", Done, "", true, true},
		{"Side", Done, "", true, true},
	} {
		ts := taskOf(t, rec, tc.task)
		if ts.Status != tc.status || ts.Error != tc.err {
			t.Errorf("%s: %s (%q); want %s (%q)", tc.task, ts.Status, ts.Error, tc.status, tc.err)
		}
		if ran := len(f.calls(tc.task)) > 0; ran != tc.ran {
			t.Errorf("%s ran: %v; want %v", tc.task, ran, tc.ran)
		}
		if _, ok := g.object(t, chain.key(tc.task)+"/"+OutName); ok != tc.out {
			t.Errorf("%s has an out: %v; want %v", tc.task, ok, tc.out)
		}
	}
	if log, _ := g.object(t, chain.key("Bad")+"/"+LogName); !strings.Contains(log, "task failed: disk full") {
		t.Errorf("the failed task's committed log is %q; want what it wrote", log)
	}
}

// A task with a retry policy runs again after a failed attempt (an error or a crash of its
// process), waiting its backoff in between, doubling up to MaxBackoff; each attempt is in the
// record. A crashed process is not used again.
func TestFailedAttemptsAreRetried(t *testing.T) {
	for _, tc := range []struct {
		name       string
		retry      chains.RetryPolicy
		script     []string
		status     Status
		errs       []string        // each attempt's error ("" none); a prefix is enough
		minGaps    []time.Duration // between one attempt's end and the next one's start
		maxWaits   time.Duration   // bounds those gaps' sum (0: no bound)
		newProcess bool            // the last attempt ran in another process than the first
	}{
		{"fails twice then succeeds", chains.RetryPolicy{Attempts: 3, Backoff: time.Millisecond},
			[]string{actFail, actFail}, Done, []string{"boom", "boom", ""}, nil, 0, false},
		{"fails every attempt", chains.RetryPolicy{Attempts: 3, Backoff: time.Millisecond},
			[]string{actFail, actFail, actFail}, Failed, []string{"boom", "boom", "boom"}, nil, 0, false},
		{"without a policy one failure is final", chains.RetryPolicy{},
			[]string{actFail}, Failed, []string{"boom"}, nil, 0, false},
		{"a crash is a failed attempt", chains.RetryPolicy{Attempts: 2, Backoff: time.Millisecond},
			[]string{actCrash}, Done, []string{"plugin process exited (exit status 2) while the task was running", ""}, nil, 0, true},
		{"backoff doubles up to MaxBackoff", chains.RetryPolicy{Attempts: 4, Backoff: 10 * time.Millisecond, MaxBackoff: 25 * time.Millisecond},
			[]string{actFail, actFail, actFail}, Done, []string{"boom", "boom", "boom", ""},
			[]time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 25 * time.Millisecond}, 0, false},
		{"MaxBackoff caps the backoff", chains.RetryPolicy{Attempts: 7, Backoff: 10 * time.Millisecond, MaxBackoff: 10 * time.Millisecond},
			[]string{actFail, actFail, actFail, actFail, actFail, actFail}, Done, []string{"boom", "boom", "boom", "boom", "boom", "boom", ""},
			[]time.Duration{10 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond},
			400 * time.Millisecond, false}, // uncapped, the waits would add up to 630ms
	} {
		t.Run(tc.name, func(t *testing.T) {
			retry := tc.retry
			chain := fakeChain{{name: "Root", requires: []string{"Flaky"}}, {name: "Flaky", retry: &retry}}
			f := newFakePlugins(chain, map[string]fakeBehaviour{"Flaky": {script: tc.script}})
			g := newRig(t, f, 1)
			rec := g.run(t, chain.spec())

			if rec.Status != tc.status {
				t.Errorf("run ended %s (%q); want %s", rec.Status, rec.Error, tc.status)
			}
			ts := taskOf(t, rec, "Flaky")
			if ts.Status != tc.status {
				t.Errorf("Flaky ended %s (%q); want %s", ts.Status, ts.Error, tc.status)
			}
			if calls := f.calls("Flaky"); len(calls) != len(tc.errs) {
				t.Errorf("Flaky ran %d times; want %d", len(calls), len(tc.errs))
			} else if diff := calls[0].proc != calls[len(calls)-1].proc; diff != tc.newProcess {
				t.Errorf("the last attempt ran in another process: %v; want %v (calls %+v)", diff, tc.newProcess, calls)
			}
			if len(ts.Attempts) != len(tc.errs) {
				t.Fatalf("%d attempts recorded; want %d: %+v", len(ts.Attempts), len(tc.errs), ts.Attempts)
			}
			var waits time.Duration
			for i, a := range ts.Attempts {
				if i > 0 && a.FinishedAt != nil && ts.Attempts[i-1].FinishedAt != nil {
					waits += a.StartedAt.Sub(*ts.Attempts[i-1].FinishedAt)
				}
				if a.Number != i+1 || a.FinishedAt == nil || a.FinishedAt.Before(a.StartedAt) {
					t.Errorf("attempt %d recorded as %+v", i+1, a)
				}
				if !strings.HasPrefix(a.Error, tc.errs[i]) || (tc.errs[i] == "") != (a.Error == "") {
					t.Errorf("attempt %d failed with %q; want %q", i+1, a.Error, tc.errs[i])
				}
				if i > 0 && i <= len(tc.minGaps) && a.FinishedAt != nil && ts.Attempts[i-1].FinishedAt != nil {
					if gap := a.StartedAt.Sub(*ts.Attempts[i-1].FinishedAt); gap < tc.minGaps[i-1] {
						t.Errorf("attempt %d started %s after the one before ended; want at least %s", i+1, gap, tc.minGaps[i-1])
					}
				}
			}
			if tc.maxWaits > 0 && waits > tc.maxWaits {
				t.Errorf("the attempts waited %s in all; want at most %s", waits, tc.maxWaits)
			}
			out, hasOut := g.object(t, chain.key("Root")+"/"+OutName)
			if tc.status == Done {
				if want := chain.wantOut("Root", nil); out != want {
					t.Errorf("root out = %q; want %q", out, want)
				}
				if ts.Error != "" {
					t.Errorf("Flaky ended DONE with error %q", ts.Error)
				}
			} else {
				last := tc.errs[len(tc.errs)-1]
				if hasOut || ts.Error != last || rec.Error != "Flaky failed: "+last {
					t.Errorf("root out exists %v, task error %q, run error %q; want no out, %q, %q", hasOut, ts.Error, rec.Error, last, "Flaky failed: "+last)
				}
				if len(f.calls("Root")) != 0 {
					t.Error("Root ran after its requirement failed")
				}
			}
			if len(tc.errs) > 1 {
				log, _ := g.object(t, chain.key("Flaky")+"/"+LogName)
				if !strings.Contains(log, "--- attempt 1 of ") {
					t.Errorf("Flaky's log %q does not say its first attempt failed", log)
				}
			}
		})
	}
}

// An attempt that outlives the task's Timeout fails as timed out, and its process is killed
// before the attempt is reported: a later attempt gets a new process.
func TestATaskPastItsTimeoutIsKilled(t *testing.T) {
	const timeout = 50 * time.Millisecond
	for _, tc := range []struct {
		name   string
		retry  *chains.RetryPolicy
		status Status // the run's and Slow's
	}{
		{"no retry: the run fails", nil, Failed},
		{"retried in a new process", &chains.RetryPolicy{Attempts: 2, Backoff: time.Millisecond}, Done},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chain := fakeChain{{name: "Root", requires: []string{"Slow"}}, {name: "Slow", timeout: timeout, retry: tc.retry}}
			f := newFakePlugins(chain, map[string]fakeBehaviour{"Slow": {script: []string{actHang}}})
			g := newRig(t, f, 1)
			// When the first attempt is reported ended, is its process dead already?
			reported, killedWhenReported := g.firstAttemptEnded("Slow")
			rec := g.run(t, chain.spec())
			select {
			case <-reported:
			case <-time.After(runGuard):
				t.Fatal("the first attempt was never reported ended")
			}

			if rec.Status != tc.status {
				t.Errorf("run ended %s (%q); want %s", rec.Status, rec.Error, tc.status)
			}
			want := "timed out after " + timeout.String()
			ts := taskOf(t, rec, "Slow")
			if len(ts.Attempts) == 0 || ts.Attempts[0].Error != want {
				t.Fatalf("Slow's attempts: %+v; want the first %q", ts.Attempts, want)
			}
			if a := ts.Attempts[0]; a.FinishedAt.Sub(a.StartedAt) < timeout {
				t.Errorf("the attempt ended after %s, before its timeout", a.FinishedAt.Sub(a.StartedAt))
			}
			calls := f.calls("Slow")
			if *killedWhenReported == 0 || *killedWhenReported < calls[0].end {
				t.Errorf("when the timed-out attempt was reported, its process was killed at event %d (0: not yet); want after the call returned (event %d)", *killedWhenReported, calls[0].end)
			}
			if tc.status == Failed {
				if ts.Status != Failed || ts.Error != want || rec.Error != "Slow failed: "+want || len(calls) != 1 {
					t.Errorf("Slow: %s (%q) after %d calls, run error %q; want FAILED (%q) after 1, %q", ts.Status, ts.Error, len(calls), rec.Error, want, "Slow failed: "+want)
				}
				if st := taskOf(t, rec, "Root").Status; st != UpstreamFailed {
					t.Errorf("Root ended %s; want UPSTREAM_FAILED", st)
				}
				return
			}
			if ts.Status != Done || len(ts.Attempts) != 2 || ts.Attempts[1].Error != "" || len(calls) != 2 {
				t.Fatalf("Slow: %s with attempts %+v, %d calls; want DONE on the second", ts.Status, ts.Attempts, len(calls))
			}
			if calls[1].proc == calls[0].proc || calls[1].start < f.killedAt(calls[0].proc) {
				t.Errorf("the second attempt ran in process %d at event %d; the first's (%d) was killed at %d", calls[1].proc, calls[1].start, calls[0].proc, f.killedAt(calls[0].proc))
			}
			if out, _ := g.object(t, chain.key("Root")+"/"+OutName); out != chain.wantOut("Root", nil) {
				t.Errorf("root out = %q; want %q", out, chain.wantOut("Root", nil))
			}
		})
	}
}

// Submitting a key while its run executes joins that run (single flight): the task graph is
// asked for and each task executed once, and every submitter sees the one run end DONE.
// The process killed for one task's timeout also ran another task: that one did nothing
// wrong, so it runs again in a new process, and its retries are not used up.
func TestATaskKilledForItsNeighboursTimeoutRunsAgain(t *testing.T) {
	const timeout = 50 * time.Millisecond
	chain := fakeChain{{name: "Root", requires: []string{"Slow", "Other"}}, {name: "Slow", timeout: timeout}, {name: "Other"}}
	f := newFakePlugins(chain, map[string]fakeBehaviour{"Slow": {script: []string{actHang}}, "Other": {script: []string{actHang}}})
	g := newRig(t, f, 2)
	rec := g.run(t, chain.spec())

	if ts := taskOf(t, rec, "Slow"); ts.Status != Failed || ts.Error != "timed out after "+timeout.String() {
		t.Errorf("Slow ended %s (%q); want FAILED, timed out", ts.Status, ts.Error)
	}
	other := taskOf(t, rec, "Other")
	calls := f.calls("Other")
	if other.Status != Done || len(other.Attempts) != 2 || len(calls) != 2 {
		t.Fatalf("Other ended %s (%q) with attempts %+v after %d calls; want DONE on a second run", other.Status, other.Error, other.Attempts, len(calls))
	}
	if want := "its process was killed when Slow, which ran beside it, outlived its timeout"; other.Attempts[0].Error != want {
		t.Errorf("Other's first attempt: %q; want %q", other.Attempts[0].Error, want)
	}
	if calls[0].proc != f.calls("Slow")[0].proc || calls[1].proc == calls[0].proc {
		t.Errorf("Other ran in processes %d then %d, Slow in %d; want the first shared with Slow, the second new", calls[0].proc, calls[1].proc, f.calls("Slow")[0].proc)
	}
	if out, _ := g.object(t, chain.key("Other")+"/"+OutName); out != chain.wantOut("Other", nil) {
		t.Errorf("Other's out = %q; want %q", out, chain.wantOut("Other", nil))
	}
}

// Submitted again once it ended, the key starts a new run that finds the out.
func TestConcurrentSubmitsOfAKeyShareOneRun(t *testing.T) {
	chain := fakeChain{{name: "Root", requires: []string{"Leaf"}}, {name: "Leaf"}}
	gate := make(chan struct{})
	f := newFakePlugins(chain, map[string]fakeBehaviour{"Leaf": {gate: gate}})
	g := newRig(t, f, 2)
	first := g.submit(t, chain.spec())
	select {
	case <-f.started("Leaf"):
	case <-time.After(runGuard):
		t.Fatal("Leaf never started")
	}
	spec := chain.spec()
	spec.Trigger = "schedule" // how it was asked does not make it another run
	second, joined, err := g.m.Submit(spec)
	if err != nil || !joined || second != first {
		t.Fatalf("second Submit = %p, joined %v, %v; want the first run (%p), joined", second, joined, err, first)
	}
	close(gate)
	rec := g.await(t, first)
	<-second.Done()
	for i, r := range []*Run{first, second} {
		if st := r.Snapshot().Status; st != Done {
			t.Errorf("submitter %d sees %s; want DONE", i+1, st)
		}
	}
	if rec.Status != Done {
		t.Errorf("stored record: %s (%q); want DONE", rec.Status, rec.Error)
	}
	if l, r, gr, p := len(f.calls("Leaf")), len(f.calls("Root")), f.graphCalls(), f.processes(); l != 1 || r != 1 || gr != 1 || p != 1 {
		t.Errorf("Leaf ran %d times, Root %d, graph asked %d times, %d processes; want 1 each", l, r, gr, p)
	}

	again := g.submit(t, chain.spec())
	rec = g.await(t, again)
	if again.ID() == first.ID() || rec.Status != Done || len(rec.Tasks) != 1 || !rec.Tasks[0].Cached {
		t.Errorf("a later Submit: run %s (first %s), %s, tasks %+v; want a new run, DONE, the root cached", again.ID(), first.ID(), rec.Status, rec.Tasks)
	}
	if len(f.calls("Root")) != 1 {
		t.Errorf("Root ran again although its out exists")
	}
	if len(rec.Previous) != 1 || rec.Previous[0].RunID != first.ID() || rec.Previous[0].Status != Done {
		t.Errorf("the new record's previous runs: %+v; want the first run, DONE", rec.Previous)
	}
}

// A task whose out exists is DONE and cached, not run again, and what it requires is not
// needed (not in the record); the tasks that require it read the stored out. Force reruns the
// root alone.
func TestExistingOutsAreNotRecomputed(t *testing.T) {
	chain := fakeChain{
		{name: "Root", requires: []string{"Mid"}},
		{name: "Mid", requires: []string{"Leaf"}},
		{name: "Leaf"},
	}
	for _, tc := range []existingOutsCase{
		{"none exists", nil, false, []string{"Root", "Mid", "Leaf"}, nil, nil},
		{"a dependency's out exists", map[string]string{"Mid": "stored Mid"}, false, []string{"Root"}, []string{"Mid"}, []string{"Leaf"}},
		{"a leaf's out exists", map[string]string{"Leaf": "stored Leaf"}, false, []string{"Root", "Mid"}, []string{"Leaf"}, nil},
		{"the root's out exists", map[string]string{"Root": "stored Root"}, false, nil, []string{"Root"}, []string{"Mid", "Leaf"}},
		{"force reruns the root only", map[string]string{"Root": "stored Root", "Mid": "stored Mid"}, true, []string{"Root"}, []string{"Mid"}, []string{"Leaf"}},
	} {
		for _, path := range []struct {
			name string
			from int
		}{{"one by one", parallelStatsFrom}, {"side by side", 1}} {
			t.Run(tc.name+", outs looked up "+path.name, func(t *testing.T) {
				defer func(was int) { parallelStatsFrom = was }(parallelStatsFrom)
				parallelStatsFrom = path.from // the local folder asked level by level (scheduler.run)
				testExistingOuts(t, chain, tc)
			})
		}
	}
}

type existingOutsCase struct {
	name     string
	existing map[string]string // outs stored before the run, by task
	force    bool
	ran      []string // the tasks that execute
	cached   []string
	absent   []string // not in the record at all
}

func testExistingOuts(t *testing.T, chain fakeChain, tc existingOutsCase) {
	f := newFakePlugins(chain, nil)
	g := newRig(t, f, 2)
	for task, out := range tc.existing {
		g.put(t, chain.key(task)+"/"+OutName, out)
	}
	spec := chain.spec()
	spec.Force = tc.force
	rec := g.run(t, spec)
	if rec.Status != Done {
		t.Fatalf("run ended %s (%q); want DONE", rec.Status, rec.Error)
	}
	if len(rec.Tasks) != len(tc.ran)+len(tc.cached) {
		t.Errorf("the record lists %d tasks; want %d", len(rec.Tasks), len(tc.ran)+len(tc.cached))
	}
	for _, name := range tc.ran {
		if ts := taskOf(t, rec, name); ts.Status != Done || ts.Cached || len(f.calls(name)) != 1 {
			t.Errorf("%s: %s cached %v, ran %d times; want DONE, run once", name, ts.Status, ts.Cached, len(f.calls(name)))
		}
	}
	for _, name := range tc.cached {
		if ts := taskOf(t, rec, name); ts.Status != Done || !ts.Cached || len(ts.Attempts) != 0 || len(f.calls(name)) != 0 {
			t.Errorf("%s: %s cached %v, %d attempts, ran %d times; want DONE and cached, not run", name, ts.Status, ts.Cached, len(ts.Attempts), len(f.calls(name)))
		}
	}
	for _, name := range tc.absent {
		if hasTask(rec, name) || len(f.calls(name)) != 0 {
			t.Errorf("%s is in the record or ran; it is not needed", name)
		}
		// Nothing is made for it either: a key's folder is made when its task runs.
		if dir, _ := g.store.LocalPath(chain.key(name)); dirExists(dir) {
			t.Errorf("%s has a folder (%s); it is not needed", name, dir)
		}
	}
	existing := tc.existing
	if tc.force {
		existing = map[string]string{}
		for k, v := range tc.existing {
			if k != "Root" {
				existing[k] = v
			}
		}
	}
	if out, _ := g.object(t, chain.key("Root")+"/"+OutName); out != chain.wantOut("Root", existing) {
		t.Errorf("root out = %q; want %q", out, chain.wantOut("Root", existing))
	}
	if len(tc.ran) == 0 && (f.processes() != 0 || f.graphCalls() != 0) {
		t.Errorf("%d processes started, graph asked %d times; a run with nothing to execute needs none", f.processes(), f.graphCalls())
	}
}

// Cancel stops a run mid-task: the executing task's process is killed, the task and the run
// are CANCELLED with the reason, and nothing that did not finish has an out.
func TestCancelKillsTheRunningTask(t *testing.T) {
	chain := fakeChain{{name: "Root", requires: []string{"Slow"}}, {name: "Slow"}}
	f := newFakePlugins(chain, map[string]fakeBehaviour{"Slow": {script: []string{actHang}}})
	g := newRig(t, f, 1)
	reported, killedWhenReported := g.firstAttemptEnded("Slow")
	r := g.submit(t, chain.spec())
	select {
	case <-f.started("Slow"):
	case <-time.After(runGuard):
		t.Fatal("Slow never started")
	}
	if _, err := g.m.Cancel(r.Key(), "an operator stopped it"); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	rec := g.await(t, r)
	const why = "cancelled: an operator stopped it"
	if rec.Status != Cancelled || rec.Error != why {
		t.Errorf("run ended %s (%q); want CANCELLED (%q)", rec.Status, rec.Error, why)
	}
	if ts := taskOf(t, rec, "Slow"); ts.Status != Cancelled || ts.Error != why {
		t.Errorf("Slow ended %s (%q); want CANCELLED (%q)", ts.Status, ts.Error, why)
	}
	if ts := taskOf(t, rec, "Root"); ts.Status != Cancelled || !strings.Contains(ts.Error, why) || len(f.calls("Root")) != 0 {
		t.Errorf("Root ended %s (%q) and ran %d times; want it not run, CANCELLED naming %q", ts.Status, ts.Error, len(f.calls("Root")), why)
	}
	select {
	case <-reported:
	case <-time.After(runGuard):
		t.Fatal("Slow's attempt was never reported ended")
	}
	if calls := f.calls("Slow"); len(calls) != 1 || *killedWhenReported == 0 {
		t.Errorf("Slow's calls %+v, its process killed at event %d when the attempt was reported; want one call, killed by then", calls, *killedWhenReported)
	}
	for _, name := range []string{"Root", "Slow"} {
		if _, ok := g.object(t, chain.key(name)+"/"+OutName); ok {
			t.Errorf("%s has an out after the cancel", name)
		}
	}
}

// A task the catalog lists as plain has a graph of itself alone, built here: the run asks no
// process for it, and tells the plugin so (which refuses the task should its code say
// otherwise: plugins/serve). Its key, record and out are those the plugin's graph gives.
func TestAPlainTaskRunsWithoutAGraphCall(t *testing.T) {
	for _, tc := range []struct {
		name       string
		plain      bool
		wantGraphs int
	}{
		{name: "plain in the catalog", plain: true, wantGraphs: 0},
		{name: "not plain", plain: false, wantGraphs: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chain := fakeChain{{name: "Root", params: `{"n":1}`}}
			f := newFakePlugins(chain, nil)
			g := newRig(t, f, 2, func(c *Config) {
				c.Plain = func(typ, ch, task string) ([]string, string, bool) {
					return nil, "", tc.plain && typ == fakeType && ch == fakeChainName && task == "Root"
				}
			})
			rec := g.run(t, chain.spec())
			if rec.Status != Done || len(rec.Tasks) != 1 || rec.Tasks[0].Key != chain.key("Root") || rec.Key != chain.key("Root") {
				t.Fatalf("record: %s %q, tasks %+v; want DONE, the root alone under its key", rec.Status, rec.Error, rec.Tasks)
			}
			if out, ok := g.object(t, chain.key("Root")+"/"+OutName); !ok || out != chain.wantOut("Root", nil) {
				t.Errorf("out %q (%v); want %q", out, ok, chain.wantOut("Root", nil))
			}
			if n := f.graphCalls(); n != tc.wantGraphs {
				t.Errorf("graph asked %d times; want %d", n, tc.wantGraphs)
			}
			if got := f.sentPlain("Root"); got != tc.plain {
				t.Errorf("RunTask said plain: %v; want %v", got, tc.plain)
			}
		})
	}
}

func dirExists(dir string) bool {
	fi, err := os.Stat(dir)
	return err == nil && fi.IsDir()
}

// downStore answers every stat with the store unavailable, a moment later, counting them.
type downStore struct {
	targets.Store
	stats atomic.Int64
}

func (d *downStore) Stat(context.Context, string) (targets.Info, error) {
	d.stats.Add(1)
	time.Sleep(time.Millisecond)
	return targets.Info{}, targets.ErrUnavailable
}

// Looking up a big graph's outs stops at the first failure: a store that does not answer
// would otherwise cost each of thousands of tasks its own timeout.
func TestLookingUpOutsStopsAtTheFirstFailure(t *testing.T) {
	for _, byLevel := range []bool{false, true} {
		store := &downStore{}
		s := &scheduler{m: &Manager{cfg: Config{Store: store}}, nodes: make([]node, 5000)}
		keys := make([]string, len(s.nodes))
		for i := range keys {
			keys[i] = fmt.Sprintf("chains/t/c/Leaf/%d", i)
		}
		const askers = 16
		if _, _, err := s.outsExist(context.Background(), keys, askers, byLevel); !errors.Is(err, targets.ErrUnavailable) {
			t.Errorf("byLevel %v: err = %v, want the store unavailable", byLevel, err)
		}
		if n := store.stats.Load(); n > 2*askers {
			t.Errorf("byLevel %v: %d stats of 5,000 outs after the store failed; want at most one per asker", byLevel, n)
		}
	}
}

// The scheduler's nodes share what equal tasks declare, and their names, so a big fan-in holds
// one declaration, not one per leaf; a task whose declaration differs (its methods looked at
// its parameters, or it names other connections) keeps its own.
func TestNodesShareEqualDeclarations(t *testing.T) {
	leaf := func(i int, timeout time.Duration, conns ...string) plugins.GraphNode {
		// Decoded JSON gives every node names of its own: so do these.
		return plugins.GraphNode{TaskRef: plugins.TaskRef{Chain: strings.Clone("fanin_chain"), Task: strings.Clone("LeafTask"),
			Params: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}, Timeout: timeout, Connections: conns}
	}
	graph := &plugins.GraphResponse{Nodes: []plugins.GraphNode{
		{TaskRef: plugins.TaskRef{Chain: "fanin_chain", Task: "JoinTask", Params: json.RawMessage(`{}`)}, Requires: []int{1, 2, 3, 4, 5, 6},
			Retry: &chains.RetryPolicy{Attempts: 3, Backoff: time.Second}, Queue: "gpu", Isolate: true},
		leaf(1, time.Minute), leaf(2, time.Minute), leaf(3, 2*time.Minute), leaf(4, time.Minute, "db"), leaf(5, time.Minute, "db"),
		leaf(6, time.Minute, "db", "s3"),
	}}
	nodes, keys := buildNodes("testchains", graph)
	for _, tc := range []struct {
		a, b  int
		share bool
	}{
		{1, 2, true},  // equal leaves
		{1, 3, false}, // another timeout
		{1, 4, false}, // a connection more
		{4, 5, true},
		{4, 6, false}, // other connections
		{0, 1, false},
	} {
		if got := nodes[tc.a].decl == nodes[tc.b].decl; got != tc.share {
			t.Errorf("nodes %d and %d share a declaration: %v, want %v", tc.a, tc.b, got, tc.share)
		}
	}
	for i, g := range graph.Nodes {
		n, d := nodes[i], nodes[i].decl
		want := taskDecl{timeout: g.Timeout, isolate: g.Isolate, queue: g.Queue, conns: g.Connections}
		if g.Retry != nil {
			want.retry = *g.Retry
		}
		if d.timeout != want.timeout || d.retry != want.retry || d.isolate != want.isolate || d.metrics != want.metrics ||
			d.queue != want.queue || !slices.Equal(d.conns, want.conns) {
			t.Errorf("node %d declares %+v, want %+v", i, *d, want)
		}
		if n.slot != -1 || keys[i] != Key("testchains", g.Chain, g.Task, g.Params) {
			t.Errorf("node %d = %+v with key %s, not its graph node %+v", i, n, keys[i], g)
		}
	}
	if unsafe.StringData(graph.Nodes[1].Task) != unsafe.StringData(graph.Nodes[6].Task) {
		t.Error("two leaves hold their task's name twice")
	}
}

// A graph's edges are kept as two lists (linkNodes): each node's requirements in the order it
// declared them (its inputs are passed in that order), and its dependents in graph order. An
// edge to no node is the plugin's error, refused whole.
func TestLinkNodesKeepsTheGraphsEdges(t *testing.T) {
	for _, tc := range []struct {
		name       string
		requires   [][]int
		dependents [][]int32
		err        string
	}{
		{"one node", [][]int{nil}, [][]int32{nil}, ""},
		{"a fan-in", [][]int{{1, 2, 3}, nil, nil, nil}, [][]int32{nil, {0}, {0}, {0}}, ""},
		{"declared order kept", [][]int{{3, 1, 2}, nil, nil, nil}, [][]int32{nil, {0}, {0}, {0}}, ""},
		{"a diamond", [][]int{{1, 2}, {3}, {3}, nil}, [][]int32{nil, {0}, {0}, {1, 2}}, ""},
		{"shared leaves", [][]int{{1, 2}, {3, 4}, {4, 3}, nil, nil}, [][]int32{nil, {0}, {0}, {1, 2}, {1, 2}}, ""},
		{"an edge past the end", [][]int{{1, 2}, nil}, nil, "dependency 2 of 0"},
		{"a negative edge", [][]int{nil, {-1}}, nil, "dependency -1 of 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			graph := &plugins.GraphResponse{}
			for _, r := range tc.requires {
				graph.Nodes = append(graph.Nodes, plugins.GraphNode{Requires: r})
			}
			deps, dependents, err := linkNodes(graph)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one naming %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range tc.requires {
				var got []int
				for _, d := range deps.of(i) {
					got = append(got, int(d))
				}
				if !slices.Equal(got, r) {
					t.Errorf("node %d requires %v, want %v", i, got, r)
				}
				if got := dependents.of(i); !slices.Equal(got, tc.dependents[i]) {
					t.Errorf("node %d's dependents are %v, want %v", i, got, tc.dependents[i])
				}
			}
			if got := deps.of(len(tc.requires)); got != nil {
				t.Errorf("a node past the graph has requirements %v", got)
			}
		})
	}
}
