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
					ok, err := m.acquireLease(context.Background(), &Run{}, "run"+string(rune('a'+i)), key)
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

// A holder silent past LeaseTTL whose key another server took over finds out at its next
// renewal: its run is cancelled, and it neither renews nor deletes the new holder's lease.
func TestAHolderThatLostItsLeaseStops(t *testing.T) {
	root := t.TempDir()
	store, err := local.New(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewManager(Config{Store: store, Plugins: noPlugins{}, LeaseTTL: 60 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	const key = "chains/t/c/T/lost"
	ctx, cancel := context.WithCancelCause(context.Background())
	r := &Run{rec: Record{Key: key, RunID: "mine"}, cancel: cancel}
	if ok, err := m.acquireLease(context.Background(), r, "mine", key); !ok || err != nil {
		t.Fatalf("acquireLease = %v, %v", ok, err)
	}
	if err := m.renewLease(context.Background(), r, key, "mine"); err != nil {
		t.Fatalf("renewing its own lease: %v", err)
	}
	// Another server's lease in its place (as a takeover leaves it).
	theirs := []byte(`{"holder":"elsewhere/1/x","run_id":"theirs","heartbeat":"` + time.Now().UTC().Format(time.RFC3339Nano) + `"}`)
	if err := store.PutVolatile(key+"/"+LeaseName, theirs); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	beat := make(chan struct{})
	go func() { m.heartbeat(r, key, stop); close(beat) }()
	select {
	case <-beat: // it returned by itself: the lease was lost
	case <-time.After(5 * time.Second):
		close(stop)
		t.Fatal("the heartbeat went on renewing a lease another server holds")
	}
	if !r.leaseLost.Load() || context.Cause(ctx) == nil {
		t.Errorf("lost = %v, run cancelled with %v; want both", r.leaseLost.Load(), context.Cause(ctx))
	}
	m.releaseLease(r)
	if b, err := os.ReadFile(filepath.Join(root, key, LeaseName)); err != nil || string(b) != string(theirs) {
		t.Errorf("after the loser's release the lease is %q, %v; want the new holder's", b, err)
	}
}
