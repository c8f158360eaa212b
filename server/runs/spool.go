package runs

import (
	"os"
	"path/filepath"
	"strings"

	"nectar/plugins/host"
)

// The spool is where tasks write before their files go to a remote store (S3, MinIO): the
// inputs downloaded for them, their outs and logs before upload, the plugins' output. The local
// store stages in its own folder instead (targets/local sweeps it). A spool folder is named
// after its process (host.ProcessTempDir): the server removes its own at shutdown, and one
// killed (kill -9, a crash) leaves it behind, inputs of any size included, so every server, as
// it starts, removes those whose process is gone.

const spoolPrefix = "nectar-spool-"

// newSpool makes this process's spool folder in the system's temporary folder, and removes the
// spool folders of processes gone.
func newSpool() (string, error) { return host.ProcessTempDir(spoolPrefix) }

// sweepSpoolOf removes what a dead run (its server died mid-run) left in a spool this manager
// shares with other processes: the local store's temporary folder, where the outs of small
// runs are staged (commit.go, stagesOutInSpool). A spool of the manager's own went with its
// process. The key folders' staged files go as each task's folder is made (MakeFolder).
func (m *Manager) sweepSpoolOf(deadRun string) {
	if m.ownSpool {
		return
	}
	entries, _ := os.ReadDir(m.spool)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), taskFilesPrefix+deadRun+"-") {
			os.RemoveAll(filepath.Join(m.spool, e.Name()))
		}
	}
}

// taskFilesPrefix begins the names of a run's task files in the spool: taskFilesPrefix + the
// run's id + "-".
const taskFilesPrefix = "task-"
