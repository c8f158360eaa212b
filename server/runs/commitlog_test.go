package runs

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"
)

// A finished task's commit stores its log if it wrote one; a task that wrote none stores none,
// unless it is its run's root (its answer links its log) or its key holds a log already (a
// failed run's, even one committed into the folder this task made): an empty log then
// replaces it, so the log beside the out is never another run's failure.
func TestACommitStoresALogOnlyWhereOneIsNeeded(t *testing.T) {
	g := newRig(t, newFakePlugins(fakeChain{{name: "Root"}}, nil), 1)
	l := g.m.newLane(laneConfig{runID: "run-1", typ: fakeType, parallelism: 1, log: slog.New(slog.DiscardHandler),
		failure: func(doing string, err error) string { return doing + ": " + err.Error() },
		report:  func(taskUpdate) {}, meter: newMeter(time.Hour, Pricing{})}, nil, nil, 0)
	t.Cleanup(func() { l.end(false) })
	for i, tc := range []struct {
		name       string
		index      int
		wrote      string // the task's own log; "" for none
		held       string // a log the key holds before the commit; "" for none
		wantLogged bool
		wantLog    string // at the key after the commit; "-" for none
	}{
		{"a dependency that wrote none", 1, "", "", false, "-"},
		{"a dependency that wrote a line", 1, "line\n", "", true, "line\n"},
		{"the root, which wrote none", 0, "", "", true, ""},
		{"a dependency that wrote none where a failed run's log is", 1, "", "task failed: boom\n", true, ""},
	} {
		key := fmt.Sprintf("chains/%s/c/Task/%032x", fakeType, i)
		job := &taskJob{Run: "run-1", Type: fakeType, Index: tc.index, Key: key}
		files, err := l.prepare(job) // makes the key's folder, as for any task
		if err != nil {
			t.Fatal(err)
		}
		if tc.held != "" { // committed there after the folder was made (a concurrent run's)
			if err := g.store.Put(context.Background(), key+"/"+LogName, strings.NewReader(tc.held)); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(files.out, []byte("out\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if tc.wrote != "" {
			if err := os.WriteFile(files.log, []byte(tc.wrote), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		_, logged, err := l.commitDone(context.Background(), job, files, files.artDir(1), false, nil, true)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got := "-"
		if rc, err := g.store.Get(context.Background(), key+"/"+LogName); err == nil {
			b, _ := io.ReadAll(rc)
			rc.Close()
			got = string(b)
		}
		if logged != tc.wantLogged || got != tc.wantLog {
			t.Errorf("%s: logged %v, the key's log %q; want %v, %q", tc.name, logged, got, tc.wantLogged, tc.wantLog)
		}
		if ok, _ := g.store.Stat(context.Background(), key+"/"+OutName); ok.Size != 4 {
			t.Errorf("%s: the out is not committed", tc.name)
		}
	}
}
