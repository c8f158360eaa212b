package taskio

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// ReadFile reads what os.ReadFile reads, and fails as it does, naming the path.
func TestReadFileIsOsReadFiles(t *testing.T) {
	dir := t.TempDir()
	big := strings.Repeat("0123456789abcdef", 70_000)
	for name, content := range map[string]string{"empty": "", "small": "42\n", "big": big} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, path string
		err        error // nil: the same bytes as os.ReadFile
	}{
		{"empty file", filepath.Join(dir, "empty"), nil},
		{"small file", filepath.Join(dir, "small"), nil},
		{"a file bigger than a read's buffer", filepath.Join(dir, "big"), nil},
		{"a file that states no size (/proc)", "/proc/self/cmdline", nil},
		{"missing", filepath.Join(dir, "missing"), fs.ErrNotExist},
		{"a folder", dir, syscall.EISDIR},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReadFile(tc.path)
			if tc.err != nil {
				var pe *os.PathError
				if !errors.Is(err, tc.err) || !errors.As(err, &pe) || pe.Path != tc.path {
					t.Errorf("ReadFile(%s) = %v; want a path error naming it, of %v", tc.path, err, tc.err)
				}
				return
			}
			want, werr := os.ReadFile(tc.path)
			if err != nil || werr != nil || string(got) != string(want) || len(got) == 0 && tc.name != "empty file" {
				t.Errorf("ReadFile(%s) = %d bytes, %v; os.ReadFile: %d bytes, %v", tc.path, len(got), err, len(want), werr)
			}
		})
	}
}
