package host

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A rebuild renames the new binary into place and then its hash (nectar dev, make build): a
// check between the two waits for the hash; a binary whose hash never comes is refused.
func TestVerifyWaitsForAHashThatLagsItsBinary(t *testing.T) {
	dir := t.TempDir()
	l, err := NewLauncher(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	bin := filepath.Join(dir, "demo")
	install := func(content string, withHash bool) {
		t.Helper()
		if err := os.WriteFile(bin+".new", []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(bin+".new", bin); err != nil {
			t.Fatal(err)
		}
		if withHash {
			writeHash(t, bin, content)
		}
	}
	verify := func() (string, error) {
		f, err := l.Verify("demo")
		if err != nil {
			return "", err
		}
		defer f.Close()
		b, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<20)) // the check read it to its end
		return string(b), err
	}
	install("v1", true)
	if got, err := verify(); err != nil || got != "v1" {
		t.Fatalf("Verify = %q, %v", got, err)
	}
	install("v2", false)
	go func() { time.Sleep(200 * time.Millisecond); writeHash(t, bin, "v2") }()
	if got, err := verify(); err != nil || got != "v2" {
		t.Fatalf("Verify with the hash 200 ms late = %q, %v; want v2", got, err)
	}
	install("v3", false)
	if _, err := verify(); !errors.Is(err, ErrTampered) {
		t.Fatalf("Verify of a binary whose hash never comes = %v, want ErrTampered", err)
	}
}

func writeHash(t *testing.T, bin, content string) {
	sum := sha256.Sum256([]byte(content))
	if err := os.WriteFile(bin+".sha256.new", []byte(hex.EncodeToString(sum[:])+"  demo\n"), 0o644); err != nil {
		t.Error(err)
	}
	if err := os.Rename(bin+".sha256.new", bin+".sha256"); err != nil {
		t.Error(err)
	}
}
