// Package s3 keeps targets in an S3 bucket through aws-sdk-go-v2: AWS itself, or any
// S3-compatible server (MinIO, Ceph...) when an endpoint is given, addressed path-style.
//
// Objects are exactly the local layout under an optional prefix. Writes are single PUTs up to
// PartSize and streamed multipart uploads above it, so memory stays at one part whatever the
// size, and an object appears only when its upload completes: no reader sees a partial out.
package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"nectar/targets"
)

// PartSize is the multipart part size and the largest single PUT (S3's minimum part is 5 MiB).
const PartSize = 8 << 20

// Config says where the bucket is.
type Config struct {
	Bucket string
	Prefix string
	// Endpoint is an S3-compatible server the store talks to ("" = AWS). It turns on
	// path-style addressing.
	Endpoint string
	// PublicEndpoint, if set, is the host presigned URLs are signed for (a presigned URL only
	// works for the host it names); "" = Endpoint.
	PublicEndpoint string
	Region         string
	// Timeout bounds a stat or a delete, retries included (targets.Bounded); each request of
	// a transfer waits targets.TransferHeaderTimeout(Timeout) for the store to start answering.
	// targets.DefaultTimeout when 0.
	Timeout time.Duration
}

// Store is a bucket (and prefix).
type Store struct {
	cfg     Config
	prefix  targets.Prefix
	client  *awss3.Client
	presign *awss3.PresignClient
}

// Open loads credentials from the standard AWS chain and checks that the bucket answers.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg.Prefix = string(targets.NewPrefix(cfg.Prefix))
	if cfg.Bucket == "" {
		return nil, errors.New("s3 target: no bucket given (want s3://bucket/prefix)")
	}
	if err := targets.CheckBucketName(cfg.Bucket); err != nil {
		return nil, fmt.Errorf("s3 target: %w", err)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = targets.DefaultTimeout
	}
	// The SDK's client waits for an answer without limit: a blackholed endpoint held every
	// request (a status read, a POST) until its client gave up.
	httpClient := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		tr.ResponseHeaderTimeout = targets.TransferHeaderTimeout(cfg.Timeout)
		tr.MaxIdleConns, tr.MaxIdleConnsPerHost = targets.IdleConnsPerHost, targets.IdleConnsPerHost
	})
	opts := []func(*config.LoadOptions) error{config.WithHTTPClient(httpClient)}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("s3 target: loading AWS configuration: %w", err)
	}
	if awsCfg.Region == "" {
		awsCfg.Region = "us-east-1" // S3-compatible servers accept any; AWS needs AWS_REGION
	}
	newClient := func(endpoint string) *awss3.Client {
		return awss3.NewFromConfig(awsCfg, func(o *awss3.Options) {
			if endpoint != "" {
				o.BaseEndpoint = aws.String(endpoint)
				o.UsePathStyle = true
			}
			// Checksums only when the API requires them: S3-compatible servers differ here.
			o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
			o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		})
	}
	s := &Store{cfg: cfg, prefix: targets.Prefix(cfg.Prefix), client: newClient(cfg.Endpoint)}
	public := cfg.PublicEndpoint
	if public == "" {
		public = cfg.Endpoint
	}
	s.presign = awss3.NewPresignClient(newClient(public))

	checkCtx, cancel := context.WithTimeout(ctx, max(10*time.Second, cfg.Timeout))
	defer cancel()
	if _, err := s.client.HeadBucket(checkCtx, &awss3.HeadBucketInput{Bucket: aws.String(cfg.Bucket)}); err != nil {
		return nil, s.startError(err)
	}
	return s, nil
}

func (s *Store) endpointName() string {
	if s.cfg.Endpoint != "" {
		// Without a password (AWS_ENDPOINT_URL_S3 may carry one), and of a URL that does not
		// parse, nothing but that it is one.
		if u, err := url.Parse(s.cfg.Endpoint); err == nil {
			return u.Redacted()
		}
		return "an endpoint that is not a URL"
	}
	return "AWS S3 (" + s.client.Options().Region + ")"
}

func (s *Store) String() string {
	return fmt.Sprintf("s3 bucket %q at %s", s.cfg.Bucket, s.endpointName())
}

// startError explains why the bucket check failed, naming endpoint and bucket.
func (s *Store) startError(err error) error {
	where := fmt.Sprintf("s3 target: bucket %q at %s", s.cfg.Bucket, s.endpointName())
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.HTTPStatusCode() != 0 { // 0: no answer at all
		switch re.HTTPStatusCode() {
		case http.StatusNotFound:
			return fmt.Errorf("%s: the bucket does not exist", where)
		case http.StatusForbidden, http.StatusUnauthorized, http.StatusBadRequest:
			return fmt.Errorf("%s: access denied (HTTP %d): check the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE)", where, re.HTTPStatusCode())
		}
		return fmt.Errorf("%s: HTTP %d: %v", where, re.HTTPStatusCode(), err)
	}
	return fmt.Errorf("%s: cannot reach the endpoint: %v", where, err)
}

func (s *Store) object(key string) (string, error) { return s.prefix.Object(key) }

