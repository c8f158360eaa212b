// Package signing makes and checks capability URLs: HMAC-SHA256 over a purpose, a path and an
// expiry, carried in the `expires` and `signature` query parameters. Status URLs and the local
// store's download URLs both use it; anyone holding such a URL may use it until it expires.
package signing

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"sync"
	"time"
)

var (
	// ErrBadSignature covers a missing, malformed or wrong signature.
	ErrBadSignature = errors.New("bad signature")
	// ErrExpired is a valid signature whose time has passed.
	ErrExpired = errors.New("signature expired")
)

// Purposes keep a status signature from working as a download signature and vice versa.
const (
	PurposeStatus   = "status"
	PurposeDownload = "download"
	PurposeLog      = "log"
	PurposeSession  = "session" // the web UI's session cookie
)

// MinKeyLen is the shortest key accepted (256 bits).
const MinKeyLen = 32

// Signer holds the secret key.
type Signer struct {
	key  []byte
	now  func() time.Time
	macs sync.Pool // of *macState: a status answer signs several URLs, and HMAC's setup is half its cost
}

// macState is a keyed HMAC and the buffer its message is put together in.
type macState struct {
	h   hash.Hash
	msg []byte
	sum [sha256.Size]byte
}

// New returns a Signer; key must be at least MinKeyLen bytes.
func New(key []byte) (*Signer, error) {
	if len(key) < MinKeyLen {
		return nil, fmt.Errorf("signing key is %d bytes; it must be at least %d", len(key), MinKeyLen)
	}
	return &Signer{key: append([]byte(nil), key...), now: time.Now}, nil
}

// NewRandom returns a Signer with a fresh random key (URLs then die with the process).
func NewRandom() *Signer {
	key := make([]byte, MinKeyLen)
	if _, err := rand.Read(key); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	s, _ := New(key)
	return s
}

// sum is the HMAC of purpose, path and expires.
func (s *Signer) sum(purpose, path string, expires int64) (sum [sha256.Size]byte) {
	st, _ := s.macs.Get().(*macState)
	if st == nil {
		st = &macState{h: hmac.New(sha256.New, s.key)}
	}
	st.h.Reset()
	msg := append(st.msg[:0], purpose...)
	msg = append(msg, 0)
	msg = append(msg, path...)
	msg = append(msg, 0)
	msg = strconv.AppendInt(msg, expires, 10)
	st.h.Write(msg)
	copy(sum[:], st.h.Sum(st.sum[:0])) // (into the pooled state: a local array passed to Sum escapes)
	if cap(msg) <= 4096 {              // a path is short; keep no outsized buffer
		st.msg = msg
		s.macs.Put(st)
	}
	return sum
}

// mac is the signature value of purpose, path and expires: the HMAC in lower-case hex.
func (s *Signer) mac(purpose, path string, expires int64) string {
	sum := s.sum(purpose, path, expires)
	return hex.EncodeToString(sum[:])
}

// Sign returns the expires (unix seconds) and signature values for path, valid for ttl.
func (s *Signer) Sign(purpose, path string, ttl time.Duration) (expires string, signature string) {
	exp := s.now().Add(ttl).Unix()
	return strconv.FormatInt(exp, 10), s.mac(purpose, path, exp)
}

// Verify checks a signature in constant time, then its expiry.
func (s *Signer) Verify(purpose, path, expires, signature string) error {
	exp, err := strconv.ParseInt(expires, 10, 64)
	// Only the canonical spelling that was signed: "0123" or "+123" would be the same number
	// under another string, and a capability URL should have exactly one form.
	var canon [20]byte
	if err != nil || string(strconv.AppendInt(canon[:0], exp, 10)) != expires || len(signature) != sha256.Size*2 {
		return ErrBadSignature
	}
	// Compared as bytes, not as hex strings: a status read checks one signature, and its hex
	// was an allocation per request. Only lower-case hex decodes, the one form Sign makes.
	var got [sha256.Size]byte
	if !decodeLowerHex(got[:], signature) {
		return ErrBadSignature
	}
	want := s.sum(purpose, path, exp)
	if !hmac.Equal(want[:], got[:]) {
		return ErrBadSignature
	}
	if s.now().Unix() > exp {
		return ErrExpired
	}
	return nil
}

// decodeLowerHex decodes s, 2*len(dst) lower-case hex digits, into dst.
func decodeLowerHex(dst []byte, s string) bool {
	if len(s) != 2*len(dst) {
		return false
	}
	for i := range dst {
		hi, ok1 := lowerHexDigit(s[2*i])
		lo, ok2 := lowerHexDigit(s[2*i+1])
		if !ok1 || !ok2 {
			return false
		}
		dst[i] = hi<<4 | lo
	}
	return true
}

func lowerHexDigit(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
