package signing

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestVerify(t *testing.T) {
	s, err := New([]byte(strings.Repeat("s", 32)))
	if err != nil {
		t.Fatal(err)
	}
	exp, sig := s.Sign(PurposeStatus, "chains/a/b/C/0/out", time.Minute)
	oldExp, oldSig := s.Sign(PurposeStatus, "chains/a/b/C/0/out", -time.Second)
	tests := []struct {
		name                    string
		purpose, path, exp, sig string
		want                    error
	}{
		{"valid", PurposeStatus, "chains/a/b/C/0/out", exp, sig, nil},
		{"other path", PurposeStatus, "chains/a/b/C/1/out", exp, sig, ErrBadSignature},
		{"other purpose", PurposeDownload, "chains/a/b/C/0/out", exp, sig, ErrBadSignature},
		{"extended expiry", PurposeStatus, "chains/a/b/C/0/out", exp + "0", sig, ErrBadSignature},
		{"expiry with a leading zero", PurposeStatus, "chains/a/b/C/0/out", "0" + exp, sig, ErrBadSignature},
		{"expiry with a plus sign", PurposeStatus, "chains/a/b/C/0/out", "+" + exp, sig, ErrBadSignature},
		{"expired", PurposeStatus, "chains/a/b/C/0/out", oldExp, oldSig, ErrExpired},
		{"empty", PurposeStatus, "chains/a/b/C/0/out", "", "", ErrBadSignature},
		{"short sig", PurposeStatus, "chains/a/b/C/0/out", exp, sig[:10], ErrBadSignature},
		{"sig in upper case", PurposeStatus, "chains/a/b/C/0/out", exp, strings.ToUpper(sig), ErrBadSignature},
		{"sig with a non-hex digit", PurposeStatus, "chains/a/b/C/0/out", exp, "g" + sig[1:], ErrBadSignature},
		{"sig with its last digit changed", PurposeStatus, "chains/a/b/C/0/out", exp, flipLast(sig), ErrBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.Verify(tt.purpose, tt.path, tt.exp, tt.sig); !errors.Is(err, tt.want) && !(err == nil && tt.want == nil) {
				t.Errorf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := New([]byte("short")); err == nil {
		t.Errorf("New accepted a 5-byte key")
	}
	// Every status read checks one: it allocates nothing.
	if n := testing.AllocsPerRun(100, func() { s.Verify(PurposeStatus, "chains/a/b/C/0/out", exp, sig) }); n != 0 && !raceEnabled {
		t.Errorf("Verify allocates %v times per call", n)
	}
}

// flipLast changes the last hex digit of sig to another one.
func flipLast(sig string) string {
	if sig[len(sig)-1] == '0' {
		return sig[:len(sig)-1] + "1"
	}
	return sig[:len(sig)-1] + "0"
}

// FuzzVerify: no input is accepted unless it was signed, and none panics.
func FuzzVerify(f *testing.F) {
	s, _ := New([]byte(strings.Repeat("f", 32)))
	// A fixed clock: the one valid URL is the same in every run, so a corpus entry from an
	// earlier run is not mistaken for a forgery.
	fixed := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return fixed }
	exp, sig := s.Sign(PurposeDownload, "chains/x/out", time.Hour)
	f.Add("chains/x/out", exp, sig)
	f.Add("chains/x/out", "-1", sig)
	f.Add("", "99999999999999999999999", "zz")
	f.Fuzz(func(t *testing.T, path, expires, signature string) {
		err := s.Verify(PurposeDownload, path, expires, signature)
		if err == nil && !(path == "chains/x/out" && expires == exp && signature == sig) {
			t.Fatalf("Verify accepted a forged URL: %q %q %q", path, expires, signature)
		}
	})
}