// mapErr turns SDK errors into the targets sentinels, naming the key.
func (s *Store) mapErr(key string, err error) error {
	if errors.Is(err, targets.ErrUnavailable) { // classified already (targets.Bounded)
		return err
	}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.HTTPStatusCode() != 0 {
		var api smithy.APIError
		if errors.As(err, &api) && api.ErrorCode() == "NoSuchBucket" {
			return fmt.Errorf("%w: %s: bucket %q is gone", targets.ErrUnavailable, s.endpointName(), s.cfg.Bucket)
		}
		switch re.HTTPStatusCode() {
		case http.StatusNotFound:
			return fmt.Errorf("%s: %w", key, targets.ErrNotExist)
		case http.StatusPreconditionFailed, http.StatusConflict:
			return fmt.Errorf("%s: %w", key, targets.ErrExist)
		case http.StatusServiceUnavailable, http.StatusInternalServerError, http.StatusBadGateway:
			return fmt.Errorf("%w: %s: %w", targets.ErrUnavailable, s, err)
		}
		return fmt.Errorf("%s in %s: %w", key, s, err)
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	// No HTTP answer at all: the endpoint is down or unreachable.
	return fmt.Errorf("%w: %s: %w", targets.ErrUnavailable, s, err)
}

func (s *Store) Put(ctx context.Context, key string, r io.Reader) error {
	_, err := s.PutInfo(ctx, key, r)
	return err
}

// PutInfo is Put, returning the version it stored: the ETag S3 answered (targets.InfoPutter).
func (s *Store) PutInfo(ctx context.Context, key string, r io.Reader) (targets.Info, error) {
	obj, err := s.object(key)
	if err != nil {
		return targets.Info{}, err
	}
	small, ok, err := targets.SmallBody(key, r)
	if err != nil {
		return targets.Info{}, err
	}
	var buf []byte
	n := len(small)
	if !ok {
		buf = make([]byte, PartSize)
		if n, err = io.ReadFull(r, buf); err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
			return targets.Info{}, fmt.Errorf("put %s: reading: %w", key, err)
		}
		ok, small = err != nil, buf[:n] // ended within the first part
	}
	if ok { // fits in one PUT
		out, err := s.client.PutObject(ctx, &awss3.PutObjectInput{
			Bucket: aws.String(s.cfg.Bucket), Key: aws.String(obj),
			Body: bytes.NewReader(small), ContentLength: aws.Int64(int64(len(small))),
		})
		if err != nil {
			return targets.Info{}, s.mapErr(key, err)
		}
		return targets.Info{Size: int64(len(small)), ETag: aws.ToString(out.ETag)}, nil
	}
	// Larger: multipart, one part buffered at a time.
	return s.multipart(ctx, key, obj, nil, func(part int) (io.ReadSeeker, int64, error) {
		if part == 1 {
			return bytes.NewReader(buf[:n]), int64(n), nil
		}
		n, err := io.ReadFull(r, buf)
		if err == io.EOF {
			return nil, 0, io.EOF
		}
		if err != nil && err != io.ErrUnexpectedEOF {
			return nil, 0, fmt.Errorf("reading: %w", err)
		}
		return bytes.NewReader(buf[:n]), int64(n), nil
	})
}

// CommitFile uploads a finished local file: sections of the file are sent as parts, so nothing
// is buffered in memory whatever the size.
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
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	if size <= PartSize {
		_, err = s.client.PutObject(ctx, &awss3.PutObjectInput{
			Bucket: aws.String(s.cfg.Bucket), Key: aws.String(obj), Body: f, ContentLength: aws.Int64(size), Metadata: meta,
		})
		if err != nil {
			return s.mapErr(key, err)
		}
		return nil
	}
	_, err = s.multipart(ctx, key, obj, meta, func(part int) (io.ReadSeeker, int64, error) {
		off := int64(part-1) * PartSize
		if off >= size {
			return nil, 0, io.EOF
		}
		n := min(PartSize, size-off)
		return io.NewSectionReader(f, off, n), n, nil
	})
	return err
}

