package runs

import "nectar/plugins/host"

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
