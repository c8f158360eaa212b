package runs

import (
	"context"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"nectar/targets"
)

// countedRemote is the local store seen as a remote one (no local paths: outs are uploaded
// from the spool and downloaded to it, as on S3), counting the downloads of each key.
type countedRemote struct {
	targets.Store
	mu   sync.Mutex
	gets map[string]int
}

func (s *countedRemote) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	s.mu.Lock()
	s.gets[key]++
	s.mu.Unlock()
	return s.Store.Get(ctx, key)
}

func (s *countedRemote) downloads(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gets[key]
}

// On a remote store, a join reads the outs its run's lane just uploaded from the spool copies
// the uploads read, not through a download each; an out it did not upload (an earlier run's)
// is downloaded. Either way the join reads exactly the stored outs, and the lane leaves no
// file in the spool when the run ends.
func TestAJoinReadsTheOutsItsLaneUploadedWithoutADownload(t *testing.T) {
	chain := fakeChain{
		{name: "Join", params: `{"n":1}`, requires: []string{"A", "B", "C"}},
		{name: "A", params: `{"i":1}`},
		{name: "B", params: `{"i":2}`},
		{name: "C", params: `{"i":3}`},
	}
	f := newFakePlugins(chain, nil)
	var remote *countedRemote
	g := newRig(t, f, 2, func(c *Config) {
		remote = &countedRemote{Store: c.Store, gets: map[string]int{}}
		c.Store = remote
	})
	existing := map[string]string{"C": "C computed by an earlier run"}
	g.put(t, chain.key("C")+"/"+OutName, existing["C"])

	rec := g.run(t, chain.spec())
	if rec.Status != Done {
		t.Fatalf("run %s %q; want DONE", rec.Status, rec.Error)
	}
	if out, _ := g.object(t, chain.key("Join")+"/"+OutName); out != chain.wantOut("Join", existing) {
		t.Errorf("join out %q; want %q", out, chain.wantOut("Join", existing))
	}
	for _, tc := range []struct {
		task string
		want int
	}{{"A", 0}, {"B", 0}, {"C", 1}} {
		if n := remote.downloads(chain.key(tc.task) + "/" + OutName); n != tc.want {
			t.Errorf("the out of %s was downloaded %d times; want %d", tc.task, n, tc.want)
		}
	}
	left, err := os.ReadDir(g.m.spool)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range left {
		if strings.HasPrefix(e.Name(), "task-") { // a parked process keeps its output file
			names = append(names, e.Name())
		}
	}
	if len(names) > 0 {
		t.Errorf("the spool holds the task files %s after the run", strings.Join(names, ", "))
	}
}

// keptOuts keeps small outs within a budget that every lane of the process shares; a key
// committed again points to its last copy, and one that could not be kept again has none.
// Every copy, superseded ones too (a task may be reading one), goes when the lane ends.
func TestKeptOutsAreSmallBoundedAndTheLastCommitted(t *testing.T) {
	dir := t.TempDir()
	file := func(name string, size int) string {
		p := dir + "/" + name
		if err := os.WriteFile(p, make([]byte, size), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var total atomic.Int64
	a, b := keptOuts{total: &total}, keptOuts{total: &total}
	if a.keep("big", file("big", keepOutMax+1)) {
		t.Errorf("an out of keepOutMax+1 bytes was kept")
	}
	first, again := file("k-1", 10), file("k-2", 20)
	if !a.keep("k", first) || !a.keep("k", again) {
		t.Fatalf("small outs were not kept")
	}
	if p, _ := a.lookup("k"); p != again {
		t.Errorf("lookup of a key committed twice = %s; want its last copy %s", p, again)
	}
	n := 0 // lane b fills what lane a left of the budget
	for ; n <= keptBudget/keepOutMax; n++ {
		if !b.keep("f"+strconv.Itoa(n), file("f"+strconv.Itoa(n), keepOutMax)) {
			break
		}
	}
	if want := (keptBudget - 30) / keepOutMax; n != want {
		t.Errorf("lane b kept %d outs of keepOutMax bytes beside lane a's 30 bytes; want %d", n, want)
	}
	if a.keep("k", file("k-3", keepOutMax)) {
		t.Errorf("an out past the process's budget was kept")
	}
	if p, ok := a.lookup("k"); ok {
		t.Errorf("key k still points to %s after a commit that could not be kept", p)
	}
	a.removeAll()
	b.removeAll()
	if got := total.Load(); got != 0 {
		t.Errorf("%d bytes still counted after every lane ended", got)
	}
	left, _ := os.ReadDir(dir)
	var names []string
	for _, e := range left {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	// The caller removes what keep refused: big, k-3, and the file past b's share.
	if want := []string{"big", "f" + strconv.Itoa(n), "k-3"}; !slices.Equal(names, want) {
		t.Errorf("files left after removeAll %v; want %v", names, want)
	}
}
