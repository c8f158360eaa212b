// Package params is the canonical encoding of task parameters: it parses them from a query,
// writes them as the canonical JSON whose MD5 is a run's key, and reads them back in the plugin.
//
// Generated code (server/catalog, plugins/mains), the server, the generator and the CLI call it;
// chain authors never do: they declare parameters as tagged fields, and the generator writes the
// calls. Every error it returns is an *Error naming the parameter, and wraps ErrBad.
package params

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ErrBad is wrapped by every *Error, so callers map all of them with one errors.Is.
var ErrBad = errors.New("bad parameter")

// Error names the parameter that was wrong and why. Value is the offending text as sent
// (empty when the parameter was absent or the value cannot be shown).
type Error struct {
	Param  string
	Value  string
	Reason string
}

func (e *Error) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("parameter %q: %s", e.Param, e.Reason)
	}
	return fmt.Sprintf("parameter %q: %q %s", e.Param, e.Value, e.Reason)
}

// Unwrap makes every *Error match ErrBad.
func (e *Error) Unwrap() error { return ErrBad }

func newError(name, value, format string, args ...any) error {
	return &Error{Param: name, Value: value, Reason: fmt.Sprintf(format, args...)}
}

// QueryValue returns the single raw value of name in q, or def when q has none. A parameter
// given twice is an error: silently taking one of them would run something nobody asked for.
func QueryValue(q url.Values, name, def string, required bool) (string, error) {
	vs, ok := q[name]
	switch {
	case !ok && required:
		return "", newError(name, "", "is required")
	case !ok:
		return def, nil
	case len(vs) > 1:
		return "", newError(name, "", "is given %d times; give it once", len(vs))
	case !utf8.ValidString(vs[0]):
		// JSON would replace the bad bytes, so the task would see another value than was sent.
		return "", newError(name, "", "is not valid UTF-8")
	}
	return vs[0], nil
}

// QueryList returns the elements of a list parameter: repeated (?f=a&f=b), comma-separated
// (?f=a,b), or both. An absent parameter yields def split the same way.
func QueryList(q url.Values, name, def string, required bool) ([]string, error) {
	vs, ok := q[name]
	if !ok {
		if required {
			return nil, newError(name, "", "is required")
		}
		if def == "" {
			return []string{}, nil
		}
		vs = []string{def}
	}
	out := []string{}
	for _, v := range vs {
		if v == "" {
			continue
		}
		if !utf8.ValidString(v) {
			return nil, newError(name, "", "is not valid UTF-8")
		}
		out = append(out, strings.Split(v, ",")...)
	}
	return out, nil
}

// ParseBool accepts true/false, 1/0, yes/no (any case).
func ParseBool(name, s string) (bool, error) {
	switch strings.ToLower(s) {
	case "true", "1", "yes", "on":
		return true, nil
	case "false", "0", "no", "off":
		return false, nil
	}
	return false, newError(name, s, "is not a boolean (want true or false)")
}

// ParseInt parses a base-10 integer that fits in bits (32 or 64 for int and int64 fields).
func ParseInt(name, s string, bits int) (int64, error) {
	v, err := strconv.ParseInt(s, 10, bits)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return 0, newError(name, s, "is out of range for a %d-bit integer", bits)
		}
		return 0, newError(name, s, "is not an integer")
	}
	return v, nil
}

// ParseFloat parses a finite float64.
func ParseFloat(name, s string) (float64, error) {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, newError(name, s, "is not a finite number")
	}
	return v, nil
}

// ParseTime accepts a date (2006-01-02, taken as midnight UTC) or an RFC 3339 timestamp.
func ParseTime(name, s string) (time.Time, error) {
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, newError(name, s, "is not a date (2006-01-02) or an RFC 3339 time")
	}
	return t.UTC(), nil
}

// ParseDuration parses a Go duration such as 1.5s or 2m, refusing a negative one: a timeout,
// an interval or a window below zero is a mistake, not a request.
func ParseDuration(name, s string) (time.Duration, error) {
	return parseDuration(name, s, false)
}

