// Package targets defines the store that holds every run's out, log, params and run record, and
// the optional capabilities a backend may offer. Backends live in sub-packages (local, and later
// s3 and minio) and must pass the shared conformance suite in targets/targettest.
package targets

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"
)

var (
	// ErrNotExist is returned for a key that has no object.
	ErrNotExist = errors.New("no such object")
	// ErrBadKey is returned for a key that is not a clean relative path.
	ErrBadKey = errors.New("bad key")
	// ErrUnavailable wraps failures to reach the store (the API answers 503).
	ErrUnavailable = errors.New("store unavailable")
	// ErrExist is CreateIfAbsent's answer when the object is already there (S3's 412).
	ErrExist = errors.New("object already exists")
)

// Info describes a stored object.
type Info struct {
	Size    int64
	ModTime time.Time
}

// Store is the four-plus-one-method storage every backend offers. Keys are slash-separated paths
// such as chains/testchains/hello_chain/HelloTask/<md5>/out.
type Store interface {
	// Put stores r under key atomically: a reader sees the whole object or none.
	Put(ctx context.Context, key string, r io.Reader) error
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	Stat(ctx context.Context, key string) (Info, error)
	Delete(ctx context.Context, key string) error
	// List returns the keys under prefix, sorted.
	List(ctx context.Context, prefix string) ([]string, error)
	// CreateIfAbsent stores r under key only if no object is there (If-None-Match: *): of any
	// number of concurrent callers exactly one succeeds, the others get ErrExist.
	CreateIfAbsent(ctx context.Context, key string, r io.Reader) error
	// String names the store in messages (folder, or endpoint and bucket).
	String() string
}

// Presigner is offered by stores that hand out download URLs.
type Presigner interface {
	PresignGet(ctx context.Context, key string, expiry time.Duration) (string, error)
}

// FileCommitter is offered by stores that can take a finished local file without copying it
// (the local store renames it into place).
type FileCommitter interface {
	CommitFile(ctx context.Context, key, file string) error
}

// LocalPather is offered by stores whose objects are local files that a plugin can read directly.
type LocalPather interface {
	LocalPath(key string) (string, error)
}

// CheckKey rejects keys that could escape the store: absolute, unclean, or with .. segments.
func CheckKey(key string) error {
	if key == "" || strings.HasPrefix(key, "/") || path.Clean(key) != key || key == "." ||
		strings.HasPrefix(key, "../") || key == ".." || strings.Contains(key, "\\") || strings.ContainsRune(key, 0) {
		return fmt.Errorf("%w: %q", ErrBadKey, key)
	}
	return nil
}

// Exists is Stat reduced to a yes or no; an unreachable store is an error, not a no.
func Exists(ctx context.Context, s Store, key string) (bool, error) {
	_, err := s.Stat(ctx, key)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, ErrNotExist):
		return false, nil
	}
	return false, err
}

// MaxCreateSize bounds what CreateIfAbsent takes: it is meant for small markers (leases), sent
// in one conditional PUT.
const MaxCreateSize = 1 << 20

// ReadSmall reads all of r for a CreateIfAbsent, refusing more than MaxCreateSize.
func ReadSmall(key string, r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxCreateSize+1))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", key, err)
	}
	if len(b) > MaxCreateSize {
		return nil, fmt.Errorf("create %s: CreateIfAbsent takes at most %d bytes", key, MaxCreateSize)
	}
	return b, nil
}

// Prefix maps keys to object names under an optional folder of a bucket ("" = the root), the
// one way every bucket backend spells it.
type Prefix string

// NewPrefix trims the slashes a URL path brings.
func NewPrefix(p string) Prefix { return Prefix(strings.Trim(p, "/")) }

// Object is the object name of key, which must be a clean key.
func (p Prefix) Object(key string) (string, error) {
	if err := CheckKey(key); err != nil {
		return "", err
	}
	return p.Join(key), nil
}

// Join puts a key (or key prefix) under the prefix.
func (p Prefix) Join(key string) string {
	if p == "" {
		return key
	}
	return string(p) + "/" + key
}

// Key is the key of an object name listed under the prefix.
func (p Prefix) Key(object string) string {
	if p == "" {
		return object
	}
	return strings.TrimPrefix(object, string(p)+"/")
}
