package open

import (
	"context"
	"strings"
	"testing"
)

func TestTargetErrors(t *testing.T) {
	env := func(string) string { return "" }
	tests := []struct {
		spec string
		want string
	}{
		{"ftp://host/x", `unknown target scheme "ftp" (want a folder path, s3://… or minio://…)`},
		{"s3://bucket/p?endpoint=http://127.0.0.1:1&colour=red", "unknown option colour (allowed: endpoint, public_endpoint, region)"},
		{"minio://127.0.0.1:1/bucket?secure=maybe", `secure="maybe" is not true or false`},
		{"minio:///bucket", "no host"},
		{"minio://127.0.0.1:1/bucket", "no credentials (set MINIO_ACCESS_KEY and MINIO_SECRET_KEY"},
		{"s3:///prefix", "no bucket given"},
		{"minio://nectar:Sup3r-secret@127.0.0.1:1/bucket", "credentials do not go in the URL"},
		// A secret key with a "/" does not parse as a URL; the parser's own error quotes it.
		{"minio://AKIAEXAMPLE:wJal/Sup3r-secret@127.0.0.1:9000/bucket", "not a URL (minio://…): credentials go in the environment"},
		{"s3://bucket/p?endpoint=http://u:Sup3r-secret@127.0.0.1:1%zz", `the options after "?" in s3://bucket/p are not a query string`},
		{"s3://bucket/p?endpoint=http://u:Sup3r-secret@127.0.0.1:1", "endpoint=http://u:xxxxx@127.0.0.1:1: credentials do not go in the URL"},
		// Refused before any request: S3 would answer a bare 400 that reads like bad credentials.
		{"s3://cc/prefix?endpoint=http://127.0.0.1:1", `s3 target: bucket "cc": S3 bucket names are 3 to 63 characters`},
		{"minio://127.0.0.1:1/cc/prefix", `bucket "cc": S3 bucket names are 3 to 63 characters`},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			_, err := Target(context.Background(), tt.spec, env, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "NECTAR_TARGET") || strings.Contains(err.Error(), "Sup3r-secret") {
				t.Errorf("Target(%q) = %v, want an error naming NECTAR_TARGET and containing %q, without the secret", tt.spec, err, tt.want)
			}
		})
	}
}

func TestStoreTimeoutIsChecked(t *testing.T) {
	for _, v := range []string{"forever", "0", "500ms", "11m"} {
		env := func(k string) string {
			if k == "NECTAR_STORE_TIMEOUT" {
				return v
			}
			return ""
		}
		want := `NECTAR_STORE_TIMEOUT="` + v + `": want a duration from 1s to 10m`
		for _, spec := range []string{"minio://127.0.0.1:1/bucket", t.TempDir()} {
			if _, err := Target(context.Background(), spec, env, nil); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("NECTAR_STORE_TIMEOUT=%s with %s: %v, want %q", v, spec, err, want)
			}
		}
	}
}

func TestTargetLocalFolder(t *testing.T) {
	dir := t.TempDir()
	s, err := Target(context.Background(), dir, func(string) string { return "" }, nil)
	if err != nil || !strings.Contains(s.String(), dir) {
		t.Errorf("Target(%q) = %v, %v", dir, s, err)
	}
}