// ParseSignedDuration parses a Go duration that may be negative (a field tagged signed:"true").
func ParseSignedDuration(name, s string) (time.Duration, error) {
	return parseDuration(name, s, true)
}

func parseDuration(name, s string, signed bool) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, newError(name, s, "is not a duration (such as 1.5s or 2m)")
	}
	if d < 0 && !signed {
		return 0, newError(name, s, "is negative (want a duration of 0s or more)")
	}
	return d, nil
}

// ParseEnum checks that s is one of allowed.
func ParseEnum(name, s string, allowed []string) (string, error) {
	if !slices.Contains(allowed, s) {
		return "", newError(name, s, "is not one of %s", strings.Join(allowed, ", "))
	}
	return s, nil
}

// Writer builds the canonical JSON of a task's parameters: one object, keys in the order
// written (the generator writes them sorted by name), values typed. Its MD5 is the run's key, so
// two spellings of the same parameters (?name=world and no name, 1.0 and 1) give one key.
type Writer struct {
	buf  []byte
	last string
}

func (w *Writer) key(name string) {
	if len(w.buf) == 0 {
		w.buf = append(w.buf, '{')
	} else {
		if name <= w.last {
			panic(fmt.Sprintf("params: Writer: %q written after %q; keys must be sorted", name, w.last))
		}
		w.buf = append(w.buf, ',')
	}
	w.last = name
	w.buf = AppendJSONString(w.buf, name, true)
	w.buf = append(w.buf, ':')
}

// String writes a string parameter.
func (w *Writer) String(name, v string) {
	w.key(name)
	w.buf = AppendJSONString(w.buf, v, true)
}

// Bool writes a boolean parameter.
func (w *Writer) Bool(name string, v bool) {
	w.key(name)
	w.buf = strconv.AppendBool(w.buf, v)
}

// Int writes an integer parameter (int and int64 fields alike).
func (w *Writer) Int(name string, v int64) {
	w.key(name)
	w.buf = strconv.AppendInt(w.buf, v, 10)
}

// Float writes a float64 parameter in its shortest exact form.
func (w *Writer) Float(name string, v float64) {
	w.key(name)
	w.buf = strconv.AppendFloat(w.buf, v, 'g', -1, 64)
}

// Time writes a date when v is midnight UTC, else RFC 3339 in UTC.
func (w *Writer) Time(name string, v time.Time) {
	w.key(name)
	w.buf = AppendJSONString(w.buf, FormatTime(v), true)
}

// Duration writes a duration in Go's canonical text (1m30s).
func (w *Writer) Duration(name string, v time.Duration) {
	w.key(name)
	w.buf = AppendJSONString(w.buf, v.String(), true)
}

// Strings writes a list parameter.
func (w *Writer) Strings(name string, v []string) {
	w.key(name)
	w.buf = append(w.buf, '[')
	for i, s := range v {
		if i > 0 {
			w.buf = append(w.buf, ',')
		}
		w.buf = AppendJSONString(w.buf, s, true)
	}
	w.buf = append(w.buf, ']')
}

// Bytes returns the canonical JSON ({} when there are no parameters).
func (w *Writer) Bytes() []byte {
	if len(w.buf) == 0 {
		return []byte("{}")
	}
	return append(w.buf, '}')
}

// FormatTime is the canonical text of a time parameter.
func FormatTime(t time.Time) string {
	t = t.UTC()
	if t.Hour() == 0 && t.Minute() == 0 && t.Second() == 0 && t.Nanosecond() == 0 {
		return t.Format(time.DateOnly)
	}
	return t.Format(time.RFC3339Nano)
}

const hexDigits = "0123456789abcdef"

