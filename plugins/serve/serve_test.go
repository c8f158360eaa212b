package serve

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"nectar/chains"
	"nectar/plugins"
)

// quietTask writes its out and logs only when told to.
type quietTask struct{ speak bool }

func (t quietTask) Run(ctx *chains.Context) error {
	if t.speak {
		ctx.Log().Info("hello")
	}
	_, err := ctx.Out().Write([]byte("ok\n"))
	return err
}

// The log is made at the task's first line: a task that writes none leaves no file; one whose
// log cannot be made fails, rather than passing with its lines lost.
func TestATaskLogIsMadeAtItsFirstLine(t *testing.T) {
	runner := NewRunner(Registry{Type: "t", Tasks: []TaskDef{
		{Chain: "c", Name: "Quiet", Decode: func([]byte) (chains.Task, error) { return quietTask{}, nil }},
		{Chain: "c", Name: "Speaks", Decode: func([]byte) (chains.Task, error) { return quietTask{speak: true}, nil }},
	}})
	dir := t.TempDir()
	run := func(task, logPath string) *plugins.RunTaskResponse {
		t.Helper()
		resp, err := runner.RunTask(context.Background(), &plugins.RunTaskRequest{
			Task: plugins.TaskRef{Chain: "c", Task: task, Params: []byte(`{}`)}, OutPath: filepath.Join(dir, task+"-out"), LogPath: logPath})
		if err != nil {
			t.Fatalf("%s: %v", task, err)
		}
		return resp
	}
	for _, tc := range []struct {
		task, logPath, wantErr string
		wantLog                bool
	}{
		{task: "Quiet", logPath: filepath.Join(dir, "quiet-log")},
		{task: "Speaks", logPath: filepath.Join(dir, "speaks-log"), wantLog: true},
		{task: "Speaks", logPath: filepath.Join(dir, "no-such-folder", "log"), wantErr: "writing the log: open "},
	} {
		resp := run(tc.task, tc.logPath)
		if (tc.wantErr == "") != (resp.Error == "") || !strings.Contains(resp.Error, tc.wantErr) {
			t.Errorf("%s with its log at %s: error %q, want %q", tc.task, tc.logPath, resp.Error, tc.wantErr)
		}
		b, err := os.ReadFile(tc.logPath)
		if tc.wantLog != (err == nil) || (tc.wantLog && !strings.Contains(string(b), "hello")) {
			t.Errorf("%s: log file %q (%v), want one: %v", tc.task, b, err, tc.wantLog)
		}
	}
}
