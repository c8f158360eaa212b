package runs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"nectar/targets"
	"nectar/targets/local"
)

// deadPid is the pid of a process that has exited and been reaped.
func deadPid(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

// A spool folder goes when its process is gone, and only then: one of a live process, of this
// one, of another pid namespace (whose pids say nothing here), or not named as a spool stays.
func TestSpoolsOfProcessesGoneAreSwept(t *testing.T) {
	tmp := t.TempDir()
	ns := pidNamespace()
	live := exec.Command("sleep", "30")
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { live.Process.Kill(); live.Wait() })
	dead := deadPid(t)
	for _, tc := range []struct {
		name string
		dir  bool
		gone bool
	}{
		{name: fmt.Sprintf("%s%s-%d-123", spoolPrefix, ns, dead), dir: true, gone: true},
		{name: fmt.Sprintf("%s%s-%d-456", spoolPrefix, ns, live.Process.Pid), dir: true},
		{name: fmt.Sprintf("%s%s-%d-789", spoolPrefix, ns, os.Getpid()), dir: true},
		{name: fmt.Sprintf("%s1%s-%d-123", spoolPrefix, ns, dead), dir: true}, // another namespace
		{name: fmt.Sprintf("%s%d", spoolPrefix, dead), dir: true},             // the old form: no owner known
		{name: fmt.Sprintf("%s%s-%d-file", spoolPrefix, ns, dead)},            // not a folder
		{name: fmt.Sprintf("nectar-sock-%s-%d-1", ns, dead), dir: true},
		{name: fmt.Sprintf("%s%s-1-1", spoolPrefix, ns), dir: true}, // init: alive, and not ours to signal unless root
	} {
		p := filepath.Join(tmp, tc.name)
		if tc.dir {
			if err := os.MkdirAll(filepath.Join(p, "inputs"), 0o700); err != nil {
				t.Fatal(err)
			}
		} else if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		defer func() {
			_, err := os.Stat(p)
			if gone := os.IsNotExist(err); gone != tc.gone {
				t.Errorf("%s: removed %v; want %v", tc.name, gone, tc.gone)
			}
		}()
	}
	sweepSpools(tmp, "0") // an unknown namespace judges nothing
	if _, err := os.Stat(filepath.Join(tmp, fmt.Sprintf("%s%s-%d-123", spoolPrefix, ns, dead))); err != nil {
		t.Fatalf("a sweep without a known pid namespace removed a spool (%v)", err)
	}
	sweepSpools(tmp, ns)
}

// noTempDir is a store without a staging folder of its own (as S3 and MinIO are): the manager
// makes a spool.
type noTempDir struct{ targets.Store }

// A manager whose store has no staging folder makes its spool in the system's temporary folder,
// named after its process, sweeps those of processes gone as it starts, and removes its own.
func TestAManagersSpoolIsItsOwn(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	stale := filepath.Join(tmp, fmt.Sprintf("%s%s-%d-1", spoolPrefix, pidNamespace(), deadPid(t)))
	if err := os.MkdirAll(filepath.Join(stale, "task-x"), 0o700); err != nil {
		t.Fatal(err)
	}
	store, err := local.New(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewManager(Config{Store: noTempDir{store}, Plugins: newFakePlugins(fakeChain{{name: "Root"}}, nil), TaskParallelism: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("the spool of a process gone is still there (%v)", err)
	}
	if dir, base := filepath.Dir(m.spool), filepath.Base(m.spool); dir != tmp || !strings.HasPrefix(base, fmt.Sprintf("%s%s-%d-", spoolPrefix, pidNamespace(), os.Getpid())) {
		t.Errorf("spool %s; want one in %s named after this process", m.spool, tmp)
	}
	if err := m.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	m.RemoveSpool()
	if _, err := os.Stat(m.spool); !os.IsNotExist(err) {
		t.Errorf("the manager's spool is still there after RemoveSpool (%v)", err)
	}
}
