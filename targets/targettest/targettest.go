// Package targettest is the conformance suite every store backend must pass: the local folder
// now, S3 and MinIO against a real MinIO server. Backends call Run from their own tests.
package targettest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"nectar/targets"
)

// Run exercises s. The store must be empty under the prefix "conformance/".
func Run(t *testing.T, s targets.Store) {
	ctx := context.Background()
	t.Run("PutGetStat", func(t *testing.T) {
		key := "conformance/a/out"
		if err := s.Put(ctx, key, strings.NewReader("hello")); err != nil {
			t.Fatalf("Put: %v", err)
		}
		if got := read(t, s, key); got != "hello" {
			t.Errorf("Get = %q, want hello", got)
		}
		info, err := s.Stat(ctx, key)
		if err != nil || info.Size != 5 {
			t.Errorf("Stat = %+v, %v, want size 5", info, err)
		}
		if err := s.Put(ctx, key, strings.NewReader("replaced")); err != nil {
			t.Fatalf("Put again: %v", err)
		}
		if got := read(t, s, key); got != "replaced" {
			t.Errorf("Get after overwrite = %q", got)
		}
	})
	t.Run("PutInfo", func(t *testing.T) {
		// A store that says which version a write stored says the one Stat then finds, and
		// a later write is another version.
		key := "conformance/info/run"
		put := func(v string) (targets.Info, bool) {
			switch s := s.(type) {
			case targets.Volatile:
				info, err := s.WriteVolatile(key, func(w io.Writer) error { _, err := io.WriteString(w, v); return err })
				if err != nil {
					t.Fatalf("WriteVolatile: %v", err)
				}
				return info, true
			case targets.InfoPutter:
				info, err := s.PutInfo(ctx, key, strings.NewReader(v))
				if err != nil {
					t.Fatalf("PutInfo: %v", err)
				}
				return info, true
			}
			return targets.Info{}, false
		}
		first, ok := put("first version")
		if !ok {
			t.Skip("the store does not say which version a write stored")
		}
		if now, err := s.Stat(ctx, key); err != nil || !targets.SameVersion(first, now) {
			t.Errorf("the write stored %+v; Stat finds %+v, %v", first, now, err)
		}
		second, _ := put("second version, longer")
		if now, err := s.Stat(ctx, key); err != nil || !targets.SameVersion(second, now) || targets.SameVersion(first, now) {
			t.Errorf("the second write stored %+v, the first %+v; Stat finds %+v, %v", second, first, now, err)
		}
	})
	t.Run("CommitFileMeta", func(t *testing.T) {
		// What an object is committed with, Stat gives back (names in lower case); a new
		// version without any has none. A store that keeps no metadata gives none.
		mc, ok := s.(targets.MetaCommitter)
		if !ok {
			if err := s.Put(ctx, "conformance/meta/out", strings.NewReader("x")); err != nil {
				t.Fatal(err)
			}
			if info, err := s.Stat(ctx, "conformance/meta/out"); err != nil || info.Meta != nil {
				t.Errorf("Stat of a store that keeps no metadata = %+v, %v; want no Meta", info, err)
			}
			return
		}
		file := filepath.Join(t.TempDir(), "out")
		if err := os.WriteFile(file, []byte("with meta"), 0o644); err != nil {
			t.Fatal(err)
		}
		key := "conformance/meta/out"
		meta := map[string]string{"nectar-log": "none", "other": "Mixed Case value"}
		if err := mc.CommitFileMeta(ctx, key, file, meta); err != nil {
			t.Fatalf("CommitFileMeta: %v", err)
		}
		if info, err := s.Stat(ctx, key); err != nil || !maps.Equal(info.Meta, meta) || read(t, s, key) != "with meta" {
			t.Errorf("Stat after CommitFileMeta(%v) = %+v, %v", meta, info, err)
		}
		if err := s.Put(ctx, key, strings.NewReader("without")); err != nil {
			t.Fatal(err)
		}
		if info, err := s.Stat(ctx, key); err != nil || len(info.Meta) != 0 {
			t.Errorf("Stat of a version stored without metadata = %+v, %v; want none", info, err)
		}
	})
	t.Run("Missing", func(t *testing.T) {
		if _, err := s.Get(ctx, "conformance/missing"); !errors.Is(err, targets.ErrNotExist) {
			t.Errorf("Get(missing) = %v, want ErrNotExist", err)
		}
		if _, err := s.Stat(ctx, "conformance/missing"); !errors.Is(err, targets.ErrNotExist) {
			t.Errorf("Stat(missing) = %v, want ErrNotExist", err)
		}
		// A "folder" is not an object.
		s.Put(ctx, "conformance/dir/file", strings.NewReader("x"))
		if _, err := s.Stat(ctx, "conformance/dir"); !errors.Is(err, targets.ErrNotExist) {
			t.Errorf("Stat(prefix) = %v, want ErrNotExist", err)
		}
		if err := s.Delete(ctx, "conformance/missing"); err != nil {
			t.Errorf("Delete(missing) = %v, want nil", err)
		}
	})
	t.Run("BadKeys", func(t *testing.T) {
		for _, key := range []string{"", "/abs", "a/../b", "../up", "a//b", "a/./b"} {
			if err := s.Put(ctx, key, strings.NewReader("x")); !errors.Is(err, targets.ErrBadKey) {
				t.Errorf("Put(%q) = %v, want ErrBadKey", key, err)
			}
		}
	})
	t.Run("ListDelete", func(t *testing.T) {
		for _, k := range []string{"conformance/l/1", "conformance/l/2/x", "conformance/lz"} {
			if err := s.Put(ctx, k, strings.NewReader(k)); err != nil {
				t.Fatal(err)
			}
		}
		keys, err := s.List(ctx, "conformance/l/")
		if err != nil || !slices.Equal(keys, []string{"conformance/l/1", "conformance/l/2/x"}) {
			t.Errorf("List = %v, %v", keys, err)
		}
		if err := s.Delete(ctx, "conformance/l/1"); err != nil {
			t.Fatal(err)
		}
		if ok, _ := targets.Exists(ctx, s, "conformance/l/1"); ok {
			t.Errorf("deleted key still exists")
		}
	})
	t.Run("AtomicVisibility", func(t *testing.T) {
		// A reader polling while a slow writer streams must never see a partial object.
		key := "conformance/atomic/out"
		want := bytes.Repeat([]byte("0123456789"), 100_000)
		pr, pw := io.Pipe()
		go func() {
			for i := 0; i < len(want); i += 100_000 {
				pw.Write(want[i : i+100_000])
				time.Sleep(2 * time.Millisecond)
			}
			pw.Close()
		}()
		stop := make(chan struct{})
		var partial []int
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				rc, err := s.Get(ctx, key)
				if err != nil {
					continue
				}
				b, _ := io.ReadAll(rc)
				rc.Close()
				if len(b) != len(want) {
					partial = append(partial, len(b))
				}
			}
		}()
		if err := s.Put(ctx, key, pr); err != nil {
			t.Fatal(err)
		}
		close(stop)
		wg.Wait()
		if len(partial) > 0 {
			t.Errorf("a reader saw %d partial objects (sizes %v)", len(partial), partial[:min(5, len(partial))])
		}
	})
	t.Run("PutAroundTheSinglePutSize", func(t *testing.T) {
		// Remote stores send a body of known length up to SinglePutSize in one PUT, and a
		// longer one or one of unknown length as a stream: each must read back whole.
		for _, n := range []int64{0, targets.SinglePutSize, targets.SinglePutSize + 1} {
			want, _ := io.ReadAll(&patternReader{n: n})
			for _, body := range []io.Reader{bytes.NewReader(want), &patternReader{n: n}} {
				key := fmt.Sprintf("conformance/single-put/%d-%T", n, body)
				if err := s.Put(ctx, key, body); err != nil {
					t.Fatalf("Put of %d bytes from a %T: %v", n, body, err)
				}
				if got := read(t, s, key); got != string(want) {
					t.Errorf("Put of %d bytes from a %T read back %d different bytes", n, body, len(got))
				}
			}
		}
	})
	t.Run("FailedPutLeavesNothing", func(t *testing.T) {
		key := "conformance/failed/out"
		err := s.Put(ctx, key, io.MultiReader(strings.NewReader("half"), errReader{}))
		if err == nil {
			t.Fatal("Put of a failing reader succeeded")
		}
		if ok, _ := targets.Exists(ctx, s, key); ok {
			t.Errorf("a failed Put left an object")
		}
	})
	t.Run("CreateIfAbsentOneWinner", func(t *testing.T) {
		key := "conformance/lease"
		const writers = 16
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins, exists := 0, 0
		var other []error
		start := make(chan struct{})
		for i := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				err := s.CreateIfAbsent(ctx, key, strings.NewReader(fmt.Sprintf("writer %d", i)))
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins++
				case errors.Is(err, targets.ErrExist):
					exists++
				default:
					other = append(other, err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if wins != 1 || exists != writers-1 || len(other) > 0 {
			t.Errorf("%d writers: %d won, %d got ErrExist, other errors %v; want 1 and %d", writers, wins, exists, other, writers-1)
		}
		if got := read(t, s, key); !strings.HasPrefix(got, "writer ") {
			t.Errorf("winner's object = %q", got)
		}
	})
	t.Run("ReplaceIfOnlyTheVersionSeen", func(t *testing.T) {
		r, ok := s.(targets.Replacer)
		if !ok {
			t.Skip("store does not replace conditionally")
		}
		key := "conformance/replace/lease"
		if err := s.Put(ctx, key, strings.NewReader("v1")); err != nil {
			t.Fatal(err)
		}
		v1, err := s.Stat(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Put(ctx, key, strings.NewReader("v2")); err != nil { // same size, at once
			t.Fatal(err)
		}
		if _, err := r.ReplaceIf(ctx, key, v1, []byte("stale")); !errors.Is(err, targets.ErrChanged) {
			t.Errorf("ReplaceIf of a version since rewritten = %v, want ErrChanged", err)
		}
		v2, err := s.Stat(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		v3, err := r.ReplaceIf(ctx, key, v2, []byte("v3"))
		if err != nil {
			t.Fatalf("ReplaceIf of the current version: %v", err)
		}
		if got := read(t, s, key); got != "v3" {
			t.Errorf("after ReplaceIf the object is %q, want v3", got)
		}
		// The version ReplaceIf returns is the one a writer renews its object against.
		if _, err := r.ReplaceIf(ctx, key, v2, []byte("v4")); !errors.Is(err, targets.ErrChanged) {
			t.Errorf("ReplaceIf of the version it replaced = %v, want ErrChanged", err)
		}
		if _, err := r.ReplaceIf(ctx, key, v3, []byte("v4")); err != nil {
			t.Errorf("ReplaceIf of the version it returned: %v", err)
		}
		s.Delete(ctx, key)
		if _, err := r.ReplaceIf(ctx, key, v2, []byte("gone")); !errors.Is(err, targets.ErrChanged) {
			t.Errorf("ReplaceIf of a deleted object = %v, want ErrChanged", err)
		}
		if ok, _ := targets.Exists(ctx, s, key); ok {
			t.Errorf("ReplaceIf of a deleted object made one")
		}
	})
	t.Run("CreateIfAbsentInfoIsTheVersionStored", func(t *testing.T) {
		ic, ok := s.(targets.InfoCreator)
		r, replaces := s.(targets.Replacer)
		if !ok || !replaces {
			t.Skip("store does not report the version it creates")
		}
		key := "conformance/create/lease"
		made, err := ic.CreateIfAbsentInfo(ctx, key, strings.NewReader("mine"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ic.CreateIfAbsentInfo(ctx, key, strings.NewReader("theirs")); !errors.Is(err, targets.ErrExist) {
			t.Errorf("a second CreateIfAbsentInfo = %v, want ErrExist", err)
		}
		seen, err := s.Stat(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if made.ETag == "" || made.ETag != seen.ETag || made.Size != seen.Size {
			t.Errorf("CreateIfAbsentInfo reported %+v, Stat %+v: want the same ETag and size", made, seen)
		}
		if _, err := r.ReplaceIf(ctx, key, made, []byte("renewed")); err != nil {
			t.Errorf("ReplaceIf of the version CreateIfAbsentInfo reported: %v", err)
		}
		if _, err := r.ReplaceIf(ctx, key, made, []byte("stale")); !errors.Is(err, targets.ErrChanged) {
			t.Errorf("ReplaceIf of the created version once renewed = %v, want ErrChanged", err)
		}
		if got := read(t, s, key); got != "renewed" {
			t.Errorf("the object is %q, want renewed", got)
		}
		s.Delete(ctx, key)
	})
	t.Run("ReplaceIfOneWinner", func(t *testing.T) {
		r, ok := s.(targets.Replacer)
		if !ok {
			t.Skip("store does not replace conditionally")
		}
		key := "conformance/replace/contended"
		if err := s.Put(ctx, key, strings.NewReader("")); err != nil { // an empty lease, as a power loss leaves
			t.Fatal(err)
		}
		seen, err := s.Stat(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		const takers = 8
		var wg sync.WaitGroup
		var mu sync.Mutex
		var winners []string
		var other []error
		start := make(chan struct{})
		for i := range takers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				me := fmt.Sprintf("taker %d", i)
				_, err := r.ReplaceIf(ctx, key, seen, []byte(me))
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					winners = append(winners, me)
				case !errors.Is(err, targets.ErrChanged):
					other = append(other, err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if len(winners) != 1 || len(other) > 0 {
			t.Fatalf("%d takers of one version: winners %v, other errors %v; want exactly one winner", takers, winners, other)
		}
		if got := read(t, s, key); got != winners[0] {
			t.Errorf("the object is %q, the winner was %q", got, winners[0])
		}
	})
	t.Run("Presign", func(t *testing.T) {
		p, ok := s.(targets.Presigner)
		if !ok {
			t.Skip("store does not presign")
		}
		key := "conformance/presign/out"
		s.Put(ctx, key, strings.NewReader("signed body"))
		u, err := p.PresignGet(ctx, key, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(u, "http") {
			t.Fatalf("PresignGet = %q, want an http URL", u)
		}
		if Download == nil {
			return
		}
		code, body := Download(t, u)
		if code != 200 || body != "signed body" {
			t.Errorf("download = %d %q", code, body)
		}
	})
}

// Download fetches a presigned URL in the Presign test; backends whose URLs are served by the
// Nectar server itself (local) set it to nil.
var Download = Fetch

// Fetch GETs u and returns the status and body.
func Fetch(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("reader broke") }

func read(t *testing.T, s targets.Store, key string) string {
	t.Helper()
	rc, err := s.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("Get(%s): %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// patternReader yields n deterministic bytes without holding them.
type patternReader struct{ n, off int64 }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	k := min(int64(len(b)), p.n-p.off)
	for i := range b[:k] {
		b[i] = byte((p.off + int64(i)) * 31 % 251)
	}
	p.off += k
	return int(k), nil
}

// LargeCommit writes size bytes to a local file and commits it (the path every task's out
// takes), checking as LargePut does that memory stays well under the object's size.
func LargeCommit(t *testing.T, s targets.Store, size int64) {
	t.Helper()
	fc, ok := s.(targets.FileCommitter)
	if !ok {
		t.Skip("store does not commit files")
	}
	file := t.TempDir() + "/out"
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, &patternReader{n: size}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	// In parts: metadata goes with the object as with a single PUT.
	meta := map[string]string{"nectar-log": "stored"}
	if mc, ok := s.(targets.MetaCommitter); ok {
		err = mc.CommitFileMeta(context.Background(), "conformance-large/committed", file, meta)
	} else {
		meta, err = nil, fc.CommitFile(context.Background(), "conformance-large/committed", file)
	}
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if alloc := int64(after.TotalAlloc - before.TotalAlloc); alloc > size/2 {
		t.Errorf("committing a %d MiB file allocated %d MiB", size>>20, alloc>>20)
	}
	rc, err := s.Get(context.Background(), "conformance-large/committed")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, want := sha256.New(), sha256.New()
	io.Copy(got, rc)
	io.Copy(want, &patternReader{n: size})
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Errorf("the committed object differs from the file")
	}
	if info, err := s.Stat(context.Background(), "conformance-large/committed"); err != nil || !maps.Equal(info.Meta, meta) {
		t.Errorf("Stat of the committed object = %+v, %v; want metadata %v", info, err, meta)
	}
}

// LargePut streams size bytes through Put and checks that the upload allocated well under the
// object's size (memory stays bounded whatever the size) and that the object reads back intact.
func LargePut(t *testing.T, s targets.Store, size int64) {
	t.Helper()
	ctx := context.Background()
	key := "conformance-large/out"
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var stored targets.Info // where the store says what it stored (a multipart upload's ETag)
	if ip, ok := s.(targets.InfoPutter); ok {
		var err error
		if stored, err = ip.PutInfo(ctx, key, &patternReader{n: size}); err != nil {
			t.Fatal(err)
		}
	} else if err := s.Put(ctx, key, &patternReader{n: size}); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if stored.Size != 0 || stored.ETag != "" || !stored.ModTime.IsZero() {
		if now, err := s.Stat(ctx, key); err != nil || !targets.SameVersion(stored, now) || stored.Size != size {
			t.Errorf("PutInfo of %d bytes says it stored %+v; Stat finds %+v, %v", size, stored, now, err)
		}
	}
	if alloc := int64(after.TotalAlloc - before.TotalAlloc); alloc > size/2 {
		t.Errorf("a %d MiB upload allocated %d MiB", size>>20, alloc>>20)
	}
	rc, err := s.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, want := sha256.New(), sha256.New()
	if _, err := io.Copy(got, rc); err != nil {
		t.Fatal(err)
	}
	io.Copy(want, &patternReader{n: size})
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Errorf("the object read back differs from what was written")
	}
}