// multipart uploads the parts next returns until io.EOF; on any failure the upload is aborted,
// so no object (and no orphaned parts) remain.
func (s *Store) multipart(ctx context.Context, key, obj string, meta map[string]string, next func(part int) (io.ReadSeeker, int64, error)) (targets.Info, error) {
	up, err := s.client.CreateMultipartUpload(ctx, &awss3.CreateMultipartUploadInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(obj), Metadata: meta})
	if err != nil {
		return targets.Info{}, s.mapErr(key, err)
	}
	abort := func(cause error) (targets.Info, error) {
		actx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s.client.AbortMultipartUpload(actx, &awss3.AbortMultipartUploadInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(obj), UploadId: up.UploadId})
		return targets.Info{}, cause
	}
	var parts []types.CompletedPart
	var size int64
	for part := 1; ; part++ {
		body, n, err := next(part)
		if err == io.EOF {
			break
		}
		if err != nil {
			return abort(fmt.Errorf("put %s: %w", key, err))
		}
		out, err := s.client.UploadPart(ctx, &awss3.UploadPartInput{
			Bucket: aws.String(s.cfg.Bucket), Key: aws.String(obj), UploadId: up.UploadId,
			PartNumber: aws.Int32(int32(part)), Body: body, ContentLength: aws.Int64(n),
		})
		if err != nil {
			return abort(s.mapErr(key, err))
		}
		parts = append(parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(int32(part))})
		size += n
	}
	done, err := s.client.CompleteMultipartUpload(ctx, &awss3.CompleteMultipartUploadInput{
		Bucket: aws.String(s.cfg.Bucket), Key: aws.String(obj), UploadId: up.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil {
		return abort(s.mapErr(key, err))
	}
	return targets.Info{Size: size, ETag: aws.ToString(done.ETag)}, nil
}

// CreateIfAbsent is a PUT with If-None-Match: *; S3 answers 412 to all but the first.
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
	out, err := s.client.PutObject(ctx, &awss3.PutObjectInput{
		Bucket: aws.String(s.cfg.Bucket), Key: aws.String(obj), Body: bytes.NewReader(b),
		ContentLength: aws.Int64(int64(len(b))), IfNoneMatch: aws.String("*"),
	})
	if err != nil {
		return targets.Info{}, s.mapErr(key, err)
	}
	return targets.Info{Size: int64(len(b)), ETag: aws.ToString(out.ETag)}, nil
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
	out, err := s.client.PutObject(ctx, &awss3.PutObjectInput{
		Bucket: aws.String(s.cfg.Bucket), Key: aws.String(obj), IfMatch: aws.String(quoteETag(seen.ETag)),
		Body: bytes.NewReader(b), ContentLength: aws.Int64(int64(len(b))),
	})
	if err != nil {
		if err = s.mapErr(key, err); errors.Is(err, targets.ErrExist) || errors.Is(err, targets.ErrNotExist) {
			return targets.Info{}, fmt.Errorf("%s: %w", key, targets.ErrChanged)
		}
		return targets.Info{}, err
	}
	return targets.Info{Size: int64(len(b)), ETag: aws.ToString(out.ETag)}, nil
}

// quoteETag quotes an ETag given without its quotes (If-Match compares the quoted form; S3's
// own answers keep them).
func quoteETag(etag string) string {
	if strings.HasPrefix(etag, `"`) {
		return etag
	}
	return `"` + etag + `"`
}

func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	obj, err := s.object(key)
	if err != nil {
		return nil, err
	}
	out, err := s.client.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(obj)})
	if err != nil {
		return nil, s.mapErr(key, err)
	}
	return out.Body, nil
}

func (s *Store) Stat(ctx context.Context, key string) (targets.Info, error) {
	obj, err := s.object(key)
	if err != nil {
		return targets.Info{}, err
	}
	out, err := targets.Bounded(ctx, s.cfg.Timeout, s, func(ctx context.Context) (*awss3.HeadObjectOutput, error) {
		return s.client.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(obj)})
	})
	if err != nil {
		return targets.Info{}, s.mapErr(key, err)
	}
	info := targets.Info{Size: aws.ToInt64(out.ContentLength), ETag: aws.ToString(out.ETag), Meta: out.Metadata} // (names in lower case)
	if out.LastModified != nil {
		info.ModTime = *out.LastModified
	}
	return info, nil
}

func (s *Store) Delete(ctx context.Context, key string) error {
	obj, err := s.object(key)
	if err != nil {
		return err
	}
	_, err = targets.Bounded(ctx, s.cfg.Timeout, s, func(ctx context.Context) (*awss3.DeleteObjectOutput, error) {
		return s.client.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(obj)})
	})
	if err != nil {
		return s.mapErr(key, err)
	}
	return nil
}

func (s *Store) List(ctx context.Context, prefix string) ([]string, error) {
	full := s.prefix.Join(prefix)
	var keys []string
	p := awss3.NewListObjectsV2Paginator(s.client, &awss3.ListObjectsV2Input{Bucket: aws.String(s.cfg.Bucket), Prefix: aws.String(full)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, s.mapErr(prefix, err)
		}
		for _, o := range page.Contents {
			keys = append(keys, s.prefix.Key(aws.ToString(o.Key)))
		}
	}
	return keys, nil
}

// PresignGet signs a GET for the public endpoint; S3 caps expiry at 7 days.
func (s *Store) PresignGet(ctx context.Context, key string, expiry time.Duration) (string, error) {
	return s.PresignGetAs(ctx, key, expiry, "")
}

// PresignGetAs is PresignGet with the content type the object is served with ("": as stored).
func (s *Store) PresignGetAs(ctx context.Context, key string, expiry time.Duration, contentType string) (string, error) {
	obj, err := s.object(key)
	if err != nil {
		return "", err
	}
	in := &awss3.GetObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(obj)}
	if contentType != "" {
		in.ResponseContentType = aws.String(contentType)
	}
	req, err := s.presign.PresignGetObject(ctx, in, awss3.WithPresignExpires(expiry))
	if err != nil {
		return "", fmt.Errorf("presign %s: %w", key, err)
	}
	return req.URL, nil
}

var _ targets.InfoPutter = (*Store)(nil)
