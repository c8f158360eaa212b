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
)

// putEarlierRecord stores a finished record of another run under key, as the key's last run
// left it.
func putEarlierRecord(t *testing.T, store targets.Store, spec Spec, key, runID string) {
	t.Helper()
	at := time.Now().UTC().Add(-time.Hour)
	b, err := json.Marshal(Record{RunID: runID, Key: key, Type: spec.Type, Chain: spec.Chain, Task: spec.Task, Params: spec.Params,
		Status: Failed, Error: "an earlier failure", SubmittedAt: at, StartedAt: &at, FinishedAt: &at})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Put(context.Background(), key+"/"+RecordName, strings.NewReader(string(b))); err != nil {
		t.Fatal(err)
	}
}

// storedRecordOf reads key's record as stored.
func storedRecordOf(t *testing.T, g *testRig, key string) Record {
	t.Helper()
	rec, err := g.m.storedRecord(context.Background(), key)
	if err != nil {
		t.Fatalf("reading the record of %s: %v", key, err)
	}
	return rec
}

// A run cancelled while it waits for a slot ends before it read the key's record, which its
// own replaces: that record goes into its history, as when a run starts, not lost.
func TestARunCancelledWhileQueuedKeepsTheRunBefore(t *testing.T) {
	busy := fakeChain{{name: "Busy", params: `{"n":1}`}}
	gate := make(chan struct{})
	defer close(gate)
	g := newRig(t, newFakePlugins(busy, map[string]fakeBehaviour{"Busy": {gate: gate}}), 1, func(c *Config) { c.MaxRuns, c.MaxQueue = 1, 4 })
	waiting := busy.spec()
	waiting.Params = []byte(`{"n":2}`)
	key := Key(waiting.Type, waiting.Chain, waiting.Task, waiting.Params)
	putEarlierRecord(t, g.store, waiting, key, "run-before")

	g.submit(t, busy.spec())
	time.Sleep(100 * time.Millisecond) // it holds the only slot
	r := g.submit(t, waiting)
	time.Sleep(100 * time.Millisecond)
	if _, err := g.m.Cancel(r.Key(), "test"); err != nil {
		t.Fatal(err)
	}
	rec := g.await(t, r)
	if rec.Status != Cancelled || rec.RunID != r.ID() {
		t.Fatalf("the key's record: run %s, %s; want this run's, CANCELLED", rec.RunID, rec.Status)
	}
	if len(rec.Previous) != 1 || rec.Previous[0].RunID != "run-before" || rec.Previous[0].Error != "an earlier failure" {
		t.Errorf("the cancelled run's history = %+v; want the run before it", rec.Previous)
	}
}

// leaseRefusingStore fails every lease it is asked to create while refuse is set, as a store
// that stops answering would; everything else goes through.
type leaseRefusingStore struct {
	targets.Store
	refuse atomic.Bool
}

func (s *leaseRefusingStore) CreateIfAbsent(ctx context.Context, key string, r io.Reader) error {
	if s.refuse.Load() && strings.HasSuffix(key, "/"+LeaseName) {
		return targets.ErrUnavailable
	}
	return s.Store.CreateIfAbsent(ctx, key, r)
}

// A run that could not take its key's lease fails, saying why; its record is stored only where
// the key has none. A key's record is the lease holder's to replace: written anyway, the
// failure replaced the run before (and its history), and, retried until the store came back,
// could land over another server's live run, or a later one's.
func TestARunWithoutItsLeaseLeavesTheKeysRecord(t *testing.T) {
	chain := fakeChain{{name: "Root"}}
	var store *leaseRefusingStore
	g := newRig(t, newFakePlugins(chain, nil), 1, func(c *Config) {
		store = &leaseRefusingStore{Store: c.Store}
		c.Store = store
	})
	store.refuse.Store(true)
	for _, tc := range []struct {
		name    string
		earlier bool
		big     bool // its record is over what CreateIfAbsent takes: not stored, not retried
	}{
		{"the key has a record", true, false},
		{"the key has none", false, false},
		{"its record is too big to create", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := chain.spec()
			spec.Params = []byte(`{"case":"` + tc.name + `"}`)
			if tc.big {
				spec.Params = []byte(`{"case":"` + strings.Repeat("x", targets.MaxCreateSize) + `"}`)
			}
			key := Key(spec.Type, spec.Chain, spec.Task, spec.Params)
			if tc.earlier {
				putEarlierRecord(t, g.store, spec, key, "run-before")
			}
			r := g.submit(t, spec)
			select {
			case <-r.Done():
			case <-time.After(runGuard):
				t.Fatalf("the run did not end within %s", runGuard)
			}
			if got := r.Snapshot(); got.Status != Failed || !strings.Contains(got.Error, "taking the run's lease") {
				t.Errorf("the run ended %s (%s); want FAILED, naming the lease", got.Status, got.Error)
			}
			if tc.big {
				if _, err := g.m.storedRecord(context.Background(), key); !errors.Is(err, targets.ErrNotExist) {
					t.Errorf("reading the key's record: %v; want none stored", err)
				}
				deadline := time.Now().Add(5 * time.Second)
				for _, active := g.m.Active(key); active; _, active = g.m.Active(key) {
					if time.Now().After(deadline) {
						t.Fatal("the run is still active 5 s after it ended: its record is being retried")
					}
					time.Sleep(10 * time.Millisecond)
				}
				return
			}
			rec := storedRecordOf(t, g, key)
			switch {
			case tc.earlier && (rec.RunID != "run-before" || rec.Error != "an earlier failure"):
				t.Errorf("the key's record is now run %s (%s %s); want the run before, untouched", rec.RunID, rec.Status, rec.Error)
			case !tc.earlier && (rec.RunID != r.ID() || rec.Status != Failed):
				t.Errorf("the key's record is run %s (%s); want this run's failure", rec.RunID, rec.Status)
			}
		})
	}
}
