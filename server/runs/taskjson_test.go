package runs

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

// The hand-written JSON of a task is encoding/json's, byte for byte, with and without HTML
// escaping, for tasks whose every field (found by reflection, so a field added later is
// filled too) takes values at random, awkward strings included.
func TestTaskJSONIsEncodingJSONs(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 3000; i++ {
		var ts TaskState
		fillRandom(rng, reflect.ValueOf(&ts).Elem(), 0)
		for _, escape := range []bool{true, false} {
			want, wantErr := stdJSON(&ts, escape)
			got, err := ts.appendJSON(nil, escape)
			switch {
			case wantErr != nil && err == nil:
				t.Fatalf("escapeHTML=%v: encoding/json refuses the task (%v), appendJSON wrote %s", escape, wantErr, got)
			case wantErr == nil && err != nil:
				t.Fatalf("escapeHTML=%v: appendJSON refuses the task (%v), encoding/json wrote %s", escape, err, want)
			case err == nil && !bytes.Equal(got, want):
				t.Fatalf("escapeHTML=%v:\n got %s\nwant %s", escape, got, want)
			}
		}
	}
}

// Bad values fail as encoding/json fails them, rather than writing what no reader takes.
func TestTaskJSONRefusesWhatEncodingJSONRefuses(t *testing.T) {
	far := time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	for name, ts := range map[string]TaskState{
		"a year past 9999":  {StartedAt: &far},
		"invalid params":    {Params: json.RawMessage(`{"a":`)},
		"an attempt's time": {Attempts: []Attempt{{StartedAt: far}}},
	} {
		if _, err := json.Marshal(ts); err == nil {
			t.Fatalf("%s: encoding/json takes it", name)
		}
		if _, err := ts.appendJSON(nil, true); err == nil {
			t.Errorf("%s: appendJSON wrote it", name)
		}
	}
}

func stdJSON(v any, escapeHTML bool) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(escapeHTML)
	err := enc.Encode(v)
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), err
}

// awkward are strings that need escaping one way or another.
var awkward = []string{"", "plain", `quo"te`, `back\slash`, "new\nline\ttab\r\b\f", "\x00\x01\x1f\x7f",
	"<html> & </html>", "é ü 日本", "\u2028 \u2029", "bad \xff utf8 \xe2\x80", "chains/t/c/T/0123456789abcdef"}

// fillRandom sets v to random values: every exported field of a struct, nil or not for pointers
// and slices (omitempty), awkward strings.
func fillRandom(rng *rand.Rand, v reflect.Value, depth int) {
	switch v.Interface().(type) {
	case time.Time:
		// Mostly this century in a zone of the day, sometimes a year or a zone RFC 3339
		// cannot write (encoding/json refuses those).
		secs := rng.Int64N(4e9)
		if rng.IntN(20) == 0 {
			secs = rng.Int64N(8e11) - 4e11 // years -10,700 to 15,300
		}
		zone := (rng.IntN(48) - 24) * 1800
		if rng.IntN(20) == 0 {
			zone = (rng.IntN(200) - 100) * 1800
		}
		v.Set(reflect.ValueOf(time.Unix(secs, rng.Int64N(1e9)).In(time.FixedZone("", zone))))
		if rng.IntN(4) == 0 {
			v.Set(reflect.ValueOf(v.Interface().(time.Time).UTC().Truncate(time.Second)))
		}
		return
	case json.RawMessage:
		raws := []string{"", `{}`, `{"a":1,"b":"x"}`, `{"html":"<b>&</b>"}`, `{ "spaced" : [1, 2] }`, `{"s":"\u2028"}`,
			"{\"s\":\"\u2028\u2029\"}", "{\"bad\":\"\xe2\xe2\x80\"}", `[true,null,-1.5e-9]`}
		v.SetBytes([]byte(raws[rng.IntN(len(raws))]))
		return
	}
	switch v.Kind() {
	case reflect.String:
		s := awkward[rng.IntN(len(awkward))]
		if rng.IntN(3) == 0 {
			s += awkward[rng.IntN(len(awkward))]
		}
		v.SetString(s)
	case reflect.Bool:
		v.SetBool(rng.IntN(2) == 0)
	case reflect.Int, reflect.Int64:
		v.SetInt(rng.Int64N(1<<40) - 1<<39)
	case reflect.Float64:
		fs := []float64{0, 1, 0.5, 1.0 / 3, 1e-7, 2.5e-9, 1e21, 123456789.125, -0.25}
		v.SetFloat(fs[rng.IntN(len(fs))])
	case reflect.Pointer:
		if rng.IntN(3) == 0 {
			v.SetZero()
			return
		}
		p := reflect.New(v.Type().Elem())
		fillRandom(rng, p.Elem(), depth+1)
		v.Set(p)
	case reflect.Slice:
		n := rng.IntN(4)
		if n == 0 {
			v.SetZero()
			if rng.IntN(2) == 0 {
				v.Set(reflect.MakeSlice(v.Type(), 0, 0)) // empty, not nil: omitted too
			}
			return
		}
		s := reflect.MakeSlice(v.Type(), n, n)
		for i := 0; i < n; i++ {
			fillRandom(rng, s.Index(i), depth+1)
		}
		v.Set(s)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				fillRandom(rng, v.Field(i), depth+1)
			}
		}
	default:
		panic("fillRandom: add a case for " + v.Type().String() + " (a new field of TaskState?) ")
	}
}
