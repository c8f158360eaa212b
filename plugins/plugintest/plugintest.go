// Package plugintest builds the real plugin binaries for tests, once per test process.
package plugintest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

var (
	once sync.Once
	dir  string
	err  error
)

// Build compiles every plugins/mains/<type>, and the nectar server binary, into a temporary
// folder and returns it. The caller's TestMain removes it with Cleanup. A build failure is
// returned, never skipped.
func Build() (string, error) {
	once.Do(func() {
		root, e := moduleRoot()
		if e != nil {
			err = e
			return
		}
		dir, err = os.MkdirTemp("", "nectar-plugins-")
		if err != nil {
			return
		}
		mains, _ := filepath.Glob(filepath.Join(root, "plugins", "mains", "*"))
		if len(mains) == 0 {
			err = fmt.Errorf("no plugin mains under %s/plugins/mains: run make generate", root)
			return
		}
		args := []string{"build", "-o", dir + "/", "./tools/nectar"}
		for _, m := range mains {
			args = append(args, "./plugins/mains/"+filepath.Base(m))
		}
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // static, as make build makes them
		if out, e := cmd.CombinedOutput(); e != nil {
			err = fmt.Errorf("building plugins: %v\n%s", e, out)
			return
		}
		// Record each plugin's hash, as `make build` does.
		for _, m := range mains {
			bin := filepath.Join(dir, filepath.Base(m))
			b, e := os.ReadFile(bin)
			if e != nil {
				err = e
				return
			}
			sum := sha256.Sum256(b)
			line := hex.EncodeToString(sum[:]) + "  " + filepath.Base(m) + "\n"
			if err = os.WriteFile(bin+".sha256", []byte(line), 0o644); err != nil {
				return
			}
		}
	})
	return dir, err
}

// Cleanup removes the built binaries.
func Cleanup() {
	if dir != "" {
		os.RemoveAll(dir)
	}
}

func moduleRoot() (string, error) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(filepath.Dir(file)))
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			return "", err
		}
		return filepath.Dir(strings.TrimSpace(string(out))), nil
	}
	return root, nil
}
