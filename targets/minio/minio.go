// Package minio keeps targets in a MinIO (or any S3-compatible) bucket through minio-go: the
// same layout and guarantees as the local folder. Uploads of unknown size stream in PartSize
// parts (minio-go would otherwise size its buffer for a 5 TiB object).
package minio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"nectar/targets"
)

// PartSize bounds the memory of a streamed upload (one part at a time).
const PartSize = 16 << 20

// Config says where the bucket is.
type Config struct {
	Endpoint  string // host:port
	Secure    bool   // https
	Bucket    string
	Prefix    string
	AccessKey string
	SecretKey string
	Region    string
	// PublicEndpoint (host:port, or a URL) is the host presigned URLs are signed for; "" = Endpoint.
	PublicEndpoint string
	// Timeout bounds a stat or a delete, retries included (targets.Bounded); each request of
	// a transfer waits targets.TransferHeaderTimeout(Timeout) for the store to start answering.
	// targets.DefaultTimeout when 0.
	Timeout time.Duration
}

// Store is a bucket (and prefix).
type Store struct {
	cfg     Config
	prefix  targets.Prefix
	client  *minio.Client
	presign *minio.Client
}

// Open connects and checks that the bucket exists and the credentials work.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg.Prefix = string(targets.NewPrefix(cfg.Prefix))
	if cfg.Bucket == "" {
		return nil, fmt.Errorf("minio target at %s: no bucket given (want minio://host:port/bucket/prefix)", cfg.Endpoint)
	}
	if err := targets.CheckBucketName(cfg.Bucket); err != nil {
		return nil, fmt.Errorf("minio target at %s: %w", cfg.Endpoint, err)
	}
	if cfg.AccessKey == "" || cfg.SecretKey == "" {
		return nil, fmt.Errorf("minio target at %s: no credentials (set MINIO_ACCESS_KEY and MINIO_SECRET_KEY, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)", cfg.Endpoint)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1" // also spares minio-go a bucket-location request per presign
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = targets.DefaultTimeout
	}
	newClient := func(endpoint string, secure bool) (*minio.Client, error) {
		// minio-go waits a minute for each answer: a frozen server held a request that long.
		tr, err := minio.DefaultTransport(secure)
		if err != nil {
			return nil, err
		}
		tr.ResponseHeaderTimeout = targets.TransferHeaderTimeout(cfg.Timeout)
		tr.MaxIdleConns, tr.MaxIdleConnsPerHost = targets.IdleConnsPerHost, targets.IdleConnsPerHost
		return minio.New(endpoint, &minio.Options{
			Creds:     credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
			Secure:    secure,
			Region:    cfg.Region,
			Transport: tr,
			// minio-go retries 10 times by default: an outage would take ~10 s to report.
			MaxRetries: 3,
		})
	}
	client, err := newClient(cfg.Endpoint, cfg.Secure)
	if err != nil {
		return nil, fmt.Errorf("minio target at %s: %w", cfg.Endpoint, err)
	}
	s := &Store{cfg: cfg, prefix: targets.Prefix(cfg.Prefix), client: client, presign: client}
	if cfg.PublicEndpoint != "" {
		host, secure := cfg.PublicEndpoint, cfg.Secure
		if u, err := url.Parse(cfg.PublicEndpoint); err == nil && u.Host != "" {
			host, secure = u.Host, u.Scheme == "https"
		}
		if s.presign, err = newClient(host, secure); err != nil {
			return nil, fmt.Errorf("minio target: public endpoint %s: %w", cfg.PublicEndpoint, err)
		}
	}
	checkCtx, cancel := context.WithTimeout(ctx, max(10*time.Second, cfg.Timeout))
	defer cancel()
	ok, err := client.BucketExists(checkCtx, cfg.Bucket)
	where := fmt.Sprintf("minio target: bucket %q at %s", cfg.Bucket, cfg.Endpoint)
	switch {
	case err != nil:
		resp := minio.ToErrorResponse(err)
		switch {
		case resp.StatusCode == http.StatusForbidden || resp.Code == "InvalidAccessKeyId" || resp.Code == "SignatureDoesNotMatch" || resp.Code == "AccessDenied":
			return nil, fmt.Errorf("%s: access denied (%s): check MINIO_ACCESS_KEY and MINIO_SECRET_KEY", where, resp.Code)
		case resp.StatusCode == 0:
			return nil, fmt.Errorf("%s: cannot reach the endpoint: %v", where, err)
		}
		return nil, fmt.Errorf("%s: %v", where, err)
	case !ok:
		return nil, fmt.Errorf("%s: the bucket does not exist", where)
	}
	return s, nil
}

