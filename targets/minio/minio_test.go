package minio_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"nectar/targets/minio"
	"nectar/targets/miniotest"
	"nectar/targets/targettest"
)

var srv *miniotest.Server

func TestMain(m *testing.M) { miniotest.Main(m, &srv) }

func config() minio.Config {
	return minio.Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey}
}

func TestConformance(t *testing.T) {
	cfg := config()
	cfg.Prefix = "suite"
	s, err := minio.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	targettest.Run(t, s)
}

func TestOpenErrorsNameEndpointAndBucket(t *testing.T) {
	tests := []struct {
		name string
		edit func(*minio.Config)
		want []string
	}{
		{"missing bucket", func(c *minio.Config) { c.Bucket = "no-such-bucket" }, []string{`bucket "no-such-bucket"`, srv.Endpoint, "does not exist"}},
		{"wrong credentials", func(c *minio.Config) { c.SecretKey = "wrong-secret" }, []string{srv.Bucket, srv.Endpoint, "access denied", "MINIO_SECRET_KEY"}},
		{"unreachable", func(c *minio.Config) { c.Endpoint = "127.0.0.1:1" }, []string{srv.Bucket, "127.0.0.1:1", "cannot reach"}},
		{"no credentials", func(c *minio.Config) { c.AccessKey = "" }, []string{srv.Endpoint, "no credentials", "MINIO_ACCESS_KEY"}},
		{"no bucket", func(c *minio.Config) { c.Bucket = "" }, []string{srv.Endpoint, "no bucket"}},
		{"bad bucket name", func(c *minio.Config) { c.Bucket = "cc" }, []string{srv.Endpoint, `bucket "cc"`, "S3 bucket names are 3 to 63 characters"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config()
			tt.edit(&cfg)
			_, err := minio.Open(context.Background(), cfg)
			if err == nil {
				t.Fatal("Open succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Open error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestLargePutStreamsWithBoundedMemory(t *testing.T) {
	cfg := config()
	cfg.Prefix = "large"
	s, err := minio.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	targettest.LargePut(t, s, 96<<20)
	targettest.LargeCommit(t, s, 96<<20)
}

func TestPresignForThePublicEndpoint(t *testing.T) {
	cfg := config()
	cfg.PublicEndpoint = "https://files.example.com"
	s, err := minio.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	u, err := s.PresignGet(context.Background(), "chains/a/b/C/d/out", 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(u, "https://files.example.com/"+srv.Bucket+"/chains/a/b/C/d/out?") || !strings.Contains(u, "X-Amz-Expires=600") {
		t.Errorf("PresignGet = %s, want the public host and a 600 s expiry", u)
	}
}
