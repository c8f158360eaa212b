package local

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
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
// folder that was there already (a failed or crashed run of the key) is cleared of staged
// files older than StaleTmpAge, whose writers are gone, and of those of deadRun, a run whose
// server died ("" for none).
func (s *Store) MakeFolder(key, deadRun string) (string, error) {
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
		sweepStaged(dir, StaleTmpAge, deadRun)
		return dir, nil
	}
	return "", fmt.Errorf("making the folder of %s: %w", key, err)
}

// makeFolder makes dir, and its parents if they are missing: mkdir first, since the folder a
// staged file finds missing is most often a new key's, whose parent exists (os.MkdirAll
// would stat both before it made it).
func makeFolder(dir string) error {
	err := mkdir(dir)
	switch {
	case err == nil, errors.Is(err, syscall.EEXIST):
		return nil
	case errors.Is(err, syscall.ENOENT):
		return os.MkdirAll(dir, 0o755)
	}
	return &fs.PathError{Op: "mkdir", Path: dir, Err: err}
}

func mkdir(dir string) error {
	for {
		err := syscall.Mkdir(dir, 0o755)
		if err != syscall.EINTR {
			return err
		}
	}
}

// sweepStaged removes the staged files and folders in dir of deadRun, and those nothing has
// written to for longer than age (a staged artifact folder counts its newest file).
func sweepStaged(dir string, age time.Duration, deadRun string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, StagePrefix) {
			continue
		}
		p := filepath.Join(dir, name)
		if deadRun != "" && strings.HasPrefix(name, StagePrefix+deadRun+"-") || time.Since(newest(p)) > age {
			os.RemoveAll(p)
		}
	}
}

// newest is the latest modification time of p or, for a folder, of anything in it.
func newest(p string) time.Time {
	var t time.Time
	filepath.WalkDir(p, func(_ string, d fs.DirEntry, err error) error {
		if err == nil {
			if fi, err := d.Info(); err == nil && fi.ModTime().After(t) {
				t = fi.ModTime()
			}
		}
		return nil
	})
	return t
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

// replace moves the staged file src over dst, which readers see whole before and after. When
// dst exists, the two are swapped (renameat2 RENAME_EXCHANGE) and the old one, now at src, is
// unlinked: a plain rename over an existing file makes ext4 write the new file's data out
// before it returns (auto_da_alloc), 100-1000 µs here, which the volatile objects this serves
// (records, leases, metrics) do not want. A crash between the two calls leaves the old content
// under the staged name, which listings skip.
func replace(src, dst string) error {
	for {
		err := unix.Renameat2(unix.AT_FDCWD, src, unix.AT_FDCWD, dst, unix.RENAME_EXCHANGE)
		switch err {
		case nil:
			if err := syscall.Unlink(src); err != nil && err != syscall.ENOENT {
				return &fs.PathError{Op: "unlink", Path: src, Err: err}
			}
			return nil
		case syscall.EINTR:
			continue
		}
		// ENOENT: no dst yet; EINVAL, ENOSYS: a file system or kernel without the exchange.
		return Rename(src, dst)
	}
}

// Commit moves the staged file src to key: one rename when key's folder exists, as it does for
// a task whose folder MakeFolder made. A file staged on another file system than key's (the
// temporary folder, where a key's subtree is mounted from elsewhere) is copied, durably.
func (s *Store) Commit(src, key string) error {
	dst, err := s.path(key)
	if err != nil {
		return err
	}
	err = Rename(src, dst)
	if errors.Is(err, syscall.ENOENT) {
		if _, serr := os.Lstat(src); serr == nil { // the destination's folder is missing
			if err = makeFolder(filepath.Dir(dst)); err == nil {
				err = Rename(src, dst)
			}
		}
	}
	if errors.Is(err, syscall.EXDEV) {
		err = s.copyIn(key, src)
	}
	if err != nil {
		return fmt.Errorf("commit %s: %w", key, err)
	}
	return nil
}

// SyncAll makes everything written to the file system of the store's keys (its chains/
// folder) so far durable: one syncfs(2) however many files a batch of tasks wrote, instead of
// an fsync per file.
//
// A failure is final: the kernel reports a write error to one syncfs only, and the data it
// lost may belong to a file another batch is about to rename into place. So once a sync has
// failed, every later one fails too, and no out is committed until the server is restarted
// (after the disk is looked at): the choice PostgreSQL made after "fsyncgate".
func (s *Store) SyncAll() error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	if s.syncErr != nil {
		return s.syncErr
	}
	if s.syncFD < 0 {
		dir := filepath.Join(s.root, "chains")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("sync %s: %w", dir, err)
		}
		fd, err := open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("sync %s: %w", dir, err)
		}
		s.syncFD = fd
	}
	for {
		err := unix.Syncfs(s.syncFD)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			s.syncErr = fmt.Errorf("sync %s (no out is committed from now on; restart the server once the disk is sound): %w", s.root, err)
			return s.syncErr
		}
		return nil
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
		if err = replace(tmp, dst); err != nil {
			os.Remove(tmp)
		}
	}
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

