package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"nectar/plugins/plugintest"
	"nectar/server/history"
	"nectar/server/history/sqlite"
)

func TestMain(m *testing.M) {
	code := m.Run()
	plugintest.Cleanup()
	os.Exit(code)
}

// Misconfiguration stops the server at start with every problem named.
func TestServeRejectsBadConfiguration(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want []string
	}{
		{map[string]string{"NECTAR_ADDR": "nowhere", "NECTAR_URL_EXPIRY": "8d", "NECTAR_MAX_RUNS": "0"},
			[]string{`NECTAR_ADDR="nowhere": want host:port`, `NECTAR_URL_EXPIRY="8d"`, `NECTAR_MAX_RUNS="0"`}},
		{map[string]string{"NECTAR_SIGNING_KEY": "short-secret"}, []string{"NECTAR_SIGNING_KEY: want at least 32 random bytes"}},
		{map[string]string{"NECTAR_TARGET": "gs://bucket"}, []string{`unknown target scheme "gs"`}},
		{map[string]string{"NECTAR_TARGET": t.TempDir(), "NECTAR_PLUGIN_DIR": "/no/such/dir"}, []string{"NECTAR_PLUGIN_DIR", "/no/such/dir", "make build"}},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), []string{"serve"}, func(k string) string { return tt.env[k] }, &stdout, &stderr)
		if err == nil {
			t.Errorf("serve with %v started", tt.env)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("serve with %v: error %q lacks %q", tt.env, err, w)
			}
		}
		if strings.Contains(err.Error(), "short-secret") {
			t.Errorf("the error shows the secret: %q", err)
		}
	}
}

func TestUnknownCommand(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"launch"}, func(string) string { return "" }, &out, &out); err == nil || !strings.Contains(out.String(), "usage: nectar") {
		t.Errorf("run(launch) = %v, output %q", err, out.String())
	}
}

func TestRunCommandRunsATaskHere(t *testing.T) {
	dir, err := plugintest.Build()
	if err != nil {
		t.Fatalf("building plugins: %v", err)
	}
	target := t.TempDir()
	env := map[string]string{"NECTAR_TARGET": target, "NECTAR_PLUGIN_DIR": dir}
	getenv := func(k string) string { return env[k] }
	tests := []struct {
		args    []string
		wantOut string
		wantErr string
	}{
		{[]string{"run", "testchains/hello_chain/UpperTask", "name=ada"}, "HELLO ADA\n", ""},
		{[]string{"run", "testchains/hello_chain/UpperTask", "name=ada"}, "HELLO ADA\n", ""}, // cached
		{[]string{"run", "testchains/faults_chain/FailTask", "message=boom"}, "", "FailTask failed: boom"},
		{[]string{"run", "testchains/hello_chain/HelloTask", "nmae=x"}, "", `parameter "nmae": is not a parameter of HelloTask`},
		{[]string{"run", "testchains/fanin_chain/JoinTask", "leaves=x"}, "", `parameter "leaves": "x" is not an integer`},
		{[]string{"run", "testchains/nope/HelloTask"}, "", "no task testchains/nope/HelloTask"},
		{[]string{"run", "testchains/faults_chain/SleepTask", "duration=-1s"}, "", `parameter "duration": "-1s" is negative`},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), tt.args, getenv, &stdout, &stderr)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("nectar %v = %v, want an error containing %q", tt.args, err, tt.wantErr)
			}
			continue
		}
		if err != nil || stdout.String() != tt.wantOut {
			t.Errorf("nectar %v = %v, stdout %q, want %q (stderr %s)", tt.args, err, stdout.String(), tt.wantOut, stderr.String())
		}
	}
	// The runs are in the history, marked as started from the CLI; nectar reindex makes the same
	// index again from the run records.
	d, err := sqlite.Open(filepath.Join(target, ".history.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	before, err := d.List(context.Background(), history.ListParams{Limit: 100})
	if err != nil || len(before) < 2 {
		t.Fatalf("history after nectar run: %d runs, %v", len(before), err)
	}
	for _, e := range before {
		if e.Trigger != history.TriggerCLI {
			t.Errorf("run %s %s: trigger %q, want cli", e.Task, e.RunID, e.Trigger)
		}
	}
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"reindex"}, getenv, &stdout, &stderr); err != nil {
		t.Fatalf("nectar reindex: %v\n%s", err, stderr.String())
	}
	if want := fmt.Sprintf("run history rebuilt: %d runs", len(before)); !strings.Contains(stdout.String(), want) {
		t.Errorf("nectar reindex said %q, want %q", stdout.String(), want)
	}
	after, err := d.List(context.Background(), history.ListParams{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, after, cmpopts.IgnoreFields(history.Entry{}, "Hits")); diff != "" {
		t.Errorf("reindexed history differs (-before +after):\n%s", diff)
	}
}
