package runs

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// validWorkerID takes exactly what the pattern it replaced took: 1 to 200 of [A-Za-z0-9._-],
// not starting with a dot. A worker id in a live log URL becomes part of a NATS subject, so
// anything else (a space, a '*', a '>', a second dot-free token) must be refused.
func TestValidWorkerIDIsThePattern(t *testing.T) {
	pattern := regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$`)
	cases := []string{
		"", "a", ".", ".a", "a.", "-", "_x", "host-123-abcd", "host.example.com-42-zz",
		"a b", "a*", "a>", "a\x00", "é", "a/b", "a\n", strings.Repeat("a", 200), strings.Repeat("a", 201),
		"." + strings.Repeat("a", 199), strings.Repeat("9", 199) + ".",
	}
	const alphabet = "aZ09._-* >/\x00\xff"
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		b := make([]byte, rng.IntN(8))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		cases = append(cases, string(b))
	}
	for _, id := range cases {
		if got, want := validWorkerID(id), pattern.MatchString(id); got != want {
			t.Errorf("validWorkerID(%q) = %v, the pattern says %v", id, got, want)
		}
	}
}
