package runs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"nectar/chains"
	"nectar/targets/local"
)

// heldParams is the local store, but a key's params are stored only once release is closed,
// and then fail with failWith if it is set.
type heldParams struct {
	*local.Store
	release  chan struct{}
	failWith error
}

func (s *heldParams) PutVolatile(key string, b []byte) error {
	if strings.HasSuffix(key, "/"+ParamsName) {
		<-s.release
		if s.failWith != nil {
			return s.failWith
		}
	}
	return s.Store.PutVolatile(key, b)
}

// The root task executes while its run stores the key's params and first record (they cost
// a tenth of a trivial run), but its out appears only after them: an out under a key always
// has its params. A failed write fails the run and leaves no out. The run is planned (its
// POST answered, with a params_url and a status_url) only after them too: an answer never
// hands out a URL to an object not yet stored.
func TestTheRootExecutesWhileItsParamsAreStored(t *testing.T) {
	for _, tc := range []struct {
		name     string
		failWith error
	}{
		{name: "stored late"},
		{name: "not stored", failWith: errors.New("no space left on device")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chain := fakeChain{{name: "Root", params: `{"n":1}`}}
			f := newFakePlugins(chain, nil)
			held := &heldParams{release: make(chan struct{}), failWith: tc.failWith}
			g := newRig(t, f, 2, func(c *Config) {
				held.Store = c.Store.(*local.Store)
				c.Store = held
			})
			ended, _ := g.firstAttemptEnded("Root")
			r := g.submit(t, chain.spec())
			planned := make(chan error, 1)
			go func() { planned <- r.AwaitPlan(context.Background()) }()
			select {
			case <-ended: // it executed, and returned, with the params still held
			case <-time.After(runGuard):
				close(held.release)
				t.Fatalf("the root task did not execute while its params were being stored")
			}
			key := chain.key("Root")
			if _, ok := g.object(t, key+"/"+OutName); ok {
				t.Errorf("the out was committed before the params were stored")
			}
			select {
			case <-r.Done():
				close(held.release)
				t.Fatalf("the run ended before its params were stored: %+v", r.Snapshot())
			case err := <-planned:
				close(held.release)
				t.Fatalf("the run was planned (%v) before its params were stored: its answer's params_url would point at nothing", err)
			default:
			}
			if !r.Snapshot().ParamsNotStored {
				t.Errorf("the run says its params are stored while the store holds them: an answer would sign a params_url to nothing")
			}
			close(held.release)
			select {
			case err := <-planned:
				if _, stored := g.object(t, key+"/"+ParamsName); err != nil || stored == (tc.failWith != nil) {
					t.Errorf("planned (%v) with params stored: %v; want planned, with them stored unless the store refused them", err, stored)
				}
			case <-time.After(runGuard):
				t.Fatalf("the run was not planned within %s of its params being written", runGuard)
			}
			rec := g.await(t, r)
			out, hasOut := g.object(t, key+"/"+OutName)
			_, hasParams := g.object(t, key+"/"+ParamsName)
			if rec.ParamsNotStored != (tc.failWith != nil) {
				t.Errorf("the record says params_not_stored=%v; want %v (answers sign no params_url for params never stored)", rec.ParamsNotStored, tc.failWith != nil)
			}
			if tc.failWith == nil {
				if rec.Status != Done || !hasOut || out != chain.wantOut("Root", nil) || !hasParams {
					t.Fatalf("run %s %q, out %q (%v), params %v; want DONE with its out and params", rec.Status, rec.Error, out, hasOut, hasParams)
				}
				return
			}
			if rec.Status != Failed || !strings.Contains(rec.Error, "writing the params and record of Root") {
				t.Errorf("run %s %q; want FAILED, naming the params and record it could not store", rec.Status, rec.Error)
			}
			if strings.Contains(rec.Error, "no space left") {
				t.Errorf("the record shows the store's error %q; it belongs in the server log", rec.Error)
			}
			if root := taskOf(t, rec, "Root"); root.Status != Failed || !strings.Contains(root.Error, "could not store its params and record") {
				t.Errorf("root task %s %q; want FAILED, as its run could not store its params", root.Status, root.Error)
			}
			if hasOut || hasParams {
				t.Errorf("out %v, params %v after the failed write; want neither", hasOut, hasParams)
			}
		})
	}
}

