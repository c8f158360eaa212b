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
		out      targets.Info // what finding the out said of it
		logEmpty bool
	}{
		{"its log is stored", store, logged, targets.Info{}, false},
		{"it wrote none", store, silent, targets.Info{}, true},
		{"the store cannot say", failingStat{store}, logged, targets.Info{}, true},
		// Where the out says (S3, MinIO), nothing more is asked: the store could not answer.
		{"its out says its log is stored", failingStat{store}, silent, targets.Info{Meta: outMeta(true)}, false},
		{"its out says it wrote none", failingStat{store}, logged, targets.Info{Meta: outMeta(false)}, true},
	} {
		res := foundDone(context.Background(), tc.store, 3, tc.key, tc.out)
		if res.idx != 3 || res.err != "" || res.notStarted || res.logEmpty != tc.logEmpty {
			t.Errorf("%s: %+v, want done with logEmpty %v", tc.name, res, tc.logEmpty)
		}
	}
}