// AppendJSONString appends s quoted as encoding/json does: control characters, quotes and
// backslashes escaped, invalid UTF-8 replaced, U+2028 and U+2029 escaped, and <, > and &
// escaped when escapeHTML.
func AppendJSONString(b []byte, s string, escapeHTML bool) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && (!escapeHTML || (c != '<' && c != '>' && c != '&')) {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// Reader decodes canonical parameter JSON in the plugin, where a task value is rebuilt.
type Reader struct {
	fields map[string]json.RawMessage
}

// Read parses canonical parameter JSON.
func Read(b []byte) (Reader, error) {
	var r Reader
	if err := json.Unmarshal(b, &r.fields); err != nil {
		return r, fmt.Errorf("parameters are not a JSON object: %w", err)
	}
	return r, nil
}

func (r Reader) decode(name string, v any) error {
	raw, ok := r.fields[name]
	if !ok {
		return newError(name, "", "is missing")
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return newError(name, string(raw), "has the wrong type: %v", err)
	}
	return nil
}

// String decodes a string (or enum) parameter.
func (r Reader) String(name string) (s string, err error) {
	err = r.decode(name, &s)
	return s, err
}

// Bool decodes a boolean parameter.
func (r Reader) Bool(name string) (b bool, err error) {
	err = r.decode(name, &b)
	return b, err
}

// Int decodes an integer parameter.
func (r Reader) Int(name string) (i int64, err error) {
	err = r.decode(name, &i)
	return i, err
}

// Float decodes a float64 parameter.
func (r Reader) Float(name string) (f float64, err error) {
	err = r.decode(name, &f)
	return f, err
}

// Strings decodes a list parameter.
func (r Reader) Strings(name string) (s []string, err error) {
	err = r.decode(name, &s)
	return s, err
}

// Time decodes a time parameter.
func (r Reader) Time(name string) (time.Time, error) {
	s, err := r.String(name)
	if err != nil {
		return time.Time{}, err
	}
	return ParseTime(name, s)
}

// Duration decodes a duration; the sign was checked when the parameters were written.
func (r Reader) Duration(name string) (time.Duration, error) {
	s, err := r.String(name)
	if err != nil {
		return 0, err
	}
	return ParseSignedDuration(name, s)
}

// The Query* helpers are what generated route code calls: one per parameter kind, each taking
// the raw default (checked by the generator) and reporting errors that name the parameter.

// QueryString reads a string parameter.
func QueryString(q url.Values, name, def string, required bool) (string, error) {
	return QueryValue(q, name, def, required)
}

// QueryBool reads a boolean parameter.
func QueryBool(q url.Values, name, def string, required bool) (bool, error) {
	s, err := QueryValue(q, name, def, required)
	if err != nil {
		return false, err
	}
	return ParseBool(name, s)
}

// QueryInt reads an integer parameter.
func QueryInt(q url.Values, name, def string, required bool) (int64, error) {
	s, err := QueryValue(q, name, def, required)
	if err != nil {
		return 0, err
	}
	return ParseInt(name, s, 64)
}

// QueryFloat reads a float64 parameter.
func QueryFloat(q url.Values, name, def string, required bool) (float64, error) {
	s, err := QueryValue(q, name, def, required)
	if err != nil {
		return 0, err
	}
	return ParseFloat(name, s)
}

// QueryTime reads a time parameter (a date or RFC 3339).
func QueryTime(q url.Values, name, def string, required bool) (time.Time, error) {
	s, err := QueryValue(q, name, def, required)
	if err != nil {
		return time.Time{}, err
	}
	if s == "" && def == "" && !required {
		return time.Time{}, nil
	}
	return ParseTime(name, s)
}

// QueryDuration reads a duration; negative only when signed (the field is tagged signed:"true").
func QueryDuration(q url.Values, name, def string, required, signed bool) (time.Duration, error) {
	s, err := QueryValue(q, name, def, required)
	if err != nil {
		return 0, err
	}
	if s == "" && def == "" && !required {
		return 0, nil
	}
	return parseDuration(name, s, signed)
}

// QueryEnum reads a string parameter that must be one of allowed.
func QueryEnum(q url.Values, name, def string, required bool, allowed []string) (string, error) {
	s, err := QueryValue(q, name, def, required)
	if err != nil {
		return "", err
	}
	return ParseEnum(name, s, allowed)
}

// QueryStrings reads a list parameter.
func QueryStrings(q url.Values, name, def string, required bool) ([]string, error) {
	return QueryList(q, name, def, required)
}
