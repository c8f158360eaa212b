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
	fd, err := retryEINTR(func() (int, error) { return syscall.Open(path, flag|syscall.O_CLOEXEC, 0o600) })
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// ReadFile reads a whole file, an input of a task, in four system calls (open, fstat, one read,
// close) where os.ReadFile takes six: no *os.File (whose making asks for the file's flags), and
// no read to find the end once the size the file stated is read. A join reads thousands of
// inputs. An input is an out, whole when committed and never changed after; a file that states
// no size (a pipe, /proc) is read to its end.
func ReadFile(path string) ([]byte, error) {
	fd, err := retryEINTR(func() (int, error) { return syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0) })
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	const minRead = 512
	size := max(int(st.Size), 0)
	b := make([]byte, 0, max(size+1, minRead))
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // grow
		}
		n, err := retryEINTR(func() (int, error) { return syscall.Read(fd, b[len(b):cap(b)]) })
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		b = b[:len(b)+n]
		if n == 0 || (size > 0 && len(b) == size) {
			return b, nil
		}
	}
}

// retryEINTR calls call again while a signal interrupts it.
func retryEINTR(call func() (int, error)) (int, error) {
	for {
		n, err := call()
		if err != syscall.EINTR {
			return n, err
		}
	}
}
