package host

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// A folder named after its process goes when that process is gone, and only then: one of a
// live process, of this one, of another pid namespace (whose pids say nothing here), of another
// prefix, of another form, or not a folder stays. A launcher's socket folder is such a folder:
// the next launcher sweeps the one a killed server left.
func TestFoldersOfProcessesGoneAreSwept(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	ns := PIDNamespace()
	if ns == "0" {
		t.Fatal("no /proc/self/ns/pid: the sweep judges nothing here")
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	live := exec.Command("sleep", "30")
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { live.Process.Kill(); live.Wait() })
	gonePid, livePid := dead.Process.Pid, live.Process.Pid
	tests := []struct {
		name      string
		dir, gone bool
	}{
		{name: fmt.Sprintf("%s%s-%d-123", SocketPrefix, ns, gonePid), dir: true, gone: true},
		{name: fmt.Sprintf("%s%s-%d-456", SocketPrefix, ns, livePid), dir: true},
		{name: fmt.Sprintf("%s%s-%d-789", SocketPrefix, ns, os.Getpid()), dir: true},
		{name: fmt.Sprintf("%s1%s-%d-123", SocketPrefix, ns, gonePid), dir: true}, // another namespace
		{name: fmt.Sprintf("nectar-spool-%s-%d-1", ns, gonePid), dir: true},       // another prefix: its own sweep
		{name: fmt.Sprintf("%s%d", SocketPrefix, gonePid), dir: true},             // the old form: no owner known
		{name: fmt.Sprintf("%s%s-%d-file", SocketPrefix, ns, gonePid)},            // not a folder
		{name: fmt.Sprintf("%s%s-1-1", SocketPrefix, ns), dir: true},              // init: alive, and not ours to signal unless root
	}
	for _, tt := range tests {
		p := filepath.Join(tmp, tt.name)
		if tt.dir {
			if err := os.MkdirAll(filepath.Join(p, "sub"), 0o700); err != nil {
				t.Fatal(err)
			}
		} else if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	SweepProcessDirs(tmp, SocketPrefix, "0") // an unknown namespace judges nothing
	if _, err := os.Stat(filepath.Join(tmp, tests[0].name)); err != nil {
		t.Fatalf("a sweep without a known pid namespace removed a folder (%v)", err)
	}
	l, err := NewLauncher(t.TempDir(), nil) // sweeps as it makes its own
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		_, err := os.Stat(filepath.Join(tmp, tt.name))
		if gone := os.IsNotExist(err); gone != tt.gone {
			t.Errorf("%s: removed %v, want %v", tt.name, gone, tt.gone)
		}
	}
	named, _ := filepath.Match(fmt.Sprintf("%s%s-%d-*", SocketPrefix, ns, os.Getpid()), filepath.Base(l.SocketDir()))
	if filepath.Dir(l.SocketDir()) != tmp || !named {
		t.Errorf("socket folder %s, want %s/%s%s-%d-…", l.SocketDir(), tmp, SocketPrefix, ns, os.Getpid())
	}
	if fi, err := os.Stat(l.SocketDir()); err != nil {
		t.Error(err)
	} else if fi.Mode().Perm() != 0o700 {
		t.Errorf("socket folder mode %v, want a private folder (0700)", fi.Mode().Perm())
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(l.SocketDir()); !os.IsNotExist(err) {
		t.Errorf("Close left its socket folder: %v", err)
	}
}
