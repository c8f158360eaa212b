package params

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		parse   func(string) (any, error)
		in      string
		want    any
		wantErr string
	}{
		{"bool true", func(s string) (any, error) { return ParseBool("b", s) }, "TRUE", true, ""},
		{"bool 0", func(s string) (any, error) { return ParseBool("b", s) }, "0", false, ""},
		{"bool bad", func(s string) (any, error) { return ParseBool("b", s) }, "maybe", nil, `parameter "b": "maybe" is not a boolean (want true or false)`},
		{"int", func(s string) (any, error) { return ParseInt("n", s, 64) }, "-42", int64(-42), ""},
		{"int bad", func(s string) (any, error) { return ParseInt("n", s, 64) }, "4.2", nil, `parameter "n": "4.2" is not an integer`},
		{"int range", func(s string) (any, error) { return ParseInt("n", s, 64) }, "99999999999999999999", nil, `parameter "n": "99999999999999999999" is out of range for a 64-bit integer`},
		{"float", func(s string) (any, error) { return ParseFloat("f", s) }, "1.50", 1.5, ""},
		{"float nan", func(s string) (any, error) { return ParseFloat("f", s) }, "NaN", nil, `parameter "f": "NaN" is not a finite number`},
		{"date", func(s string) (any, error) { return ParseTime("d", s) }, "2024-01-02", time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC), ""},
		{"rfc3339 to UTC", func(s string) (any, error) { return ParseTime("d", s) }, "2024-01-02T03:04:05+02:00", time.Date(2024, 1, 2, 1, 4, 5, 0, time.UTC), ""},
		{"time bad", func(s string) (any, error) { return ParseTime("d", s) }, "yesterday", nil, `parameter "d": "yesterday" is not a date (2006-01-02) or an RFC 3339 time`},
		{"duration", func(s string) (any, error) { return ParseDuration("t", s) }, "1m30s", 90 * time.Second, ""},
		{"duration negative", func(s string) (any, error) { return ParseDuration("t", s) }, "-1s", nil, `parameter "t": "-1s" is negative (want a duration of 0s or more)`},
		{"signed duration negative", func(s string) (any, error) { return ParseSignedDuration("t", s) }, "-1s", -time.Second, ""},
		{"duration bad", func(s string) (any, error) { return ParseDuration("t", s) }, "soon", nil, `parameter "t": "soon" is not a duration (such as 1.5s or 2m)`},
		{"enum", func(s string) (any, error) { return ParseEnum("e", s, []string{"a", "b"}) }, "b", "b", ""},
		{"enum bad", func(s string) (any, error) { return ParseEnum("e", s, []string{"a", "b"}) }, "c", nil, `parameter "e": "c" is not one of a, b`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.parse(tt.in)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr || !errors.Is(err, ErrBad) {
					t.Fatalf("parse(%q) error = %v, want %q wrapping ErrBad", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parse(%q) = %v, %v, want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestQueryValue(t *testing.T) {
	q := url.Values{"a": {"1"}, "twice": {"1", "2"}}
	if v, err := QueryValue(q, "a", "d", false); v != "1" || err != nil {
		t.Errorf("QueryValue(a) = %q, %v", v, err)
	}
	if v, err := QueryValue(q, "missing", "d", false); v != "d" || err != nil {
		t.Errorf("QueryValue(missing) = %q, %v, want the default", v, err)
	}
	if _, err := QueryValue(q, "missing", "", true); err == nil || err.Error() != `parameter "missing": is required` {
		t.Errorf("QueryValue(required) error = %v", err)
	}
	if _, err := QueryValue(q, "twice", "", false); err == nil {
		t.Errorf("QueryValue(twice) accepted two values")
	}
	list, _ := QueryList(url.Values{"f": {"a,b", "c"}}, "f", "", false)
	if len(list) != 3 || list[2] != "c" {
		t.Errorf("QueryList = %v, want [a b c]", list)
	}
}

// The canonical JSON is the key's source: same values, same bytes, whatever the spelling.
func TestWriterIsCanonical(t *testing.T) {
	var w Writer
	w.Bool("b", true)
	w.Time("d", time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC))
	w.Float("f", 1.0)
	w.Int("n", 7)
	w.String("s", `x"y`)
	w.Duration("t", 90*time.Second)
	w.Strings("tags", nil)
	w.Time("ts", time.Date(2024, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600)))
	want := `{"b":true,"d":"2024-01-02","f":1,"n":7,"s":"x\"y","t":"1m30s","tags":[],"ts":"2024-01-02T02:04:05Z"}`
	if got := string(w.Bytes()); got != want {
		t.Errorf("Bytes() = %s\nwant      %s", got, want)
	}
	var empty Writer
	if got := string(empty.Bytes()); got != "{}" {
		t.Errorf("empty = %s, want {}", got)
	}
	// Keys out of order would make two spellings of one task differ: it panics.
	defer func() {
		if recover() == nil {
			t.Errorf("unsorted keys did not panic")
		}
	}()
	var bad Writer
	bad.String("b", "")
	bad.String("a", "")
}

// Round trip: what the server writes, the plugin reads back to the same values.
func TestReaderRoundTrip(t *testing.T) {
	var w Writer
	w.Duration("d", time.Second)
	w.Int("n", -3)
	w.Strings("s", []string{"a", "b,c"})
	w.Time("t", time.Date(2020, 5, 6, 7, 8, 9, 10, time.UTC))
	r, err := Read(w.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := r.Duration("d"); d != time.Second {
		t.Errorf("d = %v", d)
	}
	if n, _ := r.Int("n"); n != -3 {
		t.Errorf("n = %v", n)
	}
	if s, _ := r.Strings("s"); len(s) != 2 || s[1] != "b,c" {
		t.Errorf("s = %v", s)
	}
	if tm, _ := r.Time("t"); !tm.Equal(time.Date(2020, 5, 6, 7, 8, 9, 10, time.UTC)) {
		t.Errorf("t = %v", tm)
	}
	if _, err := r.String("missing"); err == nil {
		t.Errorf("missing parameter read without error")
	}
	if _, err := r.String("n"); err == nil {
		t.Errorf("int read as string without error")
	}
}

// FuzzQueryParsing feeds raw query strings through the typed parsers the routes use: they may
// reject, never panic, and what they accept must encode to JSON that reads back the same.
func FuzzQueryParsing(f *testing.F) {
	for _, s := range []string{"name=ada", "n=1&n=2", "t=2024-01-02", "d=1h", "f=1e308", "s=a,b,,c", "%zz", "t=0001-01-01"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		var w Writer
		if v, err := QueryBool(q, "b", "false", false); err == nil {
			w.Bool("b", v)
		}
		if v, err := QueryDuration(q, "d", "0s", false, true); err == nil {
			w.Duration("d", v)
		}
		if v, err := QueryFloat(q, "f", "0", false); err == nil {
			w.Float("f", v)
		}
		if v, err := QueryInt(q, "n", "0", false); err == nil {
			w.Int("n", v)
		}
		if v, err := QueryString(q, "name", "", false); err == nil {
			w.String("name", v)
		}
		if v, err := QueryStrings(q, "s", "", false); err == nil {
			w.Strings("s", v)
		}
		if v, err := QueryTime(q, "t", "0001-01-01", false); err == nil {
			w.Time("t", v)
		}
		r, err := Read(w.Bytes())
		if err != nil {
			t.Fatalf("canonical JSON %s does not parse: %v", w.Bytes(), err)
		}
		if v, err := QueryString(q, "name", "", false); err == nil {
			if got, _ := r.String("name"); got != v {
				t.Fatalf("name round trip: %q != %q", got, v)
			}
		}
		if v, err := QueryTime(q, "t", "0001-01-01", false); err == nil {
			if got, err := r.Time("t"); err != nil || !got.Equal(v) {
				t.Fatalf("time round trip: %v (%v) != %v", got, err, v)
			}
		}
	})
}

// AppendJSONString writes a string as encoding/json does (canonical params, hence keys, hang
// on it), with HTML escaping or without.
func TestAppendJSONStringIsEncodingJSONs(t *testing.T) {
	for _, s := range []string{"", "ada", `a"b\c`, "<script>&</script>", "tab\tnl\ncr\r\x00\x1f\x7f", "é ü 中 🙂",
		"bad\xffutf8\xc3", "line\u2028para\u2029", strings.Repeat("x", 300)} {
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		if err := enc.Encode(s); err != nil {
			t.Fatal(err)
		}
		if got := string(AppendJSONString([]byte("prefix"), s, true)); got != "prefix"+strings.TrimSuffix(want.String(), "\n") {
			t.Errorf("AppendJSONString(%q, html) = %s; encoding/json says %s", s, got, want.String())
		}
		want.Reset()
		enc.SetEscapeHTML(false)
		if err := enc.Encode(s); err != nil {
			t.Fatal(err)
		}
		if got := string(AppendJSONString(nil, s, false)); got != strings.TrimSuffix(want.String(), "\n") {
			t.Errorf("AppendJSONString(%q) = %s; encoding/json says %s", s, got, want.String())
		}
	}
}