// On a local store, a task's inputs go to the plugin as the keys the scheduler holds, under
// the store's folder: no path is built per input. A key that would leave the store (a queue
// message's, from another server) is refused, naming the task it stands for.
func TestALocalStoresInputsAreItsKeys(t *testing.T) {
	g := newRig(t, newFakePlugins(fakeChain{{name: "Root"}}, nil), 1)
	l := &lane{m: g.m, failure: func(doing string, err error) string { return doing + ": " + err.Error() }}
	keys := []string{"chains/t/c_chain/LeafTask/0a1b", "chains/t/c_chain/LeafTask/2c3d"}
	in, err := l.inputs(context.Background(), &taskJob{Inputs: keys})
	if err != nil {
		t.Fatal(err)
	}
	if in.root != g.store.Root() || in.name != OutName || !slices.Equal(in.paths, keys) || len(in.downloaded) > 0 {
		t.Fatalf("inputs %+v; want the keys under %s, each as %s, nothing downloaded", in, g.store.Root(), OutName)
	}
	if &in.paths[0] != &keys[0] {
		t.Errorf("the inputs are a copy of the keys; want the scheduler's own")
	}
	for _, bad := range []string{"../outside/LeafTask/0a1b", "chains/t/../../../etc/LeafTask/x", "/etc/LeafTask/x", "", ".tmp/put-1", "schedules/t/c/T/state"} {
		_, err := l.inputs(context.Background(), &taskJob{Inputs: []string{keys[0], bad}})
		if err == nil || !strings.Contains(err.Error(), "reading the out of ") {
			t.Errorf("inputs with key %q: %v; want a refusal naming the input", bad, err)
		}
	}
}

// A task's artifacts are listed whole before any is stored: one over chains.MaxArtifacts (a
// plugin that wrote them past chains.Artifact), or one whose publish path the task may not
// have, fails the task as its own doing, with nothing of it stored or published.
func TestArtifactsAreRefusedWholeOrStored(t *testing.T) {
	for _, tc := range []struct {
		name    string
		files   int
		publish map[string]string
		refused string // in the error; "" when stored
	}{
		{name: "three, one published", files: 3, publish: map[string]string{"a1.txt": "reports/daily/a1.txt"}},
		{name: "the most a task makes", files: chains.MaxArtifacts},
		{name: "one too many", files: chains.MaxArtifacts + 1, refused: fmt.Sprintf("more than %d artifacts", chains.MaxArtifacts)},
		{name: "published into the server's own area", files: 3, publish: map[string]string{"a2.txt": "chains/t/c/X/k/out"}, refused: `publish path "chains/t/c/X/k/out"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newRig(t, newFakePlugins(fakeChain{{name: "Root"}}, nil), 1)
			l := &lane{m: g.m}
			dir := t.TempDir()
			for i := range tc.files {
				if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("a%d.txt", i)), []byte("x"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			job := &taskJob{Key: "chains/t/c/Leaf/0a1b"}
			arts, _, err := l.commitArtifacts(context.Background(), job, dir, tc.publish, false)
			stored, lerr := g.store.List(context.Background(), job.Key+"/")
			if lerr != nil {
				t.Fatal(lerr)
			}
			published, _ := g.store.List(context.Background(), "reports/")
			if tc.refused != "" {
				if !errors.Is(err, errTaskArtifacts) || !strings.Contains(err.Error(), tc.refused) {
					t.Fatalf("commitArtifacts: %v; want the task's artifacts refused, saying %q", err, tc.refused)
				}
				if len(stored) != 0 || len(published) != 0 {
					t.Fatalf("refused, yet %d artifacts stored and %d published", len(stored), len(published))
				}
				return
			}
			if err != nil || len(arts) != tc.files || len(stored) != tc.files || len(published) != len(tc.publish) {
				t.Fatalf("commitArtifacts: %v, %d listed, %d stored, %d published; want %d, %d, %d", err, len(arts), len(stored), len(published), tc.files, tc.files, len(tc.publish))
			}
		})
	}
}

// A run cancelled while it waits for a slot never stored its params: its record says so, and
// no answer signs a params_url to them.
func TestARunCancelledBeforeItStartedStoredNoParams(t *testing.T) {
	busy := fakeChain{{name: "Busy", params: `{"n":1}`}}
	gate := make(chan struct{})
	defer close(gate)
	g := newRig(t, newFakePlugins(busy, map[string]fakeBehaviour{"Busy": {gate: gate}}), 1, func(c *Config) { c.MaxRuns, c.MaxQueue = 1, 4 })
	g.submit(t, busy.spec())
	time.Sleep(100 * time.Millisecond) // it holds the only slot
	waiting := busy.spec()
	waiting.Params = []byte(`{"n":2}`)
	r := g.submit(t, waiting)
	time.Sleep(100 * time.Millisecond)
	if st := r.Snapshot(); st.Status != Pending || !st.ParamsNotStored {
		t.Fatalf("the waiting run is %s (%s), params_not_stored=%v; want PENDING, not stored", st.Status, st.Error, st.ParamsNotStored)
	}
	if _, err := g.m.Cancel(r.Key(), "test"); err != nil {
		t.Fatal(err)
	}
	rec := g.await(t, r)
	if rec.Status != Cancelled || !rec.ParamsNotStored {
		t.Errorf("the cancelled run's record: %s, params_not_stored=%v; want CANCELLED, not stored", rec.Status, rec.ParamsNotStored)
	}
	if _, ok := g.object(t, r.Key()+"/"+ParamsName); ok {
		t.Errorf("params stored for a run that never started")
	}
}
