package chains_test

import (
	"go/ast"
	"go/doc"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// The package is what a chain author reads (go doc nectar/chains): every exported item has a
// doc comment, and nothing in it is plumbing that only generated code or the runtime calls.
func TestPackageIsOnlyTheAuthorsSDK(t *testing.T) {
	fset := token.NewFileSet()
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	p, err := doc.NewFromFiles(fset, files, "nectar/chains")
	if err != nil {
		t.Fatal(err)
	}
	check := func(kind, name, comment string) {
		t.Helper()
		if strings.TrimSpace(comment) == "" {
			t.Errorf("%s %s has no doc comment", kind, name)
		}
		for _, plumbing := range []string{"Parse", "Query", "Param", "New", "Config"} {
			if strings.HasPrefix(name, plumbing) {
				t.Errorf("%s %s looks like plumbing for generated code: it belongs in chains/params or chains/taskrun", kind, name)
			}
		}
	}
	for _, f := range p.Funcs {
		check("func", f.Name, f.Doc)
	}
	for _, v := range append(p.Vars, p.Consts...) {
		check("value", strings.Join(v.Names, ", "), v.Doc)
	}
	for _, typ := range p.Types {
		check("type", typ.Name, typ.Doc)
		for _, f := range typ.Funcs {
			check("func", f.Name, f.Doc)
		}
		for _, m := range typ.Methods {
			check("method", typ.Name+"."+m.Name, m.Doc)
		}
	}
	if len(p.Types) == 0 {
		t.Fatal("no exported types found: the test reads the wrong folder")
	}
}
