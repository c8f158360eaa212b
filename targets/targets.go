// Package targets defines the store that holds every run's out, log, params and run record, and
// the optional capabilities a backend may offer. Backends live in sub-packages (local, and later
// s3 and minio) and must pass the shared conformance suite in targets/targettest.
package targets

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path"
	"strings"
	"time"
)

var (
	// ErrNotExist is returned for a key that has no object.
	ErrNotExist = errors.New("no such object")
	// ErrBadKey is returned for a key that is not a clean relative path.
	ErrBadKey = errors.New("bad key")
	// ErrUnavailable wraps failures to reach the store (the API answers 503). It is the one
	// sentinel for "the store is down": backends produce it, callers wrap it with %w.
	ErrUnavailable = errors.New("store unavailable")
	// ErrExist is CreateIfAbsent's answer when the object is already there (S3's 412).
	ErrExist = errors.New("object already exists")
	// ErrChanged is ReplaceIf's answer when the object is no longer the version seen.
	ErrChanged = errors.New("object changed since it was read")
)

// Info describes a stored object.
type Info struct {
	Size    int64
	ModTime time.Time
	// ETag tells two versions of an object apart where ModTime cannot (S3 keeps whole
	// seconds); "" where ModTime can (a local file's nanoseconds).
	ETag string
	// Meta is the metadata stored with the object (MetaCommitter; S3's and MinIO's
	// x-amz-meta-* headers, names in lower case), nil where the store keeps none.
	Meta map[string]string
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

// TypedPresigner is offered by stores whose presigned URLs can set the content type the object
// is served with (S3's response-content-type): an artifact stored without one is then served as
// what it is, a PNG as an image, an HTML report as a page.
type TypedPresigner interface {
	PresignGetAs(ctx context.Context, key string, expiry time.Duration, contentType string) (string, error)
}

// FileCommitter is offered by stores that can take a finished local file without copying it
// (the local store renames it into place).
type FileCommitter interface {
	CommitFile(ctx context.Context, key, file string) error
}

// MetaCommitter is offered by stores that keep a few words of metadata with an object (S3's
// and MinIO's x-amz-meta-* headers), which Stat gives back (Info.Meta): a task's out says
// there whether a log goes with it, and nobody has to ask the store about the log.
type MetaCommitter interface {
	// CommitFileMeta is CommitFile, storing meta (lower-case names) with the object.
	CommitFileMeta(ctx context.Context, key, file string, meta map[string]string) error
}

// Folders is offered by stores whose keys are files in folders on this machine (the local
// store). The run scheduler writes a task's files beside their final place, commits each with
// one rename, and makes a whole batch of them durable with one sync, because a fan-in of
// thousands of tasks makes these calls thousands of times a second.
type Folders interface {
	// MakeFolder creates key's folder (it may exist) and returns its path. In a folder that
	// was there, the files staged by deadRun (a run whose server died) are removed.
	MakeFolder(key, deadRun string) (dir string, err error)
	// Commit renames a file staged in key's folder (named StagePrefix...), or in the store's
	// own temporary folder, to key.
	Commit(staged, key string) error
	// SyncAll makes every write to the store so far durable.
	SyncAll() error
}

// StagePrefix begins the names of files staged in a key's folder before they are committed:
// they are not keys, and List never returns them.
const StagePrefix = ".stage-"

// Replacer is offered by stores that can replace an object only if it is still the version a
// caller looked at (compare and swap): S3's and MinIO's PUT with If-Match, a lock on the local
// file. It is how a lease whose holder died is taken over: of several servers that saw the
// same dead lease, exactly one replaces it (a delete then a create would let two in).
type Replacer interface {
	// ReplaceIf stores b at key if the object there is still the version seen describes (from
	// Stat); else, or if it is gone, ErrChanged. It returns the version it stored, for the
	// next ReplaceIf of the same writer.
	ReplaceIf(ctx context.Context, key string, seen Info, b []byte) (Info, error)
}

// InfoCreator is offered by stores whose CreateIfAbsent learns the version it stored from the
// answer (S3's and MinIO's PUT returns the ETag): a run's lease then costs one round trip, not
// a PUT and a HEAD. The version is the one Stat would give, for ReplaceIf.
type InfoCreator interface {
	CreateIfAbsentInfo(ctx context.Context, key string, r io.Reader) (Info, error)
}

// Volatile is offered by stores where a durable Put costs a disk flush: PutVolatile stores a
// small derived object (a run record, a lease, metrics) atomically but without waiting for the
// disk. After a power loss it may be empty, never partial: its readers take empty as absent.
type Volatile interface {
	PutVolatile(key string, b []byte) error
	// WriteVolatile is PutVolatile of what write writes, streamed to the object: a record of
	// 50,000 tasks is never whole in memory. It returns the version it stored (the file
	// renamed into place), as InfoPutter's PutInfo does.
	WriteVolatile(key string, write func(io.Writer) error) (Info, error)
}

// SameVersion reports whether a and b describe one version of an object: by its ETag where
// both have one (a content hash on S3 and MinIO, which answer a PUT with it but not with its
// time; a local file's inode and nanosecond time), quoted or not; else by size and time, and
// never when only one has an ETag.
func SameVersion(a, b Info) bool {
	if a.ETag != "" && b.ETag != "" {
		return strings.Trim(a.ETag, `"`) == strings.Trim(b.ETag, `"`) && a.Size == b.Size
	}
	return a.Size == b.Size && a.ModTime.Equal(b.ModTime) && a.ETag == b.ETag
}

// InfoPutter is offered by stores whose Put learns the version it stored from the write itself
// (the ETag of S3's and MinIO's answer), as Stat would give it then (the local folder's
// WriteVolatile does the same). A stat made after the write could see another writer's version, written meanwhile:
// whoever caches what it wrote must key it by this one.
type InfoPutter interface {
	PutInfo(ctx context.Context, key string, r io.Reader) (Info, error)
}

// LocalPather is offered by stores whose objects are local files that a plugin can read directly.
type LocalPather interface {
	LocalPath(key string) (string, error)
	// Root is the folder all keys are under: the object of a (valid) key k is Root()/k.
	Root() string
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

// Unavailable classifies err, a failure of the store that leaves the caller without an answer,
// as ErrUnavailable while keeping it whole, so errors.Is and errors.As still find the backend's
// cause. To a caller, a store that fails in a way it cannot act on (a local permission error,
// an S3 403 once the credentials are revoked) is as good as down. A cancelled context stays
// what it is: the caller gave up, the store did not fail.
func Unavailable(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) || errors.Is(err, context.Canceled) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// DefaultTimeout is NECTAR_STORE_TIMEOUT's default: how long a stat or a delete of a remote
// store may take, retries included (Bounded); each request of a transfer waits
// TransferHeaderTimeout of it for the store to start answering.
const DefaultTimeout = 10 * time.Second

// Bounded runs op, a read of store that moves no data (a stat, an existence check) or a delete,
// with at most d for it, retries included (d <= 0: no bound). A store that stops answering (a
// blackholed endpoint, a frozen server) then costs a request d and a 503 rather than the SDK's
// minute per attempt; the error says what ran out. Writes whose outcome matters (a lease) are
// not bounded so: one cut off may still land, and its writer would not know it holds the key.
func Bounded[T any](ctx context.Context, d time.Duration, store fmt.Stringer, op func(context.Context) (T, error)) (T, error) {
	if d <= 0 {
		return op(ctx)
	}
	octx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	v, err := op(octx)
	var ne net.Error
	timedOut := errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
	if timedOut && errors.Is(octx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
		// Only the bound's own end: an answer that came (a 404, a 412) is the caller's to read.
		err = fmt.Errorf("%w: %s gave no answer within %s (NECTAR_STORE_TIMEOUT): %w", ErrUnavailable, store, d, err)
	}
	return v, err
}

// IdleConnsPerHost is how many idle connections a store's HTTP client keeps to its endpoint.
// A server sends a store up to NECTAR_TASK_PARALLELISM commits at once, beside as many
// existence checks: with the SDKs' own defaults (10 for AWS's, 16 for minio-go's) every
// request beyond them opened a connection and closed it after its answer, and a 1,000-leaf
// fan-in on MinIO opened thousands. Idle ones close after 90 s (the transports' default).
const IdleConnsPerHost = 256

// TransferHeaderTimeout is how long each request of a store waits for the store to start
// answering: NECTAR_STORE_TIMEOUT, but never under 30 s, as MinIO answers the last request of
// a multipart upload only once it has assembled the object, or after 10 s with a heartbeat.
func TransferHeaderTimeout(d time.Duration) time.Duration { return max(d, 30*time.Second) }

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

// SinglePutSize is the most a remote store's Put sends in one request when it knows the
// length beforehand: the body is read into memory and sent with its length (one round trip)
// rather than as a multipart upload (at least three). Records, params, metrics and leases are
// all far smaller. A body of unknown length streams as before, whatever its size.
const SinglePutSize = 5 << 20

// SmallBody reads all of r when r says its length (a bytes.Reader, a bytes.Buffer, a
// strings.Reader) and that is at most SinglePutSize; ok is false otherwise, and r is untouched.
func SmallBody(key string, r io.Reader) (b []byte, ok bool, err error) {
	l, known := r.(interface{ Len() int })
	if !known || l.Len() > SinglePutSize {
		return nil, false, nil
	}
	b = make([]byte, l.Len())
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, false, fmt.Errorf("put %s: reading: %w", key, err)
	}
	return b, true, nil
}

// CheckBucketName applies S3's bucket naming rules (MinIO's are the same), so a name the server
// would refuse is reported as such when the store is opened. Sent anyway, it comes back as a
// bare HTTP 400 that reads like bad credentials.
func CheckBucketName(name string) error {
	why := ""
	switch {
	case len(name) < 3 || len(name) > 63:
		why = fmt.Sprintf("this one has %d", len(name))
	case strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789.-") != "":
		why = "this one has other characters"
	case !isAlnum(name[0]) || !isAlnum(name[len(name)-1]):
		why = "this one does not begin and end with a letter or digit"
	case strings.Contains(name, ".."):
		why = "this one has two '.' in a row"
	case isIPv4(name):
		why = "this one is shaped like an IP address"
	default:
		return nil
	}
	return fmt.Errorf("bucket %q: S3 bucket names are 3 to 63 characters of a-z, 0-9, '.' and '-', "+
		"beginning and ending with a letter or digit, without two '.' in a row, and not shaped like an IP address (%s)", name, why)
}

func isAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

func isIPv4(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return false
	}
	for _, p := range parts {
		if p == "" || len(p) > 3 || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
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
