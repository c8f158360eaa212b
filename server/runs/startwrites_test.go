package runs

import (
	"errors"
	"strings"
	"testing"
	"time"

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
// has its params. A failed write fails the run and leaves no out.
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
				t.Fatalf("the run ended before its params were stored: %+v", r.Snapshot())
			default:
			}
			close(held.release)
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
