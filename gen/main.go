// Command gen turns chains/<type>/*_chain.go into routes, a catalog and one plugin main per chain
// type. `go generate ./...` (or `make generate`) runs it; `-check` exits 1 when the committed
// output is stale, which CI uses.
//
// Generation is a pure function (Generate) returning files or every error found; writing is a
// separate step, so a chain with one mistake leaves the previous output untouched.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("gen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("root", ".", "module root (the folder holding go.mod and chains/)")
	check := fs.Bool("check", false, "write nothing; exit 1 if the generated files are stale")
	verbose := fs.Bool("v", false, "print the files written and removed (nectar dev reads them)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	res, err := Generate(*root)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if *check {
		stale := Stale(*root, res)
		for _, s := range stale {
			fmt.Fprintf(stderr, "%s is stale: run `make generate`\n", s)
		}
		if len(stale) > 0 {
			return 1
		}
		return 0
	}
	changed, err := Write(*root, res)
	if *verbose {
		for _, c := range changed {
			fmt.Fprintln(stdout, c)
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

// Stale lists the files that differ from what Generate produced, or should no longer exist.
func Stale(root string, res *Result) []string {
	var out []string
	for _, f := range res.Files {
		old, err := os.ReadFile(filepath.Join(root, f.Path))
		if err != nil || !bytes.Equal(old, f.Content) {
			out = append(out, f.Path)
		}
	}
	return append(out, res.Stale...)
}

// Write writes the files that changed (so mtimes and build caches stay put) and removes the
// plugin mains of chain types that no longer exist. It returns the paths it wrote or removed.
func Write(root string, res *Result) ([]string, error) {
	var changed []string
	for _, f := range res.Files {
		p := filepath.Join(root, f.Path)
		if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, f.Content) {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return changed, err
		}
		if err := os.WriteFile(p, f.Content, 0o644); err != nil {
			return changed, err
		}
		changed = append(changed, f.Path)
	}
	for _, s := range res.Stale {
		p := filepath.Join(root, s)
		if err := os.Remove(p); err != nil {
			return changed, err
		}
		changed = append(changed, s)
		_ = os.Remove(filepath.Dir(p)) // only if now empty
	}
	return changed, nil
}
