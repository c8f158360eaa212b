package chains

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

// ErrBadParam is wrapped by every *ParamError, so callers map all of them with one errors.Is.
var ErrBadParam = errors.New("bad parameter")

// ParamError names the parameter that was wrong and why.
type ParamError struct {
	Param  string
	Value  string
	Reason string
}

func (e *ParamError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("parameter %q: %s", e.Param, e.Reason)
	}
	return fmt.Sprintf("parameter %q: %q %s", e.Param, e.Value, e.Reason)
}

func (e *ParamError) Unwrap() error { return ErrBadParam }

func paramErr(name, value, format string, args ...any) error {
	return &ParamError{Param: name, Value: value, Reason: fmt.Sprintf(format, args...)}
}

// QueryValue returns the single raw value of name in q, or def when q has none. A parameter
// given twice is an error: silently taking one of them would run something nobody asked for.
func QueryValue(q url.Values, name, def string, required bool) (string, error) {
	vs, ok := q[name]
	switch {
	case !ok && required:
		return "", paramErr(name, "", "is required")
	case !ok:
		return def, nil
	case len(vs) > 1:
		return "", paramErr(name, "", "is given %d times; give it once", len(vs))
	case !utf8.ValidString(vs[0]):
		// JSON would replace the bad bytes, so the task would see another value than was sent.
		return "", paramErr(name, "", "is not valid UTF-8")
	}
	return vs[0], nil
}

// QueryList returns the elements of a list parameter: repeated (?f=a&f=b), comma-separated
// (?f=a,b), or both. An absent parameter yields def split the same way.
func QueryList(q url.Values, name, def string, required bool) ([]string, error) {
	vs, ok := q[name]
	if !ok {
		if required {
			return nil, paramErr(name, "", "is required")
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
			return nil, paramErr(name, "", "is not valid UTF-8")
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
	return false, paramErr(name, s, "is not a boolean (want true or false)")
}

// ParseInt parses a base-10 integer that fits in bits (32 or 64 for int and int64 fields).
func ParseInt(name, s string, bits int) (int64, error) {
	v, err := strconv.ParseInt(s, 10, bits)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return 0, paramErr(name, s, "is out of range for a %d-bit integer", bits)
		}
		return 0, paramErr(name, s, "is not an integer")
	}
	return v, nil
}

// ParseFloat parses a finite float64.
func ParseFloat(name, s string) (float64, error) {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, paramErr(name, s, "is not a finite number")
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
		return time.Time{}, paramErr(name, s, "is not a date (2006-01-02) or an RFC 3339 time")
	}
	return t.UTC(), nil
}

// ParseDuration parses a Go duration such as 1.5s or 2m.
func ParseDuration(name, s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, paramErr(name, s, "is not a duration (such as 1.5s or 2m)")
	}
	return d, nil
}

// ParseEnum checks that s is one of allowed.
func ParseEnum(name, s string, allowed []string) (string, error) {
	if !slices.Contains(allowed, s) {
		return "", paramErr(name, s, "is not one of %s", strings.Join(allowed, ", "))
	}
	return s, nil
}

// ParamWriter builds the canonical JSON of a task's parameters: one object, keys in the order
// written (the generator writes them sorted by name), values typed. Its MD5 is the run's key, so
// two spellings of the same parameters (?name=world and no name, 1.0 and 1) give one key.
type ParamWriter struct {
	buf  []byte
	last string
}

func (w *ParamWriter) key(name string) {
	if len(w.buf) == 0 {
		w.buf = append(w.buf, '{')
	} else {
		if name <= w.last {
			panic(fmt.Sprintf("chains: ParamWriter: %q written after %q; keys must be sorted", name, w.last))
		}
		w.buf = append(w.buf, ',')
	}
	w.last = name
	w.buf = appendJSONString(w.buf, name)
	w.buf = append(w.buf, ':')
}

func (w *ParamWriter) String(name, v string) {
	w.key(name)
	w.buf = appendJSONString(w.buf, v)
}

func (w *ParamWriter) Bool(name string, v bool) {
	w.key(name)
	w.buf = strconv.AppendBool(w.buf, v)
}

func (w *ParamWriter) Int(name string, v int64) {
	w.key(name)
	w.buf = strconv.AppendInt(w.buf, v, 10)
}

