package plugins

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"
)

// A big batch is encoded into one buffer sized for it, and reads back as encoding/json's own
// encoding of it does: whatever its inputs hold (quotes, backslashes, HTML, non-ASCII, bytes
// that are not UTF-8), with or without deadlines and cancels.
func TestABigBatchIsEncodedInOneBufferAsJSONWould(t *testing.T) {
	keys := func(n int, extra ...string) []string {
		out := make([]string, 0, n+len(extra))
		for i := range n {
			out = append(out, fmt.Sprintf("chains/testchains/fanin_chain/LeafTask/%032x", i))
		}
		return append(out, extra...)
	}
	req := func(inputs []string) *RunTaskRequest {
		return &RunTaskRequest{Task: TaskRef{Chain: "fanin_chain", Task: "JoinTask", Params: json.RawMessage(`{"leaves":5000}`)},
			Key: "chains/testchains/fanin_chain/JoinTask/00ff", OutPath: "/s/out", LogPath: "/s/log", InputRoot: "/data/t", InputName: "out",
			Inputs: inputs, NoSync: true, Plain: true}
	}
	deadline := time.Date(2026, 11, 30, 12, 0, 0, 123456789, time.FixedZone("x", 3600))
	for _, tc := range []struct {
		name  string
		batch taskBatch
	}{
		{name: "a join of 5,000", batch: taskBatch{Run: []taskCall{{ID: 7, Req: req(keys(5000))}}}},
		{name: "odd inputs", batch: taskBatch{Run: []taskCall{{ID: 1, Req: req(keys(300, `a"b`, `c\d`, "<e&f>", "é/ü", "\x00\x1f", "bad\xffutf8", ""))}}}},
		{name: "several calls, deadlines and cancels", batch: taskBatch{
			Run: []taskCall{
				{ID: 1, Req: req(keys(200)), Deadline: deadline},
				{ID: 18446744073709551615, Req: req(nil)},
				{ID: 3, Req: req(keys(100))},
			},
			Cancel: []uint64{4, 5, 18446744073709551615}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.batch.inputs() < sizedBatchInputs {
				t.Fatalf("the batch has %d inputs: under sizedBatchInputs, it would not be encoded so", tc.batch.inputs())
			}
			got, err := jsonCodec{}.Marshal(&tc.batch)
			if err != nil {
				t.Fatal(err)
			}
			want, err := json.Marshal(&tc.batch)
			if err != nil {
				t.Fatal(err)
			}
			if spare := cap(got) - len(got); spare < 0 || spare > 100*len(tc.batch.Run)+64 {
				t.Errorf("buffer of %d bytes for %d: sized wrong", cap(got), len(got))
			}
			var a, b taskBatch
			if err := json.Unmarshal(got, &a); err != nil {
				t.Fatalf("the encoding does not read back: %v\n%.300s", err, got)
			}
			if err := json.Unmarshal(want, &b); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("reads back as\n%+v\nwant\n%+v", a.Run[0].Req, b.Run[0].Req)
			}
			if len(got) != len(want) {
				t.Errorf("%d bytes; encoding/json's are %d", len(got), len(want))
			}
		})
	}
}
