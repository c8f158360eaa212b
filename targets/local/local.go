// Package local is the default store: a folder on this machine (./local_targets). Objects are
// files under the root at their key; writes go to <root>/.tmp first and are renamed into place,
// so a reader never sees a partial object, even after a crash.
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"nectar/targets"
)

// URLSigner makes a download URL for key that the server will honour until expiry.
type URLSigner func(key string, expiry time.Duration) string

// Store is a folder.
type Store struct {
	root   string
	tmp    string
	signer URLSigner

	seq     atomic.Int64 // names PutVolatile's staged files apart
	syncMu  sync.Mutex
	syncFD  int   // the handle SyncAll passes to syncfs (-1 until opened)
	syncErr error // a sync that failed: every later one fails too
}

// TmpDirName is the folder under the root that holds uncommitted files; it is not a key space.
const TmpDirName = ".tmp"

// New opens (creating if needed) the folder root. signer may be nil when no URLs are needed.
func New(root string, signer URLSigner) (*Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("local target %s: %w", root, err)
	}
	tmp := filepath.Join(abs, TmpDirName)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("local target %s: %w", abs, err)
	}
	sweep(tmp, StaleTmpAge)
	return &Store{root: abs, tmp: tmp, signer: signer, syncFD: -1}, nil
}

// StaleTmpAge is how old a staging file must be before a starting store removes it: such
// files were left by a server that died mid-write. Younger ones may belong to a live server
// sharing the folder.
const StaleTmpAge = 24 * time.Hour

func sweep(dir string, age time.Duration) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > age {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}

func (s *Store) String() string { return "local folder " + s.root }

// Root is the folder the store lives in.
func (s *Store) Root() string { return s.root }

// TempDir is where callers may stage files for CommitFile (same file system, so rename works).
func (s *Store) TempDir() string { return s.tmp }

func (s *Store) path(key string) (string, error) {
	if err := targets.CheckKey(key); err != nil {
		return "", err
	}
	if key == TmpDirName || strings.HasPrefix(key, TmpDirName+"/") {
		return "", fmt.Errorf("%w: %q is reserved", targets.ErrBadKey, key)
	}
	return filepath.Join(s.root, filepath.FromSlash(key)), nil
}

// LocalPath is the file that holds key.
func (s *Store) LocalPath(key string) (string, error) { return s.path(key) }

func (s *Store) Put(_ context.Context, key string, r io.Reader) error {
	dst, err := s.path(key)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(s.tmp, "put-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = s.rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

// CreateIfAbsent links a finished file to key: link(2) fails if key exists, so exactly one of
// any number of concurrent creators wins, across processes too. It is meant for markers (run
// leases) and does not wait for the disk: after a power loss the marker may be empty, which
// its readers take as absent.
func (s *Store) CreateIfAbsent(_ context.Context, key string, r io.Reader) error {
	dst, err := s.path(key)
	if err != nil {
		return err
	}
	b, err := targets.ReadSmall(key, r)
	if err != nil {
		return err
	}
	tmp, err := s.stageBeside(dst, b)
	if err != nil {
		return fmt.Errorf("create %s: %w", key, err)
	}
	err = link(tmp, dst)
	syscall.Unlink(tmp)
	switch {
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("%s: %w", key, targets.ErrExist)
	case err != nil:
		return fmt.Errorf("create %s: %w", key, err)
	}
	return nil
}

func link(src, dst string) error {
	for {
		err := syscall.Link(src, dst)
		if err != syscall.EINTR {
			if err != nil {
				return &os.LinkError{Op: "link", Old: src, New: dst, Err: err}
			}
			return nil
		}
	}
}

// CommitFile moves a finished file (which must be under TempDir) to key in one rename.
func (s *Store) CommitFile(_ context.Context, key, file string) error {
	dst, err := s.path(key)
	if err != nil {
		return err
	}
	err = s.rename(file, dst)
	if errors.Is(err, syscall.EXDEV) { // another file system: copy (durably) instead
		err = s.copyIn(key, file)
	}
	if err != nil {
		return fmt.Errorf("commit %s: %w", key, err)
	}
	return nil
}

// copyIn moves file to key across file systems: a copy staged beside key (on key's file
// system, whatever the temporary folder's), made durable, renamed into place; then file is
// removed.
func (s *Store) copyIn(key, file string) error {
	dst, err := s.path(key)
	if err != nil {
		return err
	}
	src, err := os.Open(file)
	if err != nil {
		return err
	}
	defer src.Close()
	f, tmp, err := s.createBeside(dst, "copy-")
	if err != nil {
		return err
	}
	_, err = io.Copy(f, src)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	os.Remove(file)
	return nil
}

func (s *Store) rename(src, dst string) error {
	err := os.Rename(src, dst)
	if errors.Is(err, fs.ErrNotExist) {
		if err := makeFolder(filepath.Dir(dst)); err != nil {
			return err
		}
		err = os.Rename(src, dst)
	}
	return err
}

func (s *Store) Get(_ context.Context, key string) (io.ReadCloser, error) {
	p, err := s.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, mapErr(key, err)
	}
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		f.Close()
		return nil, fmt.Errorf("%s: %w", key, targets.ErrNotExist)
	}
	return f, nil
}

