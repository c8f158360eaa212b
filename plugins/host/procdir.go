package host

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// The folders a process keeps in the system's temporary folder (a launcher's plugin sockets,
// a server's spool) are named after it, <prefix><pid namespace>-<pid>-<random>: the process
// removes its own as it stops, and one killed (kill -9, a crash) leaves it behind, so a
// process that makes one removes first those of the same prefix whose process is gone. The
// pid namespace keeps apart processes that share /tmp but not pids (containers of one pod):
// their pids say nothing about each other.

// ProcessTempDir makes this process's folder (0700) named after prefix in the system's
// temporary folder, and removes those of processes gone.
func ProcessTempDir(prefix string) (string, error) {
	ns := PIDNamespace()
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%s-%d-", prefix, ns, os.Getpid()))
	if err != nil {
		return "", err
	}
	SweepProcessDirs(filepath.Dir(dir), prefix, ns)
	return dir, nil
}

// SweepProcessDirs removes the folders in tmp named after prefix of the processes of pid
// namespace ns that are gone. One it cannot judge (another namespace, a name of another form,
// a process alive or not ours to signal) stays; so do all when the namespace is unknown ("0":
// every process without /proc says so, whatever its namespace).
func SweepProcessDirs(tmp, prefix, ns string) {
	if ns == "0" {
		return
	}
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), prefix+ns+"-")
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

// PIDNamespace is the inode of this process's pid namespace ("0" where it cannot be read).
func PIDNamespace() string {
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/pid", &st); err != nil {
		return "0"
	}
	return strconv.FormatUint(st.Ino, 10)
}
