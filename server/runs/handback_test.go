package runs

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// A task's commit outlives a hand-back of its worker (its code has returned: the files go to
// the store whole), not a cancel of its run.
func TestACommitOutlivesAHandBackNotACancel(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cause  error
		cutOff bool
	}{
		{"the worker hands its tasks back", fmt.Errorf("worker w stopped: %w", errHandedBack), false},
		{"the run is cancelled", errors.New("cancelled by DELETE"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lane, cancel := context.WithCancelCause(context.Background())
			commit, stop := commitContext(lane)
			defer stop()
			cancel(tc.cause)
			if got := handedBack(lane); got == tc.cutOff {
				t.Errorf("handedBack = %v for cause %q", got, tc.cause)
			}
			select {
			case <-commit.Done():
				if !tc.cutOff {
					t.Fatalf("the commit was cut off: %v", context.Cause(commit))
				}
				if context.Cause(commit) != tc.cause {
					t.Errorf("the commit ended with %v, want the run's cause %v", context.Cause(commit), tc.cause)
				}
			case <-time.After(200 * time.Millisecond):
				if tc.cutOff {
					t.Fatal("the run was cancelled, and its commit goes on")
				}
			}
		})
	}
}