func (s *Store) String() string {
	return fmt.Sprintf("minio bucket %q at %s", s.cfg.Bucket, s.cfg.Endpoint)
}

func (s *Store) object(key string) (string, error) { return s.prefix.Object(key) }

func (s *Store) mapErr(key string, err error) error {
	if errors.Is(err, targets.ErrUnavailable) { // classified already (targets.Bounded)
		return err
	}
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.Code == "NoSuchBucket":
		return fmt.Errorf("%w: %s: bucket is gone", targets.ErrUnavailable, s)
	case resp.Code == "NoSuchKey" || resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%s: %w", key, targets.ErrNotExist)
	case resp.Code == "PreconditionFailed" || resp.StatusCode == http.StatusPreconditionFailed:
		return fmt.Errorf("%s: %w", key, targets.ErrExist)
	case errors.Is(err, context.Canceled):
		return err
	case resp.StatusCode == 0 || resp.StatusCode >= 500:
		return fmt.Errorf("%w: %s: %w", targets.ErrUnavailable, s, err)
	}
	return fmt.Errorf("%s in %s: %w", key, s, err)
}

func (s *Store) putOptions() minio.PutObjectOptions {
	return minio.PutObjectOptions{PartSize: PartSize, ContentType: "application/octet-stream"}
}

func (s *Store) Put(ctx context.Context, key string, r io.Reader) error {
	_, err := s.PutInfo(ctx, key, r)
	return err
}

// PutInfo is Put, returning the version it stored: the ETag MinIO answered
// (targets.InfoPutter).
func (s *Store) PutInfo(ctx context.Context, key string, r io.Reader) (targets.Info, error) {
	obj, err := s.object(key)
	if err != nil {
		return targets.Info{}, err
	}
	// Small (every record, params, metrics): one PUT of known length. Of unknown length,
	// minio-go makes a multipart upload, three round trips even for a few bytes.
	body, size := r, int64(-1)
	small, ok, err := targets.SmallBody(key, r)
	if err != nil {
		return targets.Info{}, err
	}
	if ok {
		body, size = bytes.NewReader(small), int64(len(small))
	}
	up, err := s.client.PutObject(ctx, s.cfg.Bucket, obj, body, size, s.putOptions())
	if err != nil {
		return targets.Info{}, s.mapErr(key, err)
	}
	return targets.Info{Size: up.Size, ModTime: up.LastModified, ETag: up.ETag}, nil
}

// CommitFile uploads a finished local file, in parts read from the file (no buffering).
func (s *Store) CommitFile(ctx context.Context, key, file string) error {
	return s.CommitFileMeta(ctx, key, file, nil)
}

// CommitFileMeta is CommitFile, storing meta as the object's user metadata
// (targets.MetaCommitter).
func (s *Store) CommitFileMeta(ctx context.Context, key, file string, meta map[string]string) error {
	obj, err := s.object(key)
	if err != nil {
		return err
	}
	opts := s.putOptions()
	opts.UserMetadata = meta
	if _, err := s.client.FPutObject(ctx, s.cfg.Bucket, obj, file, opts); err != nil {
		return s.mapErr(key, err)
	}
	return nil
}

// CreateIfAbsent is a PUT with If-None-Match: *.
func (s *Store) CreateIfAbsent(ctx context.Context, key string, r io.Reader) error {
	_, err := s.CreateIfAbsentInfo(ctx, key, r)
	return err
}

// CreateIfAbsentInfo is CreateIfAbsent, returning the version the PUT stored.
func (s *Store) CreateIfAbsentInfo(ctx context.Context, key string, r io.Reader) (targets.Info, error) {
	obj, err := s.object(key)
	if err != nil {
		return targets.Info{}, err
	}
	b, err := targets.ReadSmall(key, r)
	if err != nil {
		return targets.Info{}, err
	}
	opts := s.putOptions()
	opts.SetMatchETagExcept("*")
	up, err := s.client.PutObject(ctx, s.cfg.Bucket, obj, bytes.NewReader(b), int64(len(b)), opts)
	if err != nil {
		return targets.Info{}, s.mapErr(key, err)
	}
	return targets.Info{Size: up.Size, ModTime: up.LastModified, ETag: up.ETag}, nil
}

