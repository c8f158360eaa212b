package runs

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"nectar/targets"
	"nectar/targets/local"
)

// rewrittenOnStat is the local store, where the first stat of a run record after arm rewrites
// the record first: another server's write (a forced rerun of the key there) landing in the
// moment after this server's own final write.
type rewrittenOnStat struct {
	*local.Store
	armed atomic.Bool
	other []byte // the other server's record
}

func (s *rewrittenOnStat) Stat(ctx context.Context, key string) (targets.Info, error) {
	if strings.HasSuffix(key, "/"+RecordName) && s.armed.CompareAndSwap(true, false) {
		if err := s.Store.PutVolatile(key, s.other); err != nil {
			return targets.Info{}, err
		}
	}
	return s.Store.Stat(ctx, key)
}

// A server keeps the final record of a run it executed for the status reads that follow, as
// the version its own write stored. When another server rewrites the record right after, a
// status read answers the other server's record: before, the cache took its version from a
// stat made after the write, which found the other server's, and answered this run's record
// under it for as long as the record stayed unchanged.
func TestARememberedRecordIsTheVersionItsWriteStored(t *testing.T) {
	chain := fakeChain{{name: "Root", params: `{"n":1}`}}
	store := &rewrittenOnStat{}
	g := newRig(t, newFakePlugins(chain, nil), 1, func(c *Config) {
		store.Store = c.Store.(*local.Store)
		c.Store = store
	})
	// The other server's record: a later run of the key, with an id of its own.
	first := g.run(t, chain.spec())
	other := first
	other.RunID, other.Trigger = "run-of-another-server", "another server"
	b, err := json.Marshal(other)
	if err != nil {
		t.Fatal(err)
	}
	store.other = b

	store.armed.Store(true)
	spec := chain.spec()
	spec.Force = true
	r := g.submit(t, spec)
	select {
	case <-r.retired: // status reads now go to the store (and the cache)
	case <-time.After(runGuard):
		t.Fatalf("the run did not retire within %s", runGuard)
	}
	for i := range 2 { // a miss, then a hit of whatever the cache kept
		view, err := g.m.Status(context.Background(), r.Key())
		if err != nil {
			t.Fatal(err)
		}
		if rec, _ := view.Page(0, 10); rec.RunID != other.RunID {
			t.Fatalf("status read %d answers run %s (this server's, written before the other's); the store holds %s's record", i+1, rec.RunID, other.RunID)
		}
	}
	if store.armed.Load() {
		t.Fatalf("no stat of the record was made: the test rewrote nothing")
	}
}
