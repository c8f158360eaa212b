package runs

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// fill sets every field of v (a struct) that JSON would carry to a value that is not zero,
// derived from seed, so a field left out of the codec shows in a round trip.
func fill(t *testing.T, v reflect.Value, seed int) {
	t.Helper()
	for i := range v.NumField() {
		f, sf := v.Field(i), v.Type().Field(i)
		if sf.Tag.Get("json") == "-" || !sf.IsExported() {
			continue
		}
		switch f.Kind() {
		case reflect.String:
			f.SetString(sf.Name + "-" + strings.Repeat("x", seed))
		case reflect.Int, reflect.Int64:
			f.SetInt(int64(seed*1000 + i + 1))
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Slice:
			switch f.Type().Elem().Kind() {
			case reflect.String:
				f.Set(reflect.ValueOf([]string{sf.Name + "-a", "", sf.Name + "-c"}))
			case reflect.Uint8: // json.RawMessage
				f.SetBytes([]byte(`{"n":` + strings.Repeat("1", seed+1) + `}`))
			case reflect.Struct: // jobMsg.Jobs: the caller fills them
			default:
				t.Fatalf("field %s of type %s: teach fill and the codec", sf.Name, f.Type())
			}
		case reflect.Struct:
			fill(t, f, seed)
		default:
			t.Fatalf("field %s of kind %s: teach fill and the codec", sf.Name, f.Kind())
		}
	}
}

// Every field of a task message survives the codec; a field added to taskJob without the
// codec fails here.
func TestJobMsgCodecCoversEveryField(t *testing.T) {
	var want jobMsg
	fill(t, reflect.ValueOf(&want).Elem(), 1)
	want.Jobs = make([]taskJob, 3)
	for k := range want.Jobs {
		fill(t, reflect.ValueOf(&want.Jobs[k]).Elem(), k+1)
	}
	want.Jobs[1].Timeout = -time.Second // signed
	var got jobMsg
	if err := got.decode(want.encode(nil)); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
	}
}

// Every cut of a message, and other bytes, is an error: never a panic, never a message.
func TestJobMsgCodecRefusesBrokenMessages(t *testing.T) {
	var m jobMsg
	fill(t, reflect.ValueOf(&m).Elem(), 2)
	m.Jobs = []taskJob{{Run: "r", Type: "t", Inputs: []string{"a", "b"}}}
	b := m.encode(nil)
	for n := range len(b) {
		var got jobMsg
		if err := got.decode(b[:n]); err == nil {
			t.Errorf("the first %d of %d bytes decoded without error", n, len(b))
		}
	}
	for _, bad := range [][]byte{nil, []byte(`{"jobs":[]}`), append(b, 0), {jobMsgVersion, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}} {
		var got jobMsg
		if err := got.decode(bad); err == nil {
			t.Errorf("%q decoded without error", bad)
		}
	}
}
