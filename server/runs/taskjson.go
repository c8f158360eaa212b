package runs

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"time"

	"nectar/chains/params"
)

// A task's JSON in the run record, appended by hand: a record holds every task of its run and
// is written again while the run executes, and encoding/json took five times as long (2.5 ms
// and 6,000 allocations for 1,000 tasks; 0.5 ms and none here).
// The bytes are exactly encoding/json's, HTML escaping or not (TestTaskJSONIsEncodingJSONs
// checks every field, filled at random, against it); a field added to TaskState without being
// added here fails that test.

// appendJSON appends t as json.Marshal writes it (escapeHTML, the run record) or as an
// Encoder without HTML escaping does.
func (t *TaskState) appendJSON(b []byte, escapeHTML bool) ([]byte, error) {
	var err error
	b = append(b, `{"chain":`...)
	b = params.AppendJSONString(b, t.Chain, escapeHTML)
	b = append(b, `,"task":`...)
	b = params.AppendJSONString(b, t.Task, escapeHTML)
	b = append(b, `,"key":`...)
	b = params.AppendJSONString(b, t.Key, escapeHTML)
	if len(t.Params) > 0 {
		b = append(b, `,"params":`...)
		if b, err = appendRawJSON(b, t.Params, escapeHTML); err != nil {
			return b, err
		}
	}
	b = append(b, `,"status":`...)
	b = params.AppendJSONString(b, string(t.Status), escapeHTML)
	if t.Cached {
		b = append(b, `,"cached":true`...)
	}
	if t.Error != "" {
		b = append(b, `,"error":`...)
		b = params.AppendJSONString(b, t.Error, escapeHTML)
	}
	if t.StartedAt != nil {
		b = append(b, `,"started_at":`...)
		if b, err = appendJSONTime(b, *t.StartedAt); err != nil {
			return b, err
		}
	}
	if t.FinishedAt != nil {
		b = append(b, `,"finished_at":`...)
		if b, err = appendJSONTime(b, *t.FinishedAt); err != nil {
			return b, err
		}
	}
	if len(t.Attempts) > 0 {
		b = append(b, `,"attempts":[`...)
		for i := range t.Attempts {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = t.Attempts[i].appendJSON(b, escapeHTML); err != nil {
				return b, err
			}
		}
		b = append(b, ']')
	}
	if t.Worker != "" {
		b = append(b, `,"worker":`...)
		b = params.AppendJSONString(b, t.Worker, escapeHTML)
	}
	if t.Queue != "" {
		b = append(b, `,"queue":`...)
		b = params.AppendJSONString(b, t.Queue, escapeHTML)
	}
	if len(t.Requires) > 0 {
		b = append(b, `,"requires":[`...)
		for i, r := range t.Requires {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, int64(r), 10)
		}
		b = append(b, ']')
	}
	if p := t.Progress; p != nil {
		b = append(b, `,"progress":{"done":`...)
		b = strconv.AppendInt(b, p.Done, 10)
		b = append(b, `,"total":`...)
		b = strconv.AppendInt(b, p.Total, 10)
		b = append(b, `,"fraction":`...)
		if b, err = appendJSONFloat(b, p.Fraction); err != nil {
			return b, err
		}
		if p.Status != "" {
			b = append(b, `,"status":`...)
			b = params.AppendJSONString(b, p.Status, escapeHTML)
		}
		b = append(b, '}')
	}
	if len(t.Artifacts) > 0 {
		b = append(b, `,"artifacts":[`...)
		for i := range t.Artifacts {
			if i > 0 {
				b = append(b, ',')
			}
			b = t.Artifacts[i].appendJSON(b, escapeHTML)
		}
		b = append(b, ']')
	}
	if t.LogNotStored {
		b = append(b, `,"log_not_stored":true`...)
	}
	if t.LogEmpty {
		b = append(b, `,"log_empty":true`...)
	}
	return append(b, '}'), nil
}

func (a *Artifact) appendJSON(b []byte, escapeHTML bool) []byte {
	b = append(b, `{"name":`...)
	b = params.AppendJSONString(b, a.Name, escapeHTML)
	b = append(b, `,"size":`...)
	b = strconv.AppendInt(b, a.Size, 10)
	b = append(b, `,"content_type":`...)
	b = params.AppendJSONString(b, a.ContentType, escapeHTML)
	if a.Published != "" {
		b = append(b, `,"published":`...)
		b = params.AppendJSONString(b, a.Published, escapeHTML)
	}
	return append(b, '}')
}

func (a *Attempt) appendJSON(b []byte, escapeHTML bool) ([]byte, error) {
	var err error
	b = append(b, `{"number":`...)
	b = strconv.AppendInt(b, int64(a.Number), 10)
	b = append(b, `,"started_at":`...)
	if b, err = appendJSONTime(b, a.StartedAt); err != nil {
		return b, err
	}
	if a.FinishedAt != nil {
		b = append(b, `,"finished_at":`...)
		if b, err = appendJSONTime(b, *a.FinishedAt); err != nil {
			return b, err
		}
	}
	if a.Error != "" {
		b = append(b, `,"error":`...)
		b = params.AppendJSONString(b, a.Error, escapeHTML)
	}
	return append(b, '}'), nil
}

// appendJSONTime is time.Time's MarshalJSON, appended, with its checks: RFC 3339 has no room
// for a year outside 0-9999 or a zone 24 hours or more away.
func appendJSONTime(b []byte, t time.Time) ([]byte, error) {
	b = append(b, '"')
	n0 := len(b)
	b = t.AppendFormat(b, time.RFC3339Nano)
	switch {
	case b[n0+len("9999")] != '-': // the year is exactly 4 digits wide
		return b, errors.New("Time.MarshalJSON: year outside of range [0,9999]")
	case b[len(b)-1] != 'Z':
		c, h := b[len(b)-len("Z07:00")], b[len(b)-len("07:00"):]
		if ('0' <= c && c <= '9') || 10*(h[0]-'0')+(h[1]-'0') >= 24 {
			return b, errors.New("Time.MarshalJSON: timezone hour outside of range [0,23]")
		}
	}
	return append(b, '"'), nil
}

// appendJSONFloat is encoding/json's float64: the shortest form, with an exponent only for
// the very small and the very large.
func appendJSONFloat(b []byte, f float64) ([]byte, error) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return b, errors.New("json: unsupported value: " + strconv.FormatFloat(f, 'g', -1, 64))
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' { // e-09 is written e-9
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, nil
}

// appendRawJSON appends a json.RawMessage as encoding/json does: compacted, and HTML-escaped
// if asked. Parameters are stored compact, so they are almost always copied as they are.
func appendRawJSON(b []byte, raw json.RawMessage, escapeHTML bool) ([]byte, error) {
	plain := true
	for _, c := range raw {
		if c == ' ' || c == '\t' || c == '\n' || c == '\r' || (escapeHTML && (c == '<' || c == '>' || c == '&' || c == 0xE2)) {
			plain = false
			break
		}
	}
	if plain && json.Valid(raw) {
		return append(b, raw...), nil
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		return b, err
	}
	if !escapeHTML {
		return append(b, compact.Bytes()...), nil
	}
	var escaped bytes.Buffer
	json.HTMLEscape(&escaped, compact.Bytes())
	return append(b, escaped.Bytes()...), nil
}
