package local_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"nectar/targets"
	"nectar/targets/local"
	"nectar/targets/targettest"
)

func TestConformance(t *testing.T) {
	// The local store's URLs are served by the Nectar server; server tests download them.
	targettest.Download = nil
	s, err := local.New(t.TempDir(), func(key string, _ time.Duration) string { return "http://nectar.test/api/download/" + key })
	if err != nil {
		t.Fatal(err)
	}
	targettest.Run(t, s)
}

func TestLargePutStreamsWithBoundedMemory(t *testing.T) {
	s, err := local.New(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	targettest.LargePut(t, s, 96<<20)
	targettest.LargeCommit(t, s, 96<<20)
}

// Staging files a dead server left behind are swept at start once they are old enough.
func TestStartSweepsStaleStagingFiles(t *testing.T) {
	root := t.TempDir()
	if _, err := local.New(root, nil); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(root, local.TmpDirName, "plugin-output-123")
	fresh := filepath.Join(root, local.TmpDirName, "plugin-output-456")
	for _, f := range []string{old, fresh} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-local.StaleTmpAge - time.Hour)
	os.Chtimes(old, past, past)
	if _, err := local.New(root, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("a day-old staging file survived the start")
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("a fresh staging file (maybe another server's) was removed")
	}
}

// A record, lease or metrics object rewritten in place (PutVolatile, WriteVolatile: swapped
// with its new version, then the old one unlinked) is always there whole for a reader, and
// leaves no staged file behind.
func TestVolatileRewritesAreWholeForReaders(t *testing.T) {
	root := t.TempDir()
	s, err := local.New(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	versions := []string{strings.Repeat("a", 10), strings.Repeat("b", 5000), strings.Repeat("c", 100_000)}
	const key = "chains/t/c/T/0123/run"
	if err := s.PutVolatile(key, []byte(versions[0])); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var mu sync.Mutex
	var bad []string
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				b, err := os.ReadFile(filepath.Join(root, key))
				if err != nil || !slices.Contains(versions, string(b)) {
					mu.Lock()
					bad = append(bad, fmt.Sprintf("%d bytes, %v", len(b), err))
					mu.Unlock()
				}
			}
		}()
	}
	for i := range 300 {
		v := versions[i%len(versions)]
		if i%2 == 0 {
			err = s.PutVolatile(key, []byte(v))
		} else {
			var wrote targets.Info
			wrote, err = s.WriteVolatile(key, func(w io.Writer) error { _, err := io.WriteString(w, v); return err })
			if err == nil { // the version it says it stored is the one a reader finds
				if now, serr := s.Stat(context.Background(), key); serr != nil || !reflect.DeepEqual(now, wrote) {
					t.Fatalf("WriteVolatile says it stored %+v; Stat finds %+v (%v)", wrote, now, serr)
				}
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("readers saw %d objects that were not a whole version, e.g. %s", len(bad), bad[0])
	}
	entries, _ := os.ReadDir(filepath.Dir(filepath.Join(root, key)))
	if len(entries) != 1 || entries[0].Name() != "run" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("the folder holds %v, want only run", names)
	}
}

// A file staged on another file system than its key's (chains/ mounted from elsewhere, a
// symlink here) commits by a durable copy staged beside the key: rename(2) cannot move it
// there, nor from the temporary folder.
func TestCommitAcrossFileSystemsCopies(t *testing.T) {
	root := t.TempDir()
	elsewhere, err := os.MkdirTemp("/dev/shm", "nectar-chains-") // tmpfs, as Debian mounts it
	if err != nil {
		t.Fatalf("a folder on another file system: %v", err)
	}
	defer os.RemoveAll(elsewhere)
	if devOf(t, elsewhere) == devOf(t, root) {
		t.Fatalf("/dev/shm and %s are one file system here: this test needs two", root)
	}
	if err := os.Symlink(elsewhere, filepath.Join(root, "chains")); err != nil {
		t.Fatal(err)
	}
	s, err := local.New(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	staged := filepath.Join(s.TempDir(), "task-run-0-s1-d1-out")
	if err := os.WriteFile(staged, []byte("made elsewhere"), 0o644); err != nil {
		t.Fatal(err)
	}
	key := "chains/t/c/Task/0123/out"
	if _, err := s.MakeFolder("chains/t/c/Task/0123", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(staged, key); err != nil {
		t.Fatalf("Commit across file systems: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(elsewhere, "t/c/Task/0123/out")); err != nil || string(b) != "made elsewhere" {
		t.Errorf("the committed out = %q, %v", b, err)
	}
	if _, err := os.Stat(staged); !os.IsNotExist(err) {
		t.Errorf("the staged file is still there (%v)", err)
	}
	if left, _ := filepath.Glob(filepath.Join(elsewhere, "t/c/Task/0123", local.StagePrefix+"*")); len(left) > 0 {
		t.Errorf("the copy's staging file is left: %v", left)
	}
}

func devOf(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return uint64(fi.Sys().(*syscall.Stat_t).Dev)
}
