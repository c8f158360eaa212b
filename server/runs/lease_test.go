package runs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"nectar/targets/local"
)

// noPlugins is a Starter for tests that run no task.
type noPlugins struct{}

func (noPlugins) Start(string, *os.File) (Process, error) { return nil, errors.New("no plugins here") }
func (noPlugins) Current(string, Process) bool            { return false }

// A lease whose holder is gone (empty after a power loss, or stale) is taken over by exactly one
// of the servers that race for it, however many; a live one by none.
func TestOneServerTakesOverADeadLease(t *testing.T) {
	root := t.TempDir()
	store, err := local.New(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	const servers = 8
	managers := make([]*Manager, servers)
	for i := range managers {
		if managers[i], err = NewManager(Config{Store: store, Plugins: noPlugins{}, LeaseTTL: time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
	deadHolder := `{"holder":"elsewhere/1/dead","run_id":"r0","heartbeat":"` + time.Now().Add(-time.Hour).UTC().Format(time.RFC3339Nano) + `"}`
	liveHolder := `{"holder":"elsewhere/1/live","run_id":"r0","heartbeat":"` + time.Now().UTC().Format(time.RFC3339Nano) + `"}`
	for _, tc := range []struct {
		name, lease string
		winners     int
	}{
		{"empty", "", 1},
		{"stale", deadHolder, 1},
		{"live", liveHolder, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := "chains/t/c/T/" + tc.name
			if err := os.MkdirAll(filepath.Join(root, key), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, key, LeaseName), []byte(tc.lease), 0o644); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			var mu sync.Mutex
			held := 0
			start := make(chan struct{})
			for i, m := range managers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					ok, err := m.acquireLease(context.Background(), "run"+string(rune('a'+i)), key)
					if err != nil {
						t.Errorf("server %d: %v", i, err)
					}
					if ok {
						mu.Lock()
						held++
						mu.Unlock()
					}
				}()
			}
			close(start)
			wg.Wait()
			if held != tc.winners {
				t.Errorf("%d servers raced for a %s lease: %d took it, want %d", servers, tc.name, held, tc.winners)
			}
		})
	}
}
