package server

import (
	"path"
	"strings"
	"testing"
)

// FuzzParseStatusChain: whatever a client sends as chain=, an accepted key stays under chains/
// and has the key's shape.
func FuzzParseStatusChain(f *testing.F) {
	for _, s := range []string{
		"chains/testchains/hello_chain/HelloTask/0123456789abcdef0123456789abcdef/out",
		"chains/../etc/passwd", "/etc/passwd", "chains/a/b/c/d/out", "chains//a/b/c/out", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, chain string) {
		key, err := parseStatusChain(chain)
		if err != nil {
			return
		}
		if !strings.HasPrefix(key, "chains/") || strings.Contains(key, "..") || path.Clean(key) != key || strings.Count(key, "/") != 4 {
			t.Fatalf("parseStatusChain(%q) = %q", chain, key)
		}
	})
}
