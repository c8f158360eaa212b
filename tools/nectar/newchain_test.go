package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// copyRepo copies this repository (without .git, build output and data) into a temporary
// folder, for tests that edit chains or generate code.
func copyRepo(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			switch rel {
			case ".git", "bin", ".tools", "local_targets":
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(work, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(work, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return work
}

// The promise of the README: drop chains/<type>/<name>_chain.go (here written by `nectar new`),
// generate, build, and the task is an endpoint, with no hand-written glue. Done on a copy of
// this repository.
func TestAddingAChainNeedsNoGlue(t *testing.T) {
	work := copyRepo(t)
	t.Chdir(work)
	var out strings.Builder
	if err := run(context.Background(), []string{"new", "mytype", "report"}, os.Getenv, &out, &out); err != nil {
		t.Fatalf("nectar new: %v", err)
	}
	for _, f := range []string{"report_chain.go", "report_chain_test.go"} {
		if _, err := os.Stat(filepath.Join(work, "chains", "mytype", f)); err != nil {
			t.Errorf("nectar new did not write %s: %v", f, err)
		}
	}
	if err := run(context.Background(), []string{"new", "mytype", "report"}, os.Getenv, &out, &out); err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Errorf("a second nectar new = %v, want: exists already", err)
	}
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command("go", args...)
		cmd.Dir = work
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// The scaffolded test passes as written, before anything is generated or built.
	run("test", "-count=1", "./chains/mytype/")
	run("generate", "./...")
	if _, err := os.Stat(filepath.Join(work, "plugins", "mains", "mytype", "main_gen.go")); err != nil {
		t.Fatalf("no plugin main was generated for the new type: %v", err)
	}
	bin := filepath.Join(work, "bin")
	run("build", "-o", bin+"/", "./tools/nectar")
	run("build", "-o", bin+"/plugins/", "./plugins/mains/...")
	mains, err := os.ReadDir(filepath.Join(work, "plugins", "mains"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mains {
		typ := m.Name()
		b, _ := os.ReadFile(filepath.Join(bin, "plugins", typ))
		sum := sha256.Sum256(b)
		os.WriteFile(filepath.Join(bin, "plugins", typ+".sha256"), []byte(hex.EncodeToString(sum[:])+"  "+typ+"\n"), 0o644)
	}

	addr := freeAddr(t)
	srv := exec.Command(filepath.Join(bin, "nectar"), "serve")
	srv.Env = append(os.Environ(), "NECTAR_ADDR="+addr, "NECTAR_TARGET="+t.TempDir(), "NECTAR_PLUGIN_DIR="+filepath.Join(bin, "plugins"))
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	var resp *http.Response
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if resp, err = http.Post("http://"+addr+"/api/chains/mytype/report_chain/ReportTask?name=ml&wait=10s", "", nil); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var env struct {
		Data struct {
			JobStatus   string `json:"job_status"`
			ResourceURL string `json:"resource_url"`
		} `json:"data"`
	}
	json.NewDecoder(resp.Body).Decode(&env)
	if resp.StatusCode != 200 || env.Data.JobStatus != "DONE" {
		t.Fatalf("POST ReportTask = %d %+v", resp.StatusCode, env.Data)
	}
	dl, err := http.Get(env.Data.ResourceURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(dl.Body)
	dl.Body.Close()
	if string(body) != "report for ml\n" {
		t.Errorf("out = %q", body)
	}
}

// nectar new refuses, before writing anything, every name the generator would refuse.
func TestNewRefusesNamesGenWouldReject(t *testing.T) {
	t.Chdir(t.TempDir())
	if err := os.Mkdir("chains", 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		typ, name, want string
	}{
		{"Reports", "daily", `chain type "Reports"`},
		{"func", "daily", `chain type "func"`},     // a Go keyword cannot name a package
		{"params", "daily", `chain type "params"`}, // the plugin main imports a package of that name
		{"main", "daily", `chain type "main"`},
		{"my-type", "daily", `chain type "my-type"`},
		{"reports", "9daily", `chain name "9daily"`},
		{"reports", "Daily", `chain name "Daily"`},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		err := run(context.Background(), []string{"new", tt.typ, tt.name}, os.Getenv, &out, &out)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("nectar new %s %s = %v, want an error naming %s", tt.typ, tt.name, err, tt.want)
		}
	}
	if entries, _ := os.ReadDir("chains"); len(entries) != 0 {
		t.Errorf("refused names left files behind: %v", entries)
	}
}
