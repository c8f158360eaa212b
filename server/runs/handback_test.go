package runs

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// A task's commit outlives a hand-back of its worker (its code has returned: the files go to
// the store whole), not a cancel of its run, even one that comes after the hand-back. The
// contexts are made as Worker.laneFor makes them.
func TestACommitOutlivesAHandBackNotACancel(t *testing.T) {
	back := fmt.Errorf("worker w stopped: %w", errHandedBack)
	cancel := errors.New("cancelled by DELETE")
	for _, tc := range []struct {
		name         string
		handBack     bool
		cancelRun    bool
		laneHandedBk bool // the lane's context says hand-back (runJob hands the task back)
	}{
		{"the worker hands its tasks back", true, false, true},
		{"the run is cancelled", false, true, false},
		{"the worker hands back, then the run is cancelled", true, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runCtx, cancelRun := context.WithCancelCause(context.Background())
			lane, handBack := context.WithCancelCause(context.WithValue(runCtx, runContextKey{}, runCtx))
			defer func() { cancelRun(nil); handBack(nil) }()
			commit := commitContext(lane)
			if tc.handBack {
				handBack(back)
			}
			if tc.cancelRun {
				cancelRun(cancel)
			}
			if got := handedBack(lane); got != tc.laneHandedBk {
				t.Errorf("handedBack(lane) = %v, want %v (cause %v)", got, tc.laneHandedBk, context.Cause(lane))
			}
			select {
			case <-commit.Done():
				if !tc.cancelRun {
					t.Fatalf("the commit was cut off: %v", context.Cause(commit))
				}
				if context.Cause(commit) != cancel {
					t.Errorf("the commit ended with %v, want the run's cause", context.Cause(commit))
				}
			case <-time.After(100 * time.Millisecond):
				if tc.cancelRun {
					t.Fatal("the run was cancelled, and its commit goes on")
				}
			}
		})
	}
	// A direct lane's context is its run's: the commit is cut with it.
	ctx, stop := context.WithCancel(context.Background())
	stop()
	if commitContext(ctx).Err() == nil {
		t.Error("a direct lane's commit outlives its run's cancel")
	}
}
