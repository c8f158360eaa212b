package main

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestGolden runs the generator on each testdata/<case>/chains tree, in a scratch module holding
// the real chains SDK, and compares the files (testdata/<case>/want/...) or the errors
// (testdata/<case>/stderr.txt) with the goldens.
func TestGolden(t *testing.T) {
	cases, err := filepath.Glob("testdata/*")
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range cases {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			root := scratchModule(t, filepath.Join(dir, "chains"))
			res, err := Generate(root)
			stderrFile := filepath.Join(dir, "stderr.txt")
			if _, statErr := os.Stat(stderrFile); statErr == nil {
				if err == nil {
					t.Fatalf("Generate succeeded, want the errors in %s", stderrFile)
				}
				compareGolden(t, stderrFile, []byte(err.Error()+"\n"))
				return
			}
			if err != nil {
				t.Fatalf("Generate: %v", err)
			}
			got := map[string]bool{}
			for _, f := range res.Files {
				got[f.Path] = true
				compareGolden(t, filepath.Join(dir, "want", f.Path), f.Content)
			}
			filepath.WalkDir(filepath.Join(dir, "want"), func(p string, d os.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					rel, _ := filepath.Rel(filepath.Join(dir, "want"), p)
					if !got[filepath.ToSlash(rel)] {
						t.Errorf("golden %s was not generated", rel)
					}
				}
				return nil
			})
		})
	}
}

func compareGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./gen -update)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
	}
}

// scratchModule makes a module named nectar holding the real SDK and the case's chains.
func scratchModule(t *testing.T, chainsDir string) string {
	t.Helper()
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(root, "go.mod"), []byte("module nectar\n\ngo 1.26\n"), 0o644))
	must(os.MkdirAll(filepath.Join(root, "chains"), 0o755))
	// The SDK and its runtime packages, without tests, test data and the chain types (a folder
	// with a _chain.go file: the repository's own chains are not the case's).
	must(filepath.WalkDir("../chains", func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if chainFiles, _ := filepath.Glob(filepath.Join(p, "*_chain.go")); d.IsDir() && (d.Name() == "testdata" || len(chainFiles) > 0) {
			return filepath.SkipDir
		}
		if d.IsDir() || strings.HasSuffix(p, "_test.go") || !strings.HasSuffix(p, ".go") {
			return nil
		}
		rel, _ := filepath.Rel("../chains", p)
		dst := filepath.Join(root, "chains", rel)
		must(os.MkdirAll(filepath.Dir(dst), 0o755))
		b, err := os.ReadFile(p)
		must(err)
		return os.WriteFile(dst, b, 0o644)
	}))
	must(filepath.WalkDir(chainsDir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(chainsDir, p)
		dst := filepath.Join(root, "chains", rel)
		must(os.MkdirAll(filepath.Dir(dst), 0o755))
		b, err := os.ReadFile(p)
		must(err)
		return os.WriteFile(dst, b, 0o644)
	}))
	return root
}

// TestCheckFindsStaleOutput is the CI guard: a hand edit, or a chain type that is gone, makes
// -check fail and names the file.
func TestCheckFindsStaleOutput(t *testing.T) {
	root := scratchModule(t, "testdata/basic/chains")
	var stderr bytes.Buffer
	if code := run([]string{"-root", root}, &stderr, &stderr); code != 0 {
		t.Fatalf("gen = %d: %s", code, stderr.String())
	}
	if code := run([]string{"-root", root, "-check"}, &stderr, &stderr); code != 0 {
		t.Fatalf("gen -check right after gen = %d: %s", code, stderr.String())
	}
	catalogPath := filepath.Join(root, catalogFile)
	b, _ := os.ReadFile(catalogPath)
	os.WriteFile(catalogPath, append(b, []byte("// edited by hand\n")...), 0o644)
	stale := filepath.Join(root, mainsDir, "gone", mainFileName)
	os.MkdirAll(filepath.Dir(stale), 0o755)
	os.WriteFile(stale, []byte("package main\n"), 0o644)
	stderr.Reset()
	if code := run([]string{"-root", root, "-check"}, &stderr, &stderr); code != 1 {
		t.Fatalf("gen -check on stale output = %d, want 1", code)
	}
	for _, want := range []string{catalogFile + " is stale", mainsDir + "/gone/" + mainFileName + " is stale"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("-check output lacks %q:\n%s", want, stderr.String())
		}
	}
	// Writing again removes the stale main and restores the catalog.
	if code := run([]string{"-root", root}, &stderr, &stderr); code != 0 {
		t.Fatal(stderr.String())
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale plugin main still exists")
	}
}

// TestErrorsWriteNothing: with any error, the previous output stays as it was.
func TestErrorsWriteNothing(t *testing.T) {
	root := scratchModule(t, "testdata/errors/chains")
	var stderr bytes.Buffer
	if code := run([]string{"-root", root}, &stderr, &stderr); code != 1 {
		t.Fatalf("gen on bad chains = %d, want 1", code)
	}
	if _, err := os.Stat(filepath.Join(root, catalogFile)); !os.IsNotExist(err) {
		t.Errorf("gen wrote %s despite errors", catalogFile)
	}
}

// TestGoldenOutputCompiles builds the basic case's generated catalog and plugin main against
// the real SDK, plugin runtime and catalog types, so a golden that only looks right fails.
func TestGoldenOutputCompiles(t *testing.T) {
	root := scratchModule(t, "testdata/basic/chains")
	// copyTree copies Go sources, leaving out tests and (from the real tree) generated files.
	copyTree := func(src, dst string, withGenerated bool) {
		t.Helper()
		filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || strings.HasSuffix(p, "_test.go") || (!withGenerated && strings.HasSuffix(p, "_gen.go")) {
				return err
			}
			rel, _ := filepath.Rel(src, p)
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			os.MkdirAll(filepath.Join(dst, filepath.Dir(rel)), 0o755)
			return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
		})
	}
	for _, f := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join("..", f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(root, f), b, 0o644)
	}
	os.MkdirAll(filepath.Join(root, "plugins", "serve"), 0o755)
	copyTree("../plugins/serve", filepath.Join(root, "plugins", "serve"), false)
	files, _ := filepath.Glob("../plugins/*.go") // the package plugins, whatever its files
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, _ := os.ReadFile(f)
		os.WriteFile(filepath.Join(root, "plugins", filepath.Base(f)), b, 0o644)
	}
	copyTree("../server/catalog", filepath.Join(root, "server", "catalog"), false)
	copyTree("testdata/basic/want", root, true)
	cmd := exec.Command("go", "build", "./chains/...", "./plugins/...", "./server/catalog")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("the golden output does not compile: %v\n%s", err, out)
	}
}
