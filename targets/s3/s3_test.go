package s3_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"nectar/targets/miniotest"
	"nectar/targets/s3"
	"nectar/targets/targettest"
)

var srv *miniotest.Server

func TestMain(m *testing.M) { miniotest.Main(m, &srv) }

func open(t *testing.T, prefix string) *s3.Store {
	t.Helper()
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	t.Setenv("AWS_REGION", "us-east-1")
	s, err := s3.Open(context.Background(), s3.Config{Bucket: srv.Bucket, Prefix: prefix, Endpoint: srv.URL()})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	targettest.Run(t, open(t, "suite"))
}

func TestOpenErrorsNameEndpointAndBucket(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	t.Setenv("AWS_REGION", "us-east-1")
	tests := []struct {
		name string
		cfg  s3.Config
		env  map[string]string
		want []string
	}{
		{"missing bucket", s3.Config{Bucket: "no-such-bucket", Endpoint: srv.URL()}, nil, []string{`bucket "no-such-bucket"`, srv.URL(), "does not exist"}},
		{"wrong credentials", s3.Config{Bucket: srv.Bucket, Endpoint: srv.URL()}, map[string]string{"AWS_SECRET_ACCESS_KEY": "wrong"}, []string{srv.Bucket, srv.URL(), "access denied", "AWS_SECRET_ACCESS_KEY"}},
		{"unreachable", s3.Config{Bucket: srv.Bucket, Endpoint: "http://127.0.0.1:1"}, nil, []string{srv.Bucket, "http://127.0.0.1:1", "cannot reach"}},
		{"no bucket", s3.Config{Endpoint: srv.URL()}, nil, []string{"no bucket"}},
		{"bad bucket name", s3.Config{Bucket: "cc", Endpoint: srv.URL()}, nil, []string{`bucket "cc"`, "S3 bucket names are 3 to 63 characters"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			_, err := s3.Open(context.Background(), tt.cfg)
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
	targettest.LargePut(t, open(t, "large"), 96<<20)
	targettest.LargeCommit(t, open(t, "large"), 96<<20)
}

// Presigned URLs name the public endpoint when one is set: a URL works only for the host it was
// signed for.
func TestPresignForThePublicEndpoint(t *testing.T) {
	open(t, "") // sets the credentials
	s, err := s3.Open(context.Background(), s3.Config{Bucket: srv.Bucket, Endpoint: srv.URL(), PublicEndpoint: "https://files.example.com"})
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
