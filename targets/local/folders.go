package local

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"nectar/targets"
)

// The run scheduler's path for a task's files, offered as targets.Folders. Every call here is
// the fewest system calls that keep the store's guarantees (a reader sees a whole object or
// none), because a big fan-in makes them per task thousands of times a second: raw syscalls
// rather than os helpers, which add an lstat to a rename, a stat to a mkdir, and register
// every file with the poller.

// StagePrefix begins the names of files staged beside their final place; List skips them.
const StagePrefix = targets.StagePrefix

// MakeFolder creates key's folder, and its parents when it is the first key of its task. A
// folder that was there (a run's own key, a failed or crashed run of the key) is cleared, in
// the background, of staged files older than StaleTmpAge: their writers are gone.
func (s *Store) MakeFolder(key string) (string, error) {
	dir, err := s.path(key)
	if err != nil {
		return "", err
	}
	err = mkdir(dir)
	if errors.Is(err, syscall.ENOENT) {
		if err = os.MkdirAll(filepath.Dir(dir), 0o755); err == nil {
			err = mkdir(dir)
		}
	}
	switch {
	case err == nil:
		return dir, nil
	case errors.Is(err, syscall.EEXIST):
		// Off the caller's path: a run's own key folder always exists by now, and only what
		// a crash left a day ago goes.
		go sweepStaged(dir, StaleTmpAge)
		return dir, nil
	}
	return "", fmt.Errorf("making the folder of %s: %w", key, err)
}

func mkdir(dir string) error {
	for {
		err := syscall.Mkdir(dir, 0o755)
		if err != syscall.EINTR {
			return err
		}
	}
}

// sweepStaged removes the staged files in dir that are older than age.
func sweepStaged(dir string, age time.Duration) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), StagePrefix) {
			continue
		}
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > age {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}

// WriteNew writes b to a file that must not exist yet (O_EXCL) in three system calls. Callers
// give it a staged name and rename the file into place.
func WriteNew(path string, b []byte) error {
	fd, err := open(path, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_CLOEXEC, 0o644)
	if err != nil {
		return &fs.PathError{Op: "create", Path: path, Err: err}
	}
	for len(b) > 0 && err == nil {
		var n int
		n, err = syscall.Write(fd, b)
		if err == syscall.EINTR {
			err = nil
			continue
		}
		b = b[n:]
	}
	if cerr := syscall.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		return &fs.PathError{Op: "write", Path: path, Err: err}
	}
	return nil
}

func open(path string, flag int, perm uint32) (int, error) {
	for {
		fd, err := syscall.Open(path, flag, perm)
		if err != syscall.EINTR {
			return fd, err
		}
	}
}

// Rename moves a staged file into place in one rename(2), without os.Rename's lstat of the
// destination (a staged file never replaces a folder).
func Rename(src, dst string) error {
	for {
		err := syscall.Rename(src, dst)
		if err == nil {
			return nil
		}
		if err != syscall.EINTR {
			return &os.LinkError{Op: "rename", Old: src, New: dst, Err: err}
		}
	}
}

// Commit moves the staged file src to key: one rename when key's folder exists, as it does for
// a task whose folder MakeFolder made.
func (s *Store) Commit(src, key string) error {
	dst, err := s.path(key)
	if err != nil {
		return err
	}
	err = Rename(src, dst)
	if errors.Is(err, syscall.ENOENT) {
		if _, serr := os.Lstat(src); serr == nil { // the destination's folder is missing
			if err = os.MkdirAll(filepath.Dir(dst), 0o755); err == nil {
				err = Rename(src, dst)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("commit %s: %w", key, err)
	}
	return nil
}

// SyncAll makes everything written to the store's file system so far durable: one syncfs(2)
// however many files a batch of tasks wrote, instead of an fsync per file.
func (s *Store) SyncAll() error {
	s.syncOnce.Do(func() {
		s.rootFD, s.rootErr = open(s.root, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	})
	if s.rootErr != nil {
		return fmt.Errorf("sync %s: %w", s.root, s.rootErr)
	}
	for {
		err := unix.Syncfs(s.rootFD)
		if err != unix.EINTR {
			if err != nil {
				return fmt.Errorf("sync %s: %w", s.root, err)
			}
			return nil
		}
	}
}

// PutVolatile stores b under key atomically (a reader sees all of it or the previous object)
// without waiting for the disk: for derived objects that are rewritten often (run records,
// leases, metrics). After a power loss such an object may be empty, never partial; readers of
// these objects treat an empty one as absent.
func (s *Store) PutVolatile(key string, b []byte) error {
	dst, err := s.path(key)
	if err != nil {
		return err
	}
	tmp, err := s.stageBeside(dst, b)
	if err == nil {
		if err = Rename(tmp, dst); err != nil {
			os.Remove(tmp)
		}
	}
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

// stageBeside writes b to a new staged file in dst's folder (made if needed) and returns it.
func (s *Store) stageBeside(dst string, b []byte) (string, error) {
	tmp := filepath.Join(filepath.Dir(dst), fmt.Sprintf("%s%d-%d-%s", StagePrefix, os.Getpid(), s.seq.Add(1), filepath.Base(dst)))
	err := WriteNew(tmp, b)
	if errors.Is(err, syscall.ENOENT) {
		if err = os.MkdirAll(filepath.Dir(dst), 0o755); err == nil {
			err = WriteNew(tmp, b)
		}
	}
	return tmp, err
}

var (
	_ targets.Folders  = (*Store)(nil)
	_ targets.Volatile = (*Store)(nil)
)
