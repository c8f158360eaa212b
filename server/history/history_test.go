package history

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

func TestLoadMigrations(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		wantErr string
	}{
		{"ok", map[string]string{"m/001_a.up.sql": "x", "m/001_a.down.sql": "y", "m/002_b.up.sql": "x", "m/002_b.down.sql": "y"}, ""},
		{"gap", map[string]string{"m/001_a.up.sql": "x", "m/001_a.down.sql": "y", "m/003_c.up.sql": "x", "m/003_c.down.sql": "y"}, "version 002 is missing"},
		{"no down", map[string]string{"m/001_a.up.sql": "x"}, "needs both an up and a down file"},
		{"bad name", map[string]string{"m/1_a.up.sql": "x"}, "want NNN_name.up.sql"},
		{"two names", map[string]string{"m/001_a.up.sql": "x", "m/001_b.down.sql": "y"}, "has two names"},
	}
	for _, tt := range tests {
		fsys := fstest.MapFS{}
		for p, s := range tt.files {
			fsys[p] = &fstest.MapFile{Data: []byte(s)}
		}
		_, err := LoadMigrations(fsys, "m")
		if (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("%s: LoadMigrations = %v, want %q", tt.name, err, tt.wantErr)
		}
	}
	if _, err := Migrations(); err != nil {
		t.Errorf("the repository's migrations: %v", err)
	}
}

func TestSummarize(t *testing.T) {
	long := strings.Repeat("é", 400) // 800 bytes
	tests := map[string]string{
		"first line\nstack": "first line",
		"short":             "short",
		long:                strings.Repeat("é", 250) + "…",
	}
	for in, want := range tests {
		if got := Summarize(in); got != want {
			t.Errorf("Summarize(%.20q) = %.20q (%d bytes), want %.20q", in, got, len(got), want)
		}
	}
}

func TestParamValues(t *testing.T) {
	got := ParamValues(`{"b":[1,"x"],"a":"text","c":2.5,"d":true}`)
	if want := "text\n1,x\n2.5\ntrue\n"; got != want {
		t.Errorf("ParamValues = %q, want %q", got, want)
	}
}

// A cursor reads back what it was made of, and one whose run id is not text (PostgreSQL would
// refuse it, which would read as the database failing) is not a cursor.
func TestDecodeCursor(t *testing.T) {
	at := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	c, err := DecodeCursor(Cursor{SubmittedAt: at, RunID: "r1"}.Encode())
	if err != nil || !c.SubmittedAt.Equal(at) || c.RunID != "r1" {
		t.Errorf("round trip = %+v, %v", c, err)
	}
	for _, raw := range []string{"1:\xff", "1:a\x00b", "x:r1", "1:", "nocolon"} {
		if _, err := DecodeCursor(base64.RawURLEncoding.EncodeToString([]byte(raw))); !errors.Is(err, ErrBadCursor) {
			t.Errorf("DecodeCursor(%q) = %v, want ErrBadCursor", raw, err)
		}
	}
}
