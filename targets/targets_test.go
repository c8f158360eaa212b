package targets

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"
	"time"
)

func TestCheckBucketName(t *testing.T) {
	tests := []struct {
		name string
		why  string // "" = valid
	}{
		{"nectar", ""},
		{"abc", ""},
		{"my.bucket-01", ""},
		{strings.Repeat("a", 63), ""},
		{"cc", "this one has 2"},
		{strings.Repeat("a", 64), "this one has 64"},
		{"My-Bucket", "other characters"},
		{"my_bucket", "other characters"},
		{"-bucket", "begin and end"},
		{"bucket.", "begin and end"},
		{"my..bucket", "two '.' in a row"},
		{"192.168.5.4", "IP address"},
	}
	for _, tt := range tests {
		err := CheckBucketName(tt.name)
		switch {
		case tt.why == "" && err != nil:
			t.Errorf("CheckBucketName(%q) = %v, want nil", tt.name, err)
		case tt.why != "" && (err == nil || !strings.Contains(err.Error(), tt.why) ||
			!strings.Contains(err.Error(), fmt.Sprintf("bucket %q: S3 bucket names are 3 to 63 characters", tt.name))):
			t.Errorf("CheckBucketName(%q) = %v, want the rule and %q", tt.name, err, tt.why)
		}
	}
}

func TestUnavailableKeepsTheCause(t *testing.T) {
	cause := &fs.PathError{Op: "open", Path: "/x", Err: fs.ErrPermission}
	err := Unavailable(fmt.Errorf("reading: %w", cause))
	var pe *fs.PathError
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, fs.ErrPermission) || !errors.As(err, &pe) {
		t.Errorf("Unavailable(%v) = %v, want ErrUnavailable with the cause kept", cause, err)
	}
	already := fmt.Errorf("%w: s3 bucket down", ErrUnavailable)
	if got := Unavailable(already); got != already {
		t.Errorf("Unavailable(%v) = %v, want it unchanged", already, got)
	}
	if got := Unavailable(context.Canceled); got != context.Canceled {
		t.Errorf("Unavailable(context.Canceled) = %v, want it unchanged", got)
	}
	if Unavailable(nil) != nil {
		t.Errorf("Unavailable(nil) != nil")
	}
}

type named string

func (n named) String() string { return string(n) }

// Bounded turns only its own end into the store unavailable, naming the setting; an answer
// that came, late or not, stays what it is, and a caller's own cancel stays a cancel.
func TestBoundedCutsOffOnlyWhatGotNoAnswer(t *testing.T) {
	store := named("minio bucket \"b\" at 127.0.0.1:9000")
	hang := func(ctx context.Context) (int, error) {
		<-ctx.Done()
		return 0, fmt.Errorf("HeadObject: %w", ctx.Err())
	}
	late404 := func(ctx context.Context) (int, error) {
		<-ctx.Done()
		return 0, fmt.Errorf("k: %w", ErrNotExist) // answered, as the bound ended
	}
	if _, err := Bounded(context.Background(), 20*time.Millisecond, store, hang); !errors.Is(err, ErrUnavailable) ||
		!strings.Contains(err.Error(), `minio bucket "b" at 127.0.0.1:9000 gave no answer within 20ms (NECTAR_STORE_TIMEOUT)`) {
		t.Errorf("a store that does not answer: %v", err)
	}
	if _, err := Bounded(context.Background(), 20*time.Millisecond, store, late404); !errors.Is(err, ErrNotExist) || errors.Is(err, ErrUnavailable) {
		t.Errorf("an answer at the bound's end: %v, want it as it came", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Bounded(ctx, time.Second, store, hang); !errors.Is(err, context.Canceled) || errors.Is(err, ErrUnavailable) {
		t.Errorf("a cancelled caller: %v, want the cancel", err)
	}
	if v, err := Bounded(context.Background(), 0, store, func(context.Context) (int, error) { return 7, nil }); v != 7 || err != nil {
		t.Errorf("no bound: %d %v", v, err)
	}
}

// Two versions of an object are told apart by their ETags where both have one (S3 and MinIO
// answer a PUT with the ETag only, a HEAD with a time too), else by size and time.
func TestSameVersion(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 5, 0, 0, 123, time.UTC)
	t1 := t0.Add(time.Nanosecond)
	for _, tc := range []struct {
		name string
		a, b Info
		same bool
	}{
		{"same ETag, one without a time", Info{Size: 5, ETag: `"abc"`}, Info{Size: 5, ModTime: t0, ETag: `"abc"`}, true},
		{"same ETag, quoted and not", Info{Size: 5, ETag: "abc"}, Info{Size: 5, ETag: `"abc"`}, true},
		{"same ETag, other size", Info{Size: 5, ETag: "abc"}, Info{Size: 6, ETag: "abc"}, false},
		{"other ETag, same size and time", Info{Size: 5, ModTime: t0, ETag: "abc"}, Info{Size: 5, ModTime: t0, ETag: "abd"}, false},
		{"an ETag on one side only", Info{Size: 5, ModTime: t0, ETag: "abc"}, Info{Size: 5, ModTime: t0}, false},
		{"no ETag, same size and time", Info{Size: 5, ModTime: t0}, Info{Size: 5, ModTime: t0}, true},
		{"no ETag, another time", Info{Size: 5, ModTime: t0}, Info{Size: 5, ModTime: t1}, false},
		{"no ETag, another size", Info{Size: 5, ModTime: t0}, Info{Size: 4, ModTime: t0}, false},
	} {
		if got := SameVersion(tc.a, tc.b); got != tc.same {
			t.Errorf("%s: SameVersion(%+v, %+v) = %v, want %v", tc.name, tc.a, tc.b, got, tc.same)
		}
		if got := SameVersion(tc.b, tc.a); got != tc.same {
			t.Errorf("%s, the other way round: %v, want %v", tc.name, got, tc.same)
		}
	}
}
