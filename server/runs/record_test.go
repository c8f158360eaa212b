package runs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"
)

// The record is encoded a chunk of tasks at a time, and read back a task at a time; what
// decodes, either way, is the record, whatever the number of tasks (none, fewer than a chunk,
// several chunks).
func TestEncodeIsTheRecord(t *testing.T) {
	for _, n := range []int{0, 1, encodeChunk - 1, encodeChunk, 2*encodeChunk + 3} {
		started := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
		rec := Record{RunID: "abc", Key: "chains/t/c/T/0", Type: "t", Chain: "c", Task: "T", Params: json.RawMessage(`{"n":1}`),
			Status: Running, SubmittedAt: started, StartedAt: &started, Trigger: "api",
			Previous: []PastRun{{RunID: "old", Status: Failed, SubmittedAt: started}}}
		for i := range n {
			rec.Tasks = append(rec.Tasks, TaskState{Chain: "c", Task: "Leaf", Key: fmt.Sprintf("k%d", i), Params: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)),
				Status: Done, Requires: []int{i}, Attempts: []Attempt{{Number: 1, StartedAt: started, FinishedAt: &started}}})
		}
		r := &Run{rec: rec}
		var buf bytes.Buffer
		if err := r.encode(&buf); err != nil {
			t.Fatal(err)
		}
		var whole, streamed Record
		if err := json.Unmarshal(buf.Bytes(), &whole); err != nil {
			t.Fatalf("%d tasks: %v\n%.300s", n, err, buf.Bytes())
		}
		if err := decodeRecord(json.NewDecoder(bytes.NewReader(buf.Bytes())), &streamed); err != nil {
			t.Fatalf("%d tasks, a task at a time: %v\n%.300s", n, err, buf.Bytes())
		}
		want, _ := json.Marshal(rec)
		for how, got := range map[string]Record{"whole": whole, "a task at a time": streamed} {
			have, _ := json.Marshal(got)
			var w, h any
			json.Unmarshal(want, &w)
			json.Unmarshal(have, &h)
			if !reflect.DeepEqual(w, h) {
				t.Errorf("%d tasks, decoded %s: the record differs:\n%.400s\nwant\n%.400s", n, how, have, want)
			}
		}
		if n > 0 { // cut anywhere, it is an error, never a shorter record
			for _, cut := range []int{1, buf.Len() / 2, buf.Len() - 1} {
				var r Record
				if err := decodeRecord(json.NewDecoder(bytes.NewReader(buf.Bytes()[:cut])), &r); err == nil {
					t.Errorf("%d tasks cut at byte %d of %d decoded to %d tasks, want an error", n, cut, buf.Len(), len(r.Tasks))
				}
			}
		}
	}
}

// A status read of a key whose record is empty (what a power loss leaves of a record written
// without waiting for the disk) counts the record as absent: the out decides, DONE when it
// exists, unknown when not. Neither is a store failure.
func TestAnEmptyRecordCountsAsAbsent(t *testing.T) {
	chain := fakeChain{{name: "Root"}}
	g := newRig(t, newFakePlugins(chain, nil), 1)
	key := chain.key("Root")
	g.put(t, key+"/"+RecordName, "")
	if _, err := g.m.Status(context.Background(), key); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("an empty record and no out: %v, want ErrUnknownKey", err)
	}
	g.put(t, key+"/"+OutName, "done before the power loss")
	view, err := g.m.Status(context.Background(), key)
	if err != nil {
		t.Fatalf("an empty record and an out: %v, want DONE", err)
	}
	// No log beside it (made as a dependency that wrote none): the answer may link none.
	if rec, page := view.Page(0, 10); rec.Status != Done || view.Version != "out/nolog" || !page.RootLogEmpty {
		t.Errorf("an empty record and an out: %s (version %q, root log empty %v), want DONE from the out, with no log", rec.Status, view.Version, page.RootLogEmpty)
	}
	g.put(t, key+"/"+LogName, "")
	if view, err = g.m.Status(context.Background(), key); err != nil {
		t.Fatal(err)
	}
	if rec, page := view.Page(0, 10); rec.Status != Done || view.Version != "out" || page.RootLogEmpty {
		t.Errorf("an empty record, an out and its log: %s (version %q, root log empty %v), want DONE from the out", rec.Status, view.Version, page.RootLogEmpty)
	}
}

// A run whose server died is reported with its unfinished tasks ended, and no log URL for a
// log that was never committed: a task waiting for its retry has a finished attempt, whose
// log the lane commits only at the task's end.
func TestAnInterruptedRecordLinksNoLogItNeverStored(t *testing.T) {
	ended := time.Now().UTC()
	tasks := []TaskState{
		{Task: "Done", Status: Done, Attempts: []Attempt{{Number: 1, FinishedAt: &ended}}},
		{Task: "Failed", Status: Failed, Attempts: []Attempt{{Number: 1, FinishedAt: &ended, Error: "boom"}}},
		{Task: "WaitingForItsRetry", Status: Running, Attempts: []Attempt{{Number: 1, FinishedAt: &ended, Error: "flaky"}}},
		{Task: "Running", Status: Running, Attempts: []Attempt{{Number: 1}}},
		{Task: "Pending", Status: Pending},
	}
	r := &Record{Status: Running, Tasks: tasks}
	r.Interrupted(ended)
	for i, want := range []struct {
		status Status
		hasLog bool
	}{{Done, true}, {Failed, true}, {Failed, false}, {Failed, false}, {Cancelled, false}} {
		got := r.Tasks[i]
		if got.Status != want.status || got.HasLog() != want.hasLog {
			t.Errorf("%s after the crash: %s, HasLog %v; want %s, %v", got.Task, got.Status, got.HasLog(), want.status, want.hasLog)
		}
	}
	if tasks[2].Status != Running || tasks[2].LogNotStored {
		t.Errorf("Interrupted changed the caller's tasks: %+v", tasks[2])
	}
}
