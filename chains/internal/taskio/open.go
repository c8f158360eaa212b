package taskio

import (
	"os"
	"syscall"
)

// OpenFile opens a task's file (its out, log or an input) in two system calls: os.OpenFile
// takes four more (it makes the file non-blocking to offer it to the poller, which refuses
// regular files, and back), per file and task, thousands of times in a big fan-in. A file it
// creates is 0600.
func OpenFile(path string, flag int) (*os.File, error) {
	for {
		fd, err := syscall.Open(path, flag|syscall.O_CLOEXEC, 0o600)
		if err == nil {
			return os.NewFile(uintptr(fd), path), nil
		}
		if err != syscall.EINTR {
			return nil, &os.PathError{Op: "open", Path: path, Err: err}
		}
	}
}
