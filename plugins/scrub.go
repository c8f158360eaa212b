package plugins

import (
	"net/url"
	"sort"
	"strings"
)

// Scrubber replaces the values of a task's connections with their names wherever they appear
// (its log, its error): "[connection warehouse]". A URL's password is replaced on its own
// too, since errors often quote a connection string piecemeal. Longer secrets are replaced
// first, so a password inside a URL never leaves part of the URL behind.
func Scrubber(conns map[string]string) *strings.Replacer {
	type pair struct{ secret, name string }
	var pairs []pair
	for name, v := range conns {
		if v == "" {
			continue
		}
		pairs = append(pairs, pair{v, "[connection " + name + "]"})
		if u, err := url.Parse(v); err == nil && u.User != nil {
			if pw, ok := u.User.Password(); ok && pw != "" {
				pairs = append(pairs, pair{pw, "[password of connection " + name + "]"})
				if esc := url.QueryEscape(pw); esc != pw {
					pairs = append(pairs, pair{esc, "[password of connection " + name + "]"})
				}
			}
		}
	}
	sort.Slice(pairs, func(i, j int) bool { return len(pairs[i].secret) > len(pairs[j].secret) })
	args := make([]string, 0, 2*len(pairs))
	for _, p := range pairs {
		args = append(args, p.secret, p.name)
	}
	return strings.NewReplacer(args...)
}
