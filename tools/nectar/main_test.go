package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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
		{map[string]string{"NECTAR_ADDR": "127.0.0.1:99999", "NECTAR_LOG_LEVEL": "loud", "NECTAR_PPROF": "127.0.0.1:70000"},
			[]string{`NECTAR_ADDR="127.0.0.1:99999": want host:port`, `NECTAR_LOG_LEVEL="loud"`, `NECTAR_PPROF="127.0.0.1:70000"`}},
		{map[string]string{"NECTAR_TARGET": "s3://"}, []string{`NECTAR_TARGET="s3://"`, "no bucket given"}},
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
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"launch"}, `unknown command "launch"`},
		{[]string{"--server", "http://127.0.0.1:1"}, "no command given"},
		{nil, "no command given"},
	} {
		var out bytes.Buffer
		err := run(context.Background(), tc.args, func(string) string { return "" }, &out, &out)
		var ee *exitError
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(out.String(), "usage: nectar") {
			t.Errorf("nectar %v = %v, output %q; want the usage and %q, exit 2", tc.args, err, out.String(), tc.want)
		}
	}
}

// Flags go anywhere: before the command too, with their values.
func TestCommandFirst(t *testing.T) {
	for _, tc := range []struct{ in, want []string }{
		{[]string{"status", "k"}, []string{"status", "k"}},
		{[]string{"--server", "http://h:1", "status", "k"}, []string{"status", "--server", "http://h:1", "k"}},
		{[]string{"--server=http://h:1", "--json", "status", "k"}, []string{"status", "--server=http://h:1", "--json", "k"}},
		{[]string{"-f", "logs", "k"}, []string{"logs", "-f", "k"}},
		{[]string{"--workers", "2", "serve"}, []string{"serve", "--workers", "2"}},
		{[]string{"-h"}, []string{"-h"}},
		{[]string{"--token", "t"}, nil},
	} {
		if got := commandFirst(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("commandFirst(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// A command's bad flag is a usage error (exit 2) naming the flags it takes, without the flag
// package's dump; -h prints them and succeeds.
func TestCommandFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr string // "": succeeds
		wantOut string
	}{
		{[]string{"serve", "--bogus"}, "serve: flag provided but not defined: -bogus (it takes --workers)", ""},
		{[]string{"worker", "--slots", "many"}, `worker: invalid value "many" for flag -slots`, ""},
		{[]string{"serve", "-h"}, "", "usage: nectar serve [flags]"},
	} {
		var out bytes.Buffer
		err := run(context.Background(), tc.args, func(string) string { return "" }, &out, &out)
		var ee *exitError
		switch {
		case tc.wantErr == "" && (!errors.Is(err, errHelped) || !strings.Contains(out.String(), tc.wantOut)):
			t.Errorf("nectar %v = %v, output %q; want the help, %q", tc.args, err, out.String(), tc.wantOut)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.As(err, &ee) || ee.code != 2 || strings.Contains(out.String(), "Usage of")):
			t.Errorf("nectar %v = %v, output %q; want a usage error (exit 2) with %q and no flag dump", tc.args, err, out.String(), tc.wantErr)
		}
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
		args     []string
		wantOut  string
		wantErr  string
		wantCode int // the exit status of an error: 1 a failed run, 2 a usage error
	}{
		{[]string{"run", "testchains/hello_chain/UpperTask", "name=ada"}, "HELLO ADA\n", "", 0},
		{[]string{"run", "testchains/hello_chain/UpperTask", "name=ada"}, "HELLO ADA\n", "", 0}, // cached
		{[]string{"run", "testchains/faults_chain/FailTask", "message=boom"}, "", "FAILED: FailTask failed: boom", 1},
		{[]string{"run", "testchains/hello_chain/HelloTask", "nmae=x"}, "", `parameter "nmae": is not a parameter of HelloTask`, 2},
		{[]string{"run", "testchains/fanin_chain/JoinTask", "leaves=x"}, "", `parameter "leaves": "x" is not an integer`, 2},
		{[]string{"run", "testchains/nope/HelloTask"}, "", "no task testchains/nope/HelloTask", 2},
		{[]string{"run", "testchains/faults_chain/SleepTask", "duration=-1s"}, "", `parameter "duration": "-1s" is negative`, 2},
		{[]string{"run", "HelloTask"}, "", "want <type>/<chain>/<Task>", 2},
		{[]string{"run"}, "", "usage: nectar run", 2},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), tt.args, getenv, &stdout, &stderr)
		if tt.wantErr != "" {
			code := 1
			var ee *exitError
			if errors.As(err, &ee) {
				code = ee.code
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || code != tt.wantCode || strings.Count(err.Error(), "failed:") > 1 {
				t.Errorf("nectar %v = %v (exit %d), want an error containing %q, said once, exit %d", tt.args, err, code, tt.wantErr, tt.wantCode)
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
