// Package names holds the naming rules of chain files: what a chain type folder, a chain file
// and a parameter may be called, and how names become Go identifiers. The generator enforces
// them and `nectar new` checks them before it writes anything, so both refuse the same names.
package names

import (
	"fmt"
	"go/token"
	"regexp"
	"slices"
	"strings"
)

// ChainSuffix ends every chain file's base name (hello_chain.go) and every chain's name.
const ChainSuffix = "_chain"

var (
	lowerRE     = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	chainFileRE = regexp.MustCompile(`^[a-z][a-z0-9_]*_chain\.go$`)
	// ReservedTypes are the names the generated plugin main imports itself: a chain type named
	// so would shadow them.
	ReservedTypes = []string{"main", "chains", "plugins", "serve", "fmt", "params"}
	// ReservedParams are query parameters the API itself reads: a task cannot take them.
	ReservedParams = []string{"wait", "force", "expires", "signature", "chain", "offset", "follow"}
)

// CheckType reports why name cannot be a chain type folder (chains/<name>), or nil.
func CheckType(name string) error {
	if !lowerRE.MatchString(name) || token.IsKeyword(name) || slices.Contains(ReservedTypes, name) {
		return fmt.Errorf("chain type %q: use lower case letters, digits and _, starting with a letter, and not a Go keyword or one of %s", name, strings.Join(ReservedTypes, ", "))
	}
	return nil
}

// CheckChain reports why name (without the _chain suffix) cannot name a chain file, or nil.
func CheckChain(name string) error {
	if !lowerRE.MatchString(name) {
		return fmt.Errorf("chain name %q: use lower case letters, digits and _, starting with a letter", name)
	}
	return nil
}

// IsChainFile reports whether a file's base name is a chain file (<name>_chain.go).
func IsChainFile(base string) bool { return chainFileRE.MatchString(base) }

// CheckParam reports why name cannot be a parameter, or nil.
func CheckParam(name string) error {
	if !lowerRE.MatchString(name) {
		return fmt.Errorf("parameter name %q must be lower case letters, digits and _, starting with a letter", name)
	}
	if slices.Contains(ReservedParams, name) {
		return fmt.Errorf("parameter name %q is reserved by the API (%s)", name, strings.Join(ReservedParams, ", "))
	}
	return nil
}

// Camel turns snake_case into CamelCase: hello_chain becomes HelloChain.
func Camel(s string) string {
	var b strings.Builder
	up := true
	for _, r := range s {
		if r == '_' {
			up = true
			continue
		}
		if up {
			b.WriteString(strings.ToUpper(string(r)))
			up = false
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// Snake turns CamelCase into snake_case: BadName becomes bad_name (the param tag gen suggests).
func Snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if r >= 'A' && r <= 'Z' {
			if i > 0 {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}