// writers are WriteVolatile's buffers: a run writes its record several times, and 64 KB each
// time is garbage the collector would see on every run.
var writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 64<<10) }}

// WriteVolatile is PutVolatile of what write writes, through a 64 KB buffer.
func (s *Store) WriteVolatile(key string, write func(io.Writer) error) (targets.Info, error) {
	dst, err := s.path(key)
	if err != nil {
		return targets.Info{}, err
	}
	f, tmp, err := s.createBeside(dst, "")
	if err != nil {
		return targets.Info{}, fmt.Errorf("put %s: %w", key, err)
	}
	bw := writers.Get().(*bufio.Writer)
	bw.Reset(f)
	err = write(bw)
	if err == nil {
		err = bw.Flush()
	}
	bw.Reset(nil)
	writers.Put(bw)
	// The version renamed into place: the rename keeps the file's inode and time.
	var fi os.FileInfo
	if err == nil {
		fi, err = f.Stat()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = replace(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
		return targets.Info{}, fmt.Errorf("put %s: %w", key, err)
	}
	return infoOf(fi), nil
}

// createBeside creates a new file staged beside dst, named StagePrefix, this process, a
// sequence number, what, and dst's name; dst's folder is made if it is missing.
func (s *Store) createBeside(dst, what string) (f *os.File, tmp string, err error) {
	tmp = filepath.Join(filepath.Dir(dst), fmt.Sprintf("%s%d-%d-%s%s", StagePrefix, os.Getpid(), s.seq.Add(1), what, filepath.Base(dst)))
	f, err = openFile(tmp)
	if errors.Is(err, syscall.ENOENT) {
		if err = makeFolder(filepath.Dir(dst)); err == nil {
			f, err = openFile(tmp)
		}
	}
	return f, tmp, err
}

// openFile creates a new file for writing (O_EXCL), in two system calls.
func openFile(path string) (*os.File, error) {
	fd, err := open(path, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, &fs.PathError{Op: "create", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// stageBeside writes b to a new staged file in dst's folder (made if needed) and returns it.
func (s *Store) stageBeside(dst string, b []byte) (string, error) {
	tmp := filepath.Join(filepath.Dir(dst), fmt.Sprintf("%s%d-%d-%s", StagePrefix, os.Getpid(), s.seq.Add(1), filepath.Base(dst)))
	err := WriteNew(tmp, b)
	if errors.Is(err, syscall.ENOENT) {
		if err = makeFolder(filepath.Dir(dst)); err == nil {
			err = WriteNew(tmp, b)
		}
	}
	return tmp, err
}

var (
	_ targets.Folders  = (*Store)(nil)
	_ targets.Volatile = (*Store)(nil)
)
