package runs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"nectar/plugins/host"
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

// noTempDir is a store without a staging folder of its own (as S3 and MinIO are): the manager
// makes a spool.
type noTempDir struct{ targets.Store }

// A manager whose store has no staging folder makes its spool in the system's temporary folder,
// named after its process, sweeps those of processes gone as it starts, and removes its own.
func TestAManagersSpoolIsItsOwn(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	stale := filepath.Join(tmp, fmt.Sprintf("%s%s-%d-1", spoolPrefix, host.PIDNamespace(), deadPid(t)))
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
	if dir, base := filepath.Dir(m.spool), filepath.Base(m.spool); dir != tmp || !strings.HasPrefix(base, fmt.Sprintf("%s%s-%d-", spoolPrefix, host.PIDNamespace(), os.Getpid())) {
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
