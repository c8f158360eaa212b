package runs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// The spool is where tasks write before their files go to a remote store (S3, MinIO): the
// inputs downloaded for them, their outs and logs before upload, the plugins' output. The local
// store stages in its own folder instead (targets/local sweeps it). A spool folder is named
// after its process, nectar-spool-<pid namespace>-<pid>-<random>: the server removes its own
// at shutdown, and one killed (kill -9, a crash) leaves it behind, inputs of any size included,
// so every server, as it starts, removes those whose process is gone. The pid namespace keeps
// apart processes that share /tmp but not pids (containers of one pod): their pids say nothing
// about each other.

const spoolPrefix = "nectar-spool-"

// newSpool makes this process's spool folder in the system's temporary folder, and removes the
// spool folders of processes gone.
func newSpool() (string, error) {
	ns := pidNamespace()
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%s-%d-", spoolPrefix, ns, os.Getpid()))
	if err != nil {
		return "", err
	}
	sweepSpools(filepath.Dir(dir), ns)
	return dir, nil
}

// sweepSpools removes the spool folders in tmp of the processes of pid namespace ns that are
// gone. One it cannot judge (another namespace, a name of another form, a process alive or
// not ours to signal) stays; so do all when the namespace is unknown ("0": every process
// without /proc says so, whatever its namespace).
func sweepSpools(tmp, ns string) {
	if ns == "0" {
		return
	}
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), spoolPrefix+ns+"-")
		if !ok || !e.IsDir() {
			continue
		}
		digits, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(digits)
		if !ok || err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			continue // alive, or another user's
		}
		os.RemoveAll(filepath.Join(tmp, e.Name()))
	}
}

// pidNamespace is the inode of this process's pid namespace ("0" where it cannot be read).
func pidNamespace() string {
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/pid", &st); err != nil {
		return "0"
	}
	return strconv.FormatUint(st.Ino, 10)
}
