package local_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

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