func (s *Store) Stat(_ context.Context, key string) (targets.Info, error) {
	p, err := s.path(key)
	if err != nil {
		return targets.Info{}, err
	}
	// The system call itself, into a Stat_t here: every status read and every task's check
	// of its out stats, and os.Stat allocated a FileInfo for each.
	var st syscall.Stat_t
	for {
		err = syscall.Stat(p, &st)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		return targets.Info{}, mapErr(key, &fs.PathError{Op: "stat", Path: p, Err: err})
	}
	if st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		return targets.Info{}, fmt.Errorf("%s: %w", key, targets.ErrNotExist)
	}
	mtime := time.Unix(st.Mtim.Unix())
	return targets.Info{Size: st.Size, ModTime: mtime, ETag: versionTag(st.Ino, mtime)}, nil
}

// infoOf is the version of an object that fi describes.
func infoOf(fi os.FileInfo) targets.Info {
	return targets.Info{Size: fi.Size(), ModTime: fi.ModTime(), ETag: fileTag(fi)}
}

// fileTag names a version of a local object: every write makes a new file (staged, then
// renamed or swapped into place), so the inode tells versions apart where the modification
// time cannot (it moves in clock ticks of a few milliseconds).
func fileTag(fi os.FileInfo) string {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return versionTag(st.Ino, fi.ModTime())
	}
	return ""
}

// versionTag is fileTag of the file with inode ino, modified at mtime.
func versionTag(ino uint64, mtime time.Time) string {
	var b [32]byte
	t := strconv.AppendUint(b[:0], ino, 36)
	t = append(t, '-')
	return string(strconv.AppendInt(t, mtime.UnixNano(), 36))
}

// ReplaceIf swaps b in at key while holding a lock on the file it replaces, if that file is
// still the version seen and still at key: a second taker that opened the same file gets the
// lock only after the swap, and then finds another file at key.
func (s *Store) ReplaceIf(_ context.Context, key string, seen targets.Info, b []byte) (targets.Info, error) {
	dst, err := s.path(key)
	if err != nil {
		return targets.Info{}, err
	}
	f, err := os.Open(dst)
	if errors.Is(err, fs.ErrNotExist) {
		return targets.Info{}, fmt.Errorf("%s: %w", key, targets.ErrChanged)
	}
	if err != nil {
		return targets.Info{}, fmt.Errorf("replace %s: %w", key, err)
	}
	defer f.Close() // releases the lock
	if err := flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return targets.Info{}, fmt.Errorf("replace %s: lock: %w", key, err)
	}
	held, err := f.Stat()
	if err != nil {
		return targets.Info{}, fmt.Errorf("replace %s: %w", key, err)
	}
	now, err := os.Stat(dst)
	if err != nil || !os.SameFile(held, now) || fileTag(held) != seen.ETag || held.Size() != seen.Size {
		return targets.Info{}, fmt.Errorf("%s: %w", key, targets.ErrChanged)
	}
	tmp, err := s.stageBeside(dst, b)
	var written os.FileInfo
	if err == nil {
		if written, err = os.Stat(tmp); err == nil { // the same file once renamed
			err = Rename(tmp, dst)
		}
		if err != nil {
			os.Remove(tmp)
		}
	}
	if err != nil {
		return targets.Info{}, fmt.Errorf("replace %s: %w", key, err)
	}
	return infoOf(written), nil
}

func flock(fd, how int) error {
	for {
		if err := syscall.Flock(fd, how); err != syscall.EINTR {
			return err
		}
	}
}

func (s *Store) Delete(_ context.Context, key string) error {
	p, err := s.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

func (s *Store) List(_ context.Context, prefix string) ([]string, error) {
	var keys []string
	err := filepath.WalkDir(s.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(s.root, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel == TmpDirName || strings.HasPrefix(d.Name(), StagePrefix) { // not keys
				return filepath.SkipDir
			}
			// Skip folders that cannot hold a key with this prefix.
			if rel != "." && !strings.HasPrefix(rel+"/", prefix) && !strings.HasPrefix(prefix, rel+"/") {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasPrefix(rel, prefix) && !strings.HasPrefix(d.Name(), StagePrefix) {
			keys = append(keys, rel)
		}
		return nil
	})
	sort.Strings(keys)
	return keys, err
}

// PresignGet returns a URL the server signs and serves itself.
func (s *Store) PresignGet(_ context.Context, key string, expiry time.Duration) (string, error) {
	if s.signer == nil {
		return "", errors.New("local target has no URL signer")
	}
	if err := targets.CheckKey(key); err != nil {
		return "", err
	}
	return s.signer(key, expiry), nil
}

func mapErr(key string, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscallENOTDIR) {
		return fmt.Errorf("%s: %w", key, targets.ErrNotExist)
	}
	return fmt.Errorf("%s: %w", key, err)
}