func (w *ParamWriter) Float(name string, v float64) {
	w.key(name)
	w.buf = strconv.AppendFloat(w.buf, v, 'g', -1, 64)
}

// Time writes a date when v is midnight UTC, else RFC 3339 in UTC.
func (w *ParamWriter) Time(name string, v time.Time) {
	w.key(name)
	w.buf = appendJSONString(w.buf, FormatTime(v))
}

func (w *ParamWriter) Duration(name string, v time.Duration) {
	w.key(name)
	w.buf = appendJSONString(w.buf, v.String())
}

func (w *ParamWriter) Strings(name string, v []string) {
	w.key(name)
	w.buf = append(w.buf, '[')
	for i, s := range v {
		if i > 0 {
			w.buf = append(w.buf, ',')
		}
		w.buf = appendJSONString(w.buf, s)
	}
	w.buf = append(w.buf, ']')
}

// Bytes returns the canonical JSON ({} when there are no parameters).
func (w *ParamWriter) Bytes() []byte {
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

func appendJSONString(buf []byte, s string) []byte {
	b, _ := json.Marshal(s) // a string always marshals
	return append(buf, b...)
}

// ParamReader decodes canonical parameter JSON in the plugin, where a task value is rebuilt.
type ParamReader struct {
	fields map[string]json.RawMessage
}

// ReadParams parses canonical parameter JSON.
func ReadParams(b []byte) (ParamReader, error) {
	var r ParamReader
	if err := json.Unmarshal(b, &r.fields); err != nil {
		return r, fmt.Errorf("parameters are not a JSON object: %w", err)
	}
	return r, nil
}

func (r ParamReader) decode(name string, v any) error {
	raw, ok := r.fields[name]
	if !ok {
		return paramErr(name, "", "is missing")
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return paramErr(name, string(raw), "has the wrong type: %v", err)
	}
	return nil
}

func (r ParamReader) String(name string) (s string, err error) {
	err = r.decode(name, &s)
	return s, err
}

func (r ParamReader) Bool(name string) (b bool, err error) {
	err = r.decode(name, &b)
	return b, err
}

func (r ParamReader) Int(name string) (i int64, err error) {
	err = r.decode(name, &i)
	return i, err
}

func (r ParamReader) Float(name string) (f float64, err error) {
	err = r.decode(name, &f)
	return f, err
}

func (r ParamReader) Strings(name string) (s []string, err error) {
	err = r.decode(name, &s)
	return s, err
}

func (r ParamReader) Time(name string) (time.Time, error) {
	s, err := r.String(name)
	if err != nil {
		return time.Time{}, err
	}
	return ParseTime(name, s)
}

func (r ParamReader) Duration(name string) (time.Duration, error) {
	s, err := r.String(name)
	if err != nil {
		return 0, err
	}
	return ParseDuration(name, s)
}

// The Query* helpers are what generated route code calls: one per parameter kind, each taking
// the raw default (checked by the generator) and reporting errors that name the parameter.

func QueryString(q url.Values, name, def string, required bool) (string, error) {
	return QueryValue(q, name, def, required)
}

func QueryBool(q url.Values, name, def string, required bool) (bool, error) {
	s, err := QueryValue(q, name, def, required)
	if err != nil {
		return false, err
	}
	return ParseBool(name, s)
}

func QueryInt(q url.Values, name, def string, required bool) (int64, error) {
	s, err := QueryValue(q, name, def, required)
	if err != nil {
		return 0, err
	}
	return ParseInt(name, s, 64)
}

func QueryFloat(q url.Values, name, def string, required bool) (float64, error) {
	s, err := QueryValue(q, name, def, required)
	if err != nil {
		return 0, err
	}
	return ParseFloat(name, s)
}

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

func QueryDuration(q url.Values, name, def string, required bool) (time.Duration, error) {
	s, err := QueryValue(q, name, def, required)
	if err != nil {
		return 0, err
	}
	if s == "" && def == "" && !required {
		return 0, nil
	}
	return ParseDuration(name, s)
}

func QueryEnum(q url.Values, name, def string, required bool, allowed []string) (string, error) {
	s, err := QueryValue(q, name, def, required)
	if err != nil {
		return "", err
	}
	return ParseEnum(name, s, allowed)
}

func QueryStrings(q url.Values, name, def string, required bool) ([]string, error) {
	return QueryList(q, name, def, required)
}
