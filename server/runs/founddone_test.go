package runs

import (
	"context"
	"errors"
	"strings"
	"testing"

	"nectar/targets"
	"nectar/targets/local"
)

// failingStat is a store whose Stat fails: nothing can be said of a log.
type failingStat struct{ targets.Store }

func (failingStat) Stat(context.Context, string) (targets.Info, error) {
	return targets.Info{}, errors.New("store unreachable")
}

// A task found done (its out committed by another execution: a lost worker's, a split batch,
// a lost answer) reports whether its log is stored, and says none is when the store cannot
// tell: no answer may sign a URL to a log that is not there.
func TestAFoundDoneTaskSaysWhetherItsLogIsStored(t *testing.T) {
	store, err := local.New(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	const logged, silent = "chains/t/c/Logged/01", "chains/t/c/Silent/02"
	for _, k := range []string{logged + "/out", logged + "/log", silent + "/out"} {
		if err := store.Put(context.Background(), k, strings.NewReader("x")); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name     string
		store    targets.Store
		key      string
		logEmpty bool
	}{
		{"its log is stored", store, logged, false},
		{"it wrote none", store, silent, true},
		{"the store cannot say", failingStat{store}, logged, true},
	} {
		res := foundDone(context.Background(), tc.store, 3, tc.key)
		if res.idx != 3 || res.err != "" || res.notStarted || res.logEmpty != tc.logEmpty {
			t.Errorf("%s: %+v, want done with logEmpty %v", tc.name, res, tc.logEmpty)
		}
	}
}
