package runs

import (
	"fmt"
	"runtime/metrics"
	"testing"
	"time"
)

// forcedGCs is how many collections were forced (runtime.GC, debug.FreeOSMemory) so far.
func forcedGCs() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/forced:gc-cycles"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// The end of a big run gives its memory back at once (a forced collection that returns free
// pages); a small run's end leaves the collector alone.
func TestTheEndOfABigRunGivesItsMemoryBack(t *testing.T) {
	defer func(n int, d time.Duration) { bigRunTasks, releaseAgainAfter = n, d }(bigRunTasks, releaseAgainAfter)
	bigRunTasks, releaseAgainAfter = 6, 10*time.Millisecond
	for _, tc := range []struct {
		leaves  int
		release bool
	}{{leaves: 2, release: false}, {leaves: 5, release: true}} {
		t.Run(fmt.Sprintf("%d tasks", tc.leaves+1), func(t *testing.T) {
			chain := fakeChain{{name: "Root"}}
			for i := range tc.leaves {
				leaf := fmt.Sprintf("L%d", i)
				chain[0].requires = append(chain[0].requires, leaf)
				chain = append(chain, fakeTask{name: leaf})
			}
			g := newRig(t, newFakePlugins(chain, nil), 2)
			for releasing.Load() { // the second release of an earlier run
				time.Sleep(5 * time.Millisecond)
			}
			before := forcedGCs()
			if rec := g.run(t, chain.spec()); rec.Status != Done || len(rec.Tasks) != tc.leaves+1 {
				t.Fatalf("run ended %s with %d tasks (%q); want DONE with %d", rec.Status, len(rec.Tasks), rec.Error, tc.leaves+1)
			}
			deadline := time.Now().Add(runGuard)
			if !tc.release {
				deadline = time.Now().Add(100 * time.Millisecond) // a wrong release would come in this window
			}
			for forcedGCs() == before && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if got := forcedGCs() > before; got != tc.release {
				t.Errorf("a forced collection after a run of %d tasks (big from %d): %v; want %v", tc.leaves+1, bigRunTasks, got, tc.release)
			}
		})
	}
}
