package runs

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// A task's result crosses the queue from its worker to its run's server as a resultMsg: every
// field of it arrives (a field left out of the message is lost on the queue path only).
func TestATaskResultCrossesTheQueueWhole(t *testing.T) {
	started := time.Date(2026, 11, 30, 1, 2, 3, 0, time.UTC)
	cases := []taskResult{
		{idx: 3, artifacts: []Artifact{{Name: "plot.png", Size: 10, ContentType: "image/png"}}, attempts: []Attempt{{Number: 1, StartedAt: started}}},
		{idx: 4, err: "bad row 7", fatal: true, noLog: true, attempts: []Attempt{{Number: 1, StartedAt: started, Error: "bad row 7"}}},
		{idx: 5, notStarted: true, err: "its worker stopped"},
		{idx: 6, logEmpty: true, attempts: []Attempt{{Number: 1, StartedAt: started}}},
	}
	for _, res := range cases {
		b, err := json.Marshal(resultOf(res))
		if err != nil {
			t.Fatal(err)
		}
		var msg resultMsg
		if err := json.Unmarshal(b, &msg); err != nil {
			t.Fatal(err)
		}
		if got := msg.result(); !reflect.DeepEqual(got, res) {
			t.Errorf("sent %+v, received %+v (message %s)", res, got, b)
		}
	}
	// Every field is set in one of the cases above: a new field must be added to them, and
	// then to the message.
	v := reflect.ValueOf(taskResult{})
	for i := range v.NumField() {
		name, set := v.Type().Field(i).Name, false
		for _, res := range cases {
			set = set || !reflect.ValueOf(res).Field(i).IsZero()
		}
		if !set {
			t.Errorf("taskResult.%s is set by no case of this test", name)
		}
	}
}
