package catalog

import (
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"

	"nectar/chains/params"
)

func TestParseQuery(t *testing.T) {
	task := &Task{Type: "t", Chain: "c_chain", Name: "DailyTask",
		Params: []Param{{Name: "day", Kind: "string", Required: true}, {Name: "limit", Kind: "int", Default: "10"}},
		Parse: func(q url.Values) ([]byte, error) {
			var w params.Writer
			day, err := params.QueryString(q, "day", "", true)
			if err != nil {
				return nil, err
			}
			w.String("day", day)
			limit, err := params.QueryInt(q, "limit", "10", false)
			if err != nil {
				return nil, err
			}
			w.Int("limit", limit)
			return w.Bytes(), nil
		}}
	bare := &Task{Name: "PingTask", Parse: func(url.Values) ([]byte, error) { return []byte("{}"), nil }}
	tests := []struct {
		task    *Task
		query   string
		extra   []string
		want    string
		wantErr string
	}{
		{task, "day=mon", nil, `{"day":"mon","limit":10}`, ""},
		{task, "day=mon&wait=1s", []string{"wait", "force"}, `{"day":"mon","limit":10}`, ""},
		{task, "day=mon&wait=1s", nil, "", `parameter "wait": is not a parameter of DailyTask (it takes: day, limit)`},
		{task, "day=mon&dya=x", []string{"wait", "force"}, "", `parameter "dya": is not a parameter of DailyTask (it takes: day, limit, wait, force)`},
		{task, "day=mon&day=tue", nil, "", `parameter "day": is given 2 times; give it once`},
		{task, "limit=x&day=mon", nil, "", `parameter "limit": "x" is not an integer`},
		{bare, "x=1", nil, "", `parameter "x": is not a parameter of PingTask (it takes: nothing)`},
	}
	for _, tt := range tests {
		q, err := url.ParseQuery(tt.query)
		if err != nil {
			t.Fatal(err)
		}
		got, err := tt.task.ParseQuery(q, tt.extra...)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr || !errors.Is(err, params.ErrBad) {
				t.Errorf("ParseQuery(%q, %v) error = %v, want %q wrapping params.ErrBad", tt.query, tt.extra, err, tt.wantErr)
			}
			continue
		}
		if err != nil || string(got) != tt.want {
			t.Errorf("ParseQuery(%q, %v) = %s, %v, want %s", tt.query, tt.extra, got, err, tt.want)
		}
	}
}

// A worker told nothing serves every chain type's queue and every queue a task names, each once.
func TestQueues(t *testing.T) {
	c := New([]*Task{
		{Type: "etl", Chain: "a_chain", Name: "LoadTask"},
		{Type: "etl", Chain: "a_chain", Name: "TrainTask", Queue: "gpu"},
		{Type: "ml", Chain: "b_chain", Name: "FitTask", Queue: "gpu"},
		{Type: "ml", Chain: "b_chain", Name: "ServeTask", Queue: "etl"},
	})
	if got, want := strings.Join(c.Queues(), ","), "etl,gpu,ml"; got != want {
		t.Errorf("Queues() = %s, want %s", got, want)
	}
}

// A worker builds graphs for the chain types whose queues it serves: a type's own queue, or
// one its tasks name (testchains' GPUTask names gpu).
func TestTypesServed(t *testing.T) {
	cat := Generated()
	for _, tc := range []struct {
		queues, want []string
	}{
		{[]string{"testchains"}, []string{"testchains"}},
		{[]string{"gpu"}, []string{"testchains"}},
		{[]string{"airline", "testchains"}, []string{"airline", "testchains"}},
		{[]string{"nobody"}, nil},
		{cat.Queues(), cat.Types()},
	} {
		if got := cat.TypesServed(tc.queues); !slices.Equal(got, tc.want) {
			t.Errorf("TypesServed(%q) = %q, want %q", tc.queues, got, tc.want)
		}
	}
}
