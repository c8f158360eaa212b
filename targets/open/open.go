// Package open turns a NECTAR_TARGET value into a store: a folder path (the default), an
// s3://bucket/prefix URL or a minio://host:port/bucket/prefix URL. It is the only place that
// knows every backend; the server depends on it, the backends do not.
package open

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"nectar/targets"
	"nectar/targets/local"
	"nectar/targets/minio"
	"nectar/targets/s3"
)

// Schemes lists what NECTAR_TARGET accepts besides a folder path.
var Schemes = []string{"s3", "minio"}

// Target opens spec. getenv supplies the environment (credentials, endpoints); localSigner makes
// the download URLs of a local store.
func Target(ctx context.Context, spec string, getenv func(string) string, localSigner local.URLSigner) (targets.Store, error) {
	timeout, err := StoreTimeout(getenv) // checked with a folder too: a mistake is said at once
	if err != nil {
		return nil, err
	}
	scheme, _, isURL := strings.Cut(spec, "://")
	if !isURL {
		st, err := local.New(spec, localSigner)
		if err != nil {
			return nil, fmt.Errorf("NECTAR_TARGET=%q: %w", spec, err)
		}
		return st, nil
	}
	u, err := url.Parse(spec)
	if err != nil {
		// Not even the parser's reason: it quotes the URL, or the part it stumbled on, which may
		// be a secret's (a key with a "/" in it).
		if len(scheme) > 20 || strings.ContainsAny(scheme, "@/:") {
			scheme = "?"
		}
		return nil, fmt.Errorf("NECTAR_TARGET: not a URL (%s://…): credentials go in the environment, not in the target; percent-encode any reserved character", scheme)
	}
	if u.User != nil {
		// Credentials come from the environment, where they are not shown with the target.
		return nil, fmt.Errorf("NECTAR_TARGET=%q: credentials do not go in the URL: set MINIO_ACCESS_KEY and MINIO_SECRET_KEY (minio://) or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", u.Redacted())
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil { // (its error quotes the part it stumbled on)
		return nil, fmt.Errorf("NECTAR_TARGET: the options after \"?\" in %s://%s%s are not a query string: percent-encode reserved characters", scheme, u.Host, u.Path)
	}
	for _, name := range []string{"endpoint", "public_endpoint"} {
		if e, err := url.Parse(q.Get(name)); err == nil && e.User != nil {
			return nil, fmt.Errorf("NECTAR_TARGET: %s=%s: credentials do not go in the URL: set them in the environment", name, e.Redacted())
		}
	}
	// From here on messages show spec as it is: it holds no credentials (checked above).
	switch scheme {
	case "s3":
		if err := onlyParams(q, "endpoint", "public_endpoint", "region"); err != nil {
			return nil, fmt.Errorf("NECTAR_TARGET=%q: %w", spec, err)
		}
		cfg := s3.Config{
			Bucket:         u.Host,
			Prefix:         u.Path,
			Endpoint:       first(q.Get("endpoint"), getenv("AWS_ENDPOINT_URL_S3")),
			PublicEndpoint: first(q.Get("public_endpoint"), getenv("NECTAR_PUBLIC_STORE_ENDPOINT")),
			Region:         first(q.Get("region"), getenv("AWS_REGION")),
			Timeout:        timeout,
		}
		st, err := s3.Open(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("NECTAR_TARGET=%q: %w", spec, err)
		}
		return st, nil
	case "minio":
		if err := onlyParams(q, "secure", "public_endpoint", "region"); err != nil {
			return nil, fmt.Errorf("NECTAR_TARGET=%q: %w", spec, err)
		}
		bucket, prefix, _ := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
		secure := true
		if v := q.Get("secure"); v != "" {
			if secure, err = strconv.ParseBool(v); err != nil {
				return nil, fmt.Errorf("NECTAR_TARGET=%q: secure=%q is not true or false", spec, v)
			}
		}
		if u.Host == "" {
			return nil, fmt.Errorf("NECTAR_TARGET=%q: no host (want minio://host:port/bucket/prefix)", spec)
		}
		cfg := minio.Config{
			Endpoint:       u.Host,
			Secure:         secure,
			Bucket:         bucket,
			Prefix:         prefix,
			AccessKey:      first(getenv("MINIO_ACCESS_KEY"), getenv("AWS_ACCESS_KEY_ID")),
			SecretKey:      first(getenv("MINIO_SECRET_KEY"), getenv("AWS_SECRET_ACCESS_KEY")),
			Region:         first(q.Get("region"), getenv("AWS_REGION")),
			PublicEndpoint: first(q.Get("public_endpoint"), getenv("NECTAR_PUBLIC_STORE_ENDPOINT")),
			Timeout:        timeout,
		}
		st, err := minio.Open(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("NECTAR_TARGET=%q: %w", spec, err)
		}
		return st, nil
	}
	return nil, fmt.Errorf("NECTAR_TARGET=%q: unknown target scheme %q (want a folder path, %s)", spec, scheme,
		strings.Join(mapStrings(Schemes, func(s string) string { return s + "://…" }), " or "))
}

// StoreTimeout is NECTAR_STORE_TIMEOUT: how long a remote store gets for an operation that
// moves no data (targets.DefaultTimeout when unset), in Go's form or in plain seconds.
func StoreTimeout(getenv func(string) string) (time.Duration, error) {
	v := getenv("NECTAR_STORE_TIMEOUT")
	if v == "" {
		return targets.DefaultTimeout, nil
	}
	d, err := time.ParseDuration(v)
	if n, nerr := strconv.Atoi(v); err != nil && nerr == nil { // plain seconds
		d, err = time.Duration(n)*time.Second, nil
	}
	if err != nil || d < time.Second || d > 10*time.Minute {
		return 0, fmt.Errorf("NECTAR_STORE_TIMEOUT=%q: want a duration from 1s to 10m, such as 10s", v)
	}
	return d, nil
}

func onlyParams(q url.Values, allowed ...string) error {
	var unknown []string
	for k := range q {
		if !slices.Contains(allowed, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("unknown option %s (allowed: %s)", strings.Join(unknown, ", "), strings.Join(allowed, ", "))
	}
	return nil
}

func first(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

func mapStrings(in []string, f func(string) string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = f(s)
	}
	return out
}