// ReplaceIf is a PUT with If-Match: the ETag seen.
func (s *Store) ReplaceIf(ctx context.Context, key string, seen targets.Info, b []byte) (targets.Info, error) {
	obj, err := s.object(key)
	if err != nil {
		return targets.Info{}, err
	}
	if seen.ETag == "" {
		return targets.Info{}, fmt.Errorf("%s: %w", key, targets.ErrChanged)
	}
	opts := s.putOptions()
	opts.SetMatchETag(seen.ETag)
	up, err := s.client.PutObject(ctx, s.cfg.Bucket, obj, bytes.NewReader(b), int64(len(b)), opts)
	if err != nil {
		if err = s.mapErr(key, err); errors.Is(err, targets.ErrExist) || errors.Is(err, targets.ErrNotExist) {
			return targets.Info{}, fmt.Errorf("%s: %w", key, targets.ErrChanged)
		}
		return targets.Info{}, err
	}
	return targets.Info{Size: up.Size, ModTime: up.LastModified, ETag: up.ETag}, nil
}

func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	obj, err := s.object(key)
	if err != nil {
		return nil, err
	}
	o, err := s.client.GetObject(ctx, s.cfg.Bucket, obj, minio.GetObjectOptions{})
	if err != nil {
		return nil, s.mapErr(key, err)
	}
	// GetObject is lazy: Stat makes the request, so a missing key is reported here.
	if _, err := o.Stat(); err != nil {
		o.Close()
		return nil, s.mapErr(key, err)
	}
	return o, nil
}

func (s *Store) Stat(ctx context.Context, key string) (targets.Info, error) {
	obj, err := s.object(key)
	if err != nil {
		return targets.Info{}, err
	}
	info, err := targets.Bounded(ctx, s.cfg.Timeout, s, func(ctx context.Context) (minio.ObjectInfo, error) {
		return s.client.StatObject(ctx, s.cfg.Bucket, obj, minio.StatObjectOptions{})
	})
	if err != nil {
		return targets.Info{}, s.mapErr(key, err)
	}
	return targets.Info{Size: info.Size, ModTime: info.LastModified, ETag: info.ETag, Meta: userMeta(info.UserMetadata)}, nil
}

// userMeta is an object's user metadata with the names in lower case, as S3's SDK gives them
// (minio-go keeps the header's spelling: Nectar-Log).
func userMeta(m minio.StringMap) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[strings.ToLower(k)] = v
	}
	return out
}

func (s *Store) Delete(ctx context.Context, key string) error {
	obj, err := s.object(key)
	if err != nil {
		return err
	}
	_, err = targets.Bounded(ctx, s.cfg.Timeout, s, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, s.client.RemoveObject(ctx, s.cfg.Bucket, obj, minio.RemoveObjectOptions{})
	})
	if err != nil {
		return s.mapErr(key, err)
	}
	return nil
}

func (s *Store) List(ctx context.Context, prefix string) ([]string, error) {
	full := s.prefix.Join(prefix)
	var keys []string
	for o := range s.client.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: full, Recursive: true}) {
		if o.Err != nil {
			return nil, s.mapErr(prefix, o.Err)
		}
		keys = append(keys, s.prefix.Key(o.Key))
	}
	return keys, nil
}

// PresignGet signs a GET for the public endpoint (computed locally: no request is made).
func (s *Store) PresignGet(ctx context.Context, key string, expiry time.Duration) (string, error) {
	return s.PresignGetAs(ctx, key, expiry, "")
}

// PresignGetAs is PresignGet with the content type the object is served with ("": as stored).
func (s *Store) PresignGetAs(ctx context.Context, key string, expiry time.Duration, contentType string) (string, error) {
	obj, err := s.object(key)
	if err != nil {
		return "", err
	}
	var params url.Values
	if contentType != "" {
		params = url.Values{"response-content-type": {contentType}}
	}
	u, err := s.presign.PresignedGetObject(ctx, s.cfg.Bucket, obj, expiry, params)
	if err != nil {
		return "", fmt.Errorf("presign %s: %w", key, err)
	}
	return u.String(), nil
}

var _ targets.InfoPutter = (*Store)(nil)
