package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"nectar/plugins/plugintest"
)

// The client commands, as the built binary, against a real server (the same binary serving),
// with tokens on.
func TestClientCommands(t *testing.T) {
	plugins, err := plugintest.Build()
	if err != nil {
		t.Fatal(err)
	}
	bin := buildNectar(t)
	addr := freeAddr(t)
	const token = "client-test-token-0123456789"
	srv := exec.Command(bin, "serve")
	srv.Env = append(os.Environ(), "NECTAR_ADDR="+addr, "NECTAR_TARGET="+t.TempDir(), "NECTAR_PLUGIN_DIR="+plugins,
		"NECTAR_API_TOKENS="+token, "NECTAR_MONITOR_INTERVAL=100ms", "NECTAR_LOG_LEVEL=warn",
		// One run at a time, no queue: a backfill then starts its intervals one by one.
		"NECTAR_MAX_RUNS=1", "NECTAR_MAX_QUEUE=0")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	waitHealthy(t, addr, 20*time.Second, func() string { return "" })
	type result struct {
		code           int
		stdout, stderr string
	}
	nectar := func(env []string, args ...string) result {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(append(os.Environ(), "NECTAR_SERVER=http://"+addr, "NECTAR_TOKEN="+token), env...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return result{code, out.String(), errb.String()}
	}
	check := func(r result, code int, wantOut, wantErr string, what string) {
		t.Helper()
		if r.code != code || !strings.Contains(r.stdout, wantOut) || !strings.Contains(r.stderr, wantErr) {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q", what, r.code, r.stdout, r.stderr, code, wantOut, wantErr)
		}
	}

	done := nectar(nil, "trigger", "testchains/hello_chain/HelloTask", "name=ada", "--wait")
	check(done, 0, "DONE chains/testchains/hello_chain/HelloTask/", "", "trigger --wait")
	key := regexp.MustCompile(`chains/\S+`).FindString(done.stdout)

	check(nectar(nil, "trigger", "testchains/faults_chain/FailTask", "message=boom", "--wait"), 1, "", "FAILED: FailTask failed: boom", "trigger --wait of a failing task")

	conf := nectar(nil, "trigger", "testchains/fanin_chain/JoinTask", "--conf", `{"leaves": 3}`, "--wait", "--json")
	var st struct {
		JobStatus string `json:"job_status"`
	}
	if conf.code != 0 || json.Unmarshal([]byte(conf.stdout), &st) != nil || st.JobStatus != "DONE" {
		t.Errorf("trigger --conf --json: exit %d %q %q", conf.code, conf.stdout, conf.stderr)
	}
	check(nectar(nil, "trigger", "testchains/fanin_chain/JoinTask", "--conf", `{"leaves": "3"}`), 2, "", `parameter "leaves"`, "a --conf of the wrong type")

	check(nectar([]string{"NECTAR_TOKEN=wrong-token-0000000000"}, "trigger", "testchains/hello_chain/HelloTask"), 2, "", "not one of the server's", "a wrong token")
	check(nectar([]string{"NECTAR_TOKEN="}, "trigger", "testchains/hello_chain/HelloTask"), 2, "", "--token or NECTAR_TOKEN", "no token")
	check(nectar([]string{"NECTAR_SERVER=http://127.0.0.1:1"}, "runs"), 2, "", "cannot reach the server at http://127.0.0.1:1", "no server")
	check(nectar(nil, "trigger", "testchains/hello_chain/HelloTask", "--frobnicate"), 2, "", "unknown flag --frobnicate", "a bad flag")

	// status, logs and runs of the key, at once: a history read writes what changed first.
	check(nectar(nil, "status", key), 0, "DONE HelloTask "+key, "", "status")
	check(nectar(nil, "--server", "http://"+addr, "status", key), 0, "DONE HelloTask "+key, "", "a flag before the command")
	fresh := nectar(nil, "trigger", "testchains/hello_chain/HelloTask", "name=at-once", "--json")
	var trig struct {
		Key string `json:"key"`
	}
	if fresh.code != 0 || json.Unmarshal([]byte(fresh.stdout), &trig) != nil || trig.Key == "" {
		t.Fatalf("trigger --json: %+v", fresh)
	}
	check(nectar(nil, "status", trig.Key), 0, "HelloTask "+trig.Key, "", "status right after trigger")
	if r := nectar(nil, "status", key, "--json"); r.code != 0 || strings.Contains(r.stdout, `\u0026`) || !strings.Contains(r.stdout, "&signature=") {
		t.Errorf("status --json: exit %d, %q; want its URLs as they are (& not escaped)", r.code, r.stdout)
	}
	check(nectar(nil, "logs", key, "NopeTask"), 2, "", "the run has no task NopeTask (its tasks: HelloTask)", "logs of a task not in the run")
	check(nectar(nil, "cancel", key), 2, "", "has already ended: it is DONE", "cancel of a finished run")
	check(nectar(nil, "trigger", "testchains/hello_chain/HelloTask", "--conf", `{"name":"a"}`, "name=b"), 2, "", `parameter "name" is given twice: by --conf and as name=b`, "a parameter by --conf and k=v")
	check(nectar(nil, "logs", key), 0, "greeting", "", "logs")

	// A run of more tasks than an answer lists: status says how many it shows, --all pages
	// through them, and logs looks for a task on every page.
	big := nectar(nil, "trigger", "testchains/fanin_chain/JoinTask", "leaves=150", "salt=cli-pages", "--wait")
	check(big, 0, "DONE", "", "trigger a fan-in of 150 leaves")
	bigKey := regexp.MustCompile(`chains/\S+`).FindString(big.stdout)
	paged := nectar(nil, "status", bigKey)
	check(paged, 0, "(100 of 151 tasks listed", "", "status of a run of 151 tasks")
	all := nectar(nil, "status", bigKey, "--all")
	if n := strings.Count(all.stdout, "LeafTask  DONE"); all.code != 0 || n != 150 || strings.Contains(all.stdout, "tasks listed") {
		t.Errorf("status --all listed %d leaves, want 150 (exit %d):\n%s", n, all.code, all.stdout)
	}
	check(nectar(nil, "logs", bigKey, "NopeTask"), 2, "", "the run has no task NopeTask (its tasks: JoinTask, LeafTask)", "logs of a task in no page")
	check(nectar(nil, "logs", bigKey, "LeafTask"), 0, "", "LeafTask wrote no log", "logs of a task that wrote none")
	check(nectar(nil, "runs", "task=FailTask"), 0, "FAILED", "", "runs")

	// cancel a slow run by its key.
	started := nectar(nil, "trigger", "testchains/faults_chain/ProgressTask", "count=600")
	slow := regexp.MustCompile(`key\s+(\S+)`).FindStringSubmatch(started.stdout)
	if started.code != 0 || slow == nil {
		t.Fatalf("trigger ProgressTask: %+v", started)
	}
	time.Sleep(400 * time.Millisecond)
	check(nectar(nil, "cancel", slow[1]), 0, "CANCELLED", "", "cancel")
	check(nectar(nil, "status", slow[1]), 1, "CANCELLED", "", "status of a cancelled run")

	// schedules: list, pause (kept, shown), resume; backfill three days and wait for them.
	if r := nectar(nil, "schedules"); r.code != 0 || !regexp.MustCompile(`(?m)^testchains/hello_chain/DailyTask +@daily +Europe/Paris `).MatchString(r.stdout) {
		t.Errorf("schedules: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	check(nectar(nil, "schedules", "pause", "testchains/hello_chain/DailyTask"), 0, "DailyTask paused", "", "schedules pause")
	if r := nectar(nil, "schedules", "--json"); !strings.Contains(r.stdout, `"paused":true`) {
		t.Errorf("schedules --json after a pause: %q", r.stdout)
	}
	check(nectar([]string{"NECTAR_TOKEN=wrong-token-0000000000"}, "schedules", "resume", "testchains/hello_chain/DailyTask"), 2, "", "not one of the server's", "resume with a wrong token")
	check(nectar(nil, "schedules", "resume", "testchains/hello_chain/DailyTask"), 0, "DailyTask resumed", "", "schedules resume")
	bf := nectar(nil, "backfill", "testchains/hello_chain/DailyTask", "--from", "2026-01-01", "--to=2026-01-03", "--wait")
	check(bf, 0, "3/3 2026-01-03T00:00:00+01:00 DONE", "backfilling 3 intervals", "backfill --wait")
	if n := strings.Count(bf.stdout, " DONE chains/testchains/hello_chain/DailyTask/"); n != 3 {
		t.Errorf("backfill --wait printed %d DONE intervals, want 3:\n%s", n, bf.stdout)
	}
	// Forced again: --wait waits for the new runs, not the earlier DONE records of the keys.
	before := time.Now()
	forced := nectar(nil, "backfill", "testchains/hello_chain/DailyTask", "--from", "2026-01-01", "--to=2026-01-03", "--wait", "--force", "--json")
	var again []struct {
		JobStatus   string    `json:"job_status"`
		SubmittedAt time.Time `json:"submitted_at"`
	}
	if forced.code != 0 || json.Unmarshal([]byte(forced.stdout), &again) != nil || len(again) != 3 {
		t.Fatalf("backfill --force --wait: %+v", forced)
	}
	for _, r := range again {
		if r.JobStatus != "DONE" || r.SubmittedAt.Before(before) {
			t.Errorf("forced backfill reported %s submitted %s: want the new run", r.JobStatus, r.SubmittedAt)
		}
	}
	check(nectar(nil, "backfill", "testchains/hello_chain/DailyTask", "--from", "2026-01-03", "--to", "2026-01-01"), 2, "", `parameter "to"`, "backfill of a reversed range")
	check(nectar(nil, "backfill", "testchains/hello_chain/DailyTask", "--from", "2026-01-03"), 2, "", "usage: nectar backfill", "backfill without --to")
	check(nectar(nil, "backfill", "testchains/hello_chain/HelloTask", "--from", "2026-01-01", "--to", "2026-01-02"), 2, "", "declares no schedule", "backfill of a task without a schedule")

	// A long backfill (one run at a time: an interval about every half second), stopped: --wait
	// reports the intervals it never started, and exits 1; also those whose earlier runs it
	// was to run again (--force), which keep answering with those runs.
	check(nectar(nil, "backfill", "testchains/hello_chain/DailyTask", "--from", "2026-02-27", "--to", "2026-02-28", "--wait"), 0, "2/2", "", "backfill of the days the long one ends with")
	long := exec.Command(bin, "backfill", "testchains/hello_chain/DailyTask", "--from", "2026-02-01", "--to", "2026-02-28", "--wait", "--force")
	long.Env = append(os.Environ(), "NECTAR_SERVER=http://"+addr, "NECTAR_TOKEN="+token)
	var longOut bytes.Buffer
	long.Stdout = &longOut
	if err := long.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	check(nectar(nil, "backfill", "testchains/hello_chain/DailyTask", "--stop"), 0, "backfills of testchains/hello_chain/DailyTask stopped", "", "backfill --stop")
	check(nectar(nil, "backfill", "testchains/hello_chain/DailyTask", "--stop", "--from", "2026-01-01"), 2, "", "usage: nectar backfill", "backfill --stop with dates")
	err = long.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(longOut.String(), "not started: the backfill was stopped") ||
		!regexp.MustCompile(`28/28 2026-02-28\S* NOT_STARTED \S+: not started: the backfill was stopped`).MatchString(longOut.String()) {
		t.Errorf("backfill --wait of a stopped backfill: %v\n%s", err, longOut.String())
	}
}
