package runs

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"nectar/targets"
	"nectar/targets/local"
)

// refusedMetrics is the local store, refusing every metrics object when refuse is set, and
// run records while records is set.
type refusedMetrics struct {
	*local.Store
	refuse  bool
	records atomic.Bool
}

var errRefused = errors.New("the store refused the object")

func (s *refusedMetrics) PutVolatile(key string, b []byte) error {
	if s.refuse && strings.HasSuffix(key, "/"+MetricsName) {
		return errRefused
	}
	return s.Store.PutVolatile(key, b)
}

func (s *refusedMetrics) WriteVolatile(key string, write func(io.Writer) error) (targets.Info, error) {
	if s.records.Load() && strings.HasSuffix(key, "/"+RecordName) {
		return targets.Info{}, errRefused
	}
	return s.Store.WriteVolatile(key, write)
}

func (s *refusedMetrics) Put(ctx context.Context, key string, r io.Reader) error {
	if s.refuse && strings.HasSuffix(key, "/"+MetricsName) {
		return errRefused
	}
	return s.Store.Put(ctx, key, r)
}

// A run's end writes its record and its metrics object side by side. When the store takes the
// record but refuses the metrics object, the record is written again, saying the object is
// missing (status answers then sign no URL to it); the run is still DONE, with its figures in
// the record. When both are stored, the record says nothing of the kind.
func TestARecordSaysWhenItsMetricsObjectWasNotStored(t *testing.T) {
	for _, tc := range []struct {
		name     string
		refuse   bool
		storeOut bool // the store also refuses the record at the run's end, then takes it
	}{
		{name: "metrics object stored"},
		{name: "metrics object refused", refuse: true},
		{name: "metrics object and record refused", refuse: true, storeOut: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chain := fakeChain{{name: "Root", params: `{"n":2}`}}
			gate := make(chan struct{})
			store := &refusedMetrics{refuse: tc.refuse}
			g := newRig(t, newFakePlugins(chain, map[string]fakeBehaviour{"Root": {gate: gate}}), 1, func(c *Config) {
				store.Store = c.Store.(*local.Store)
				c.Store = store
			})
			r := g.submit(t, chain.spec())
			time.Sleep(100 * time.Millisecond) // its start is recorded
			store.records.Store(tc.storeOut)
			close(gate)
			if tc.storeOut {
				<-r.Done() // answered from memory, the record written later (persistLater)
				if snap := r.Snapshot(); !snap.MetricsNotStored {
					t.Errorf("the run in memory, its record not yet stored, says metrics_not_stored=false")
				}
				store.records.Store(false)
				deadline := time.Now().Add(runGuard)
				for g.stored(t, r).Status != Done && time.Now().Before(deadline) {
					time.Sleep(50 * time.Millisecond)
				}
			}
			rec := g.await(t, r)
			_, hasMetrics := g.object(t, chain.key("Root")+"/"+MetricsName)
			if rec.Status != Done || rec.Metrics == nil {
				t.Fatalf("run %s %q, metrics in the record %v; want DONE with its figures", rec.Status, rec.Error, rec.Metrics != nil)
			}
			if hasMetrics == tc.refuse {
				t.Fatalf("metrics object stored: %v; want %v", hasMetrics, !tc.refuse)
			}
			if rec.MetricsNotStored != tc.refuse {
				t.Errorf("the stored record says metrics_not_stored=%v; want %v", rec.MetricsNotStored, tc.refuse)
			}
			if snap := r.Snapshot(); snap.MetricsNotStored != tc.refuse {
				t.Errorf("the run in memory says metrics_not_stored=%v; want %v", snap.MetricsNotStored, tc.refuse)
			}
		})
	}
}

// refusedLogs is the local store, refusing every task log when refuse is set.
type refusedLogs struct {
	*local.Store
	refuse bool
}

func (s *refusedLogs) Commit(src, key string) error {
	if s.refuse && strings.HasSuffix(key, "/"+LogName) {
		return errRefused
	}
	return s.Store.Commit(src, key)
}

// A failed task's log is stored for the reader to see why. When the store refuses it, the
// task's state says so and HasLog is false: no answer signs a log_url that points at nothing.
func TestAFailedTaskWhoseLogWasRefusedHasNoLog(t *testing.T) {
	for _, tc := range []struct {
		name   string
		refuse bool
	}{
		{name: "log stored"},
		{name: "log refused", refuse: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chain := fakeChain{{name: "Root", params: `{"n":3}`}}
			f := newFakePlugins(chain, map[string]fakeBehaviour{"Root": {script: []string{actFail}, err: "bad row 7"}})
			store := &refusedLogs{refuse: tc.refuse}
			g := newRig(t, f, 1, func(c *Config) {
				store.Store = c.Store.(*local.Store)
				c.Store = store
			})
			rec := g.run(t, chain.spec())
			root := taskOf(t, rec, "Root")
			_, hasLog := g.object(t, chain.key("Root")+"/"+LogName)
			if rec.Status != Failed || root.Status != Failed || len(root.Attempts) != 1 {
				t.Fatalf("run %s, Root %s with %d attempts; want both FAILED after one attempt", rec.Status, root.Status, len(root.Attempts))
			}
			if hasLog == tc.refuse {
				t.Fatalf("log stored: %v; want %v", hasLog, !tc.refuse)
			}
			if root.LogNotStored != tc.refuse || root.HasLog() != hasLog {
				t.Errorf("Root says log_not_stored=%v and HasLog()=%v; want %v and %v (the log is stored: %v)", root.LogNotStored, root.HasLog(), tc.refuse, hasLog, hasLog)
			}
		})
	}
}

// stored is r's record as stored now (the zero Record when there is none yet).
func (g *testRig) stored(t *testing.T, r *Run) Record {
	t.Helper()
	var rec Record
	if b, ok := g.object(t, r.Key()+"/"+RecordName); ok {
		json.Unmarshal([]byte(b), &rec)
	}
	return rec
}
