package runs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"nectar/chains"
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

// An out is staged in the store's temporary folder only for tasks that end well before a
// starting store sweeps that folder's old files: a live task's out is never swept.
func TestSpoolStagedOutsOutliveNoLiveTask(t *testing.T) {
	if 2*spoolStageMax > local.StaleTmpAge {
		t.Errorf("outs of tasks running up to %s are staged in the temporary folder, which a starting store sweeps of files older than %s", spoolStageMax, local.StaleTmpAge)
	}
	m := &Manager{cfg: Config{TaskTimeout: time.Hour}}
	l := &lane{m: m, spoolPrefix: filepath.Join(t.TempDir(), taskFilesPrefix+"run")}
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		job  taskJob
		want bool
	}{
		{"a small run's task, the default timeout", taskJob{}, true},
		{"a big run's task: synced by the lane", taskJob{NoSync: true}, false},
		{"a task that may run a day", taskJob{Timeout: 24 * time.Hour}, false},
		{"a task whose retries wait 7 hours", taskJob{Retry: chains.RetryPolicy{Attempts: 2, Backoff: 7 * time.Hour}}, true},
	} {
		if got := l.stagesOutInSpool(&tc.job, dir); got != tc.want {
			t.Errorf("%s: staged in the spool = %v, want %v", tc.name, got, tc.want)
		}
	}
	// A spool on another file system than the keys' (tmpfs here): beside the key, where the
	// commit is a rename.
	shm, err := os.MkdirTemp("/dev/shm", "nectar-spool-") // tmpfs, as Debian mounts it
	if err != nil {
		t.Fatalf("a folder on another file system: %v", err)
	}
	defer os.RemoveAll(shm)
	if a, _ := os.Stat(shm); a != nil {
		if b, _ := os.Stat(dir); b != nil && sameDevice(a, b) {
			t.Fatalf("/dev/shm and %s are one file system here: this test needs two", dir)
		}
	}
	far := &lane{m: m, spoolPrefix: filepath.Join(shm, taskFilesPrefix+"run")}
	if far.stagesOutInSpool(&taskJob{}, dir) {
		t.Errorf("an out is staged in a spool on another file system (%s) than its key's folder (%s)", shm, dir)
	}
}
