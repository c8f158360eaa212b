package server

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"nectar/server/catalog"
	"nectar/server/history"
	"nectar/server/runs"
	"nectar/server/schedules"
)

const dailyPath = "testchains/hello_chain/DailyTask"

// scheduledCatalog is the generated catalog with DailyTask's schedule replaced (its real one
// fires once a day, too rarely for a test); everything else about the task is as generated.
func scheduledCatalog(s catalog.Schedule) *catalog.Catalog {
	var tasks []*catalog.Task
	for _, t := range catalog.Generated().Tasks() {
		if t.Type+"/"+t.Chain+"/"+t.Name == dailyPath {
			c := *t
			c.Schedule = &s
			t = &c
		}
		tasks = append(tasks, t)
	}
	return catalog.New(tasks)
}

// startScheduling serves cat on target with schedules firing.
func startScheduling(t *testing.T, cat *catalog.Catalog, target string, edit ...func(*Config)) *testServer {
	t.Helper()
	return startSchedulingLogging(t, slog.New(slog.NewTextHandler(io.Discard, nil)), cat, target, edit...)
}

func startSchedulingLogging(t *testing.T, logger *slog.Logger, cat *catalog.Catalog, target string, edit ...func(*Config)) *testServer {
	t.Helper()
	return startTestServer(t, logger, cat, append([]func(*Config){func(c *Config) { c.Target = target; c.Schedules = true }}, edit...)...)
}

// scheduledRun is one run of DailyTask found in the store.
type scheduledRun struct {
	day time.Time
	rec runs.Record
}

// dailyRuns reads every DailyTask run record in the store, oldest interval first.
func dailyRuns(t *testing.T, ts *testServer) []scheduledRun {
	t.Helper()
	ctx := context.Background()
	keys, err := ts.Store().List(ctx, "chains/"+dailyPath+"/")
	if err != nil {
		t.Fatal(err)
	}
	var out []scheduledRun
	for _, k := range keys {
		if !strings.HasSuffix(k, "/"+runs.RecordName) {
			continue
		}
		var rec runs.Record
		if err := json.Unmarshal([]byte(ts.read(t, k)), &rec); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		var p struct {
			Day string `json:"day"`
		}
		json.Unmarshal(rec.Params, &p)
		day, err := time.Parse(time.RFC3339, p.Day)
		if err != nil {
			t.Fatalf("%s: day %q: %v", k, p.Day, err)
		}
		out = append(out, scheduledRun{day, rec})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].day.Before(out[j].day) })
	return out
}

// waitRuns waits until the store holds at least n final DailyTask runs.
func waitRuns(t *testing.T, ts *testServer, n int, within time.Duration) []scheduledRun {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := dailyRuns(t, ts)
		final := 0
		for _, r := range got {
			if r.rec.Status.Final() {
				final++
			}
		}
		if final >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d final DailyTask runs after %s, want %d", final, within, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// gaps lists the intervals between the first and the last run that have no run.
func gaps(rs []scheduledRun, step time.Duration) []time.Time {
	var out []time.Time
	for i := 1; i < len(rs); i++ {
		for d := rs[i-1].day.Add(step); d.Before(rs[i].day); d = d.Add(step) {
			out = append(out, d)
		}
	}
	return out
}

// Two servers on one store both run the scheduler; each tick is one run, executed once.
func TestScheduleFiresOncePerTickWithTwoServers(t *testing.T) {
	target := t.TempDir()
	cat := scheduledCatalog(catalog.Schedule{Cron: "@every 2s", Start: "2026-01-01", Param: "day"})
	var mu sync.Mutex
	var logA, logB, logOff strings.Builder
	a := startSchedulingLogging(t, slogTo(&mu, &logA), cat, target)
	b := startSchedulingLogging(t, slogTo(&mu, &logB), cat, target)
	// A third server with NECTAR_SCHEDULES=off serves the schedules but fires none.
	off := startSchedulingLogging(t, slogTo(&mu, &logOff), cat, target, func(c *Config) { c.Schedules = false })
	waitRuns(t, a, 4, 15*time.Second)
	var list struct {
		Firing    bool              `json:"firing"`
		Schedules []json.RawMessage `json:"schedules"`
	}
	if r := off.do(t, http.MethodGet, "/api/schedules"); json.Unmarshal(r.Data, &list) != nil || list.Firing || len(list.Schedules) != len(off.sched.Plans()) {
		t.Errorf("GET /api/schedules on the server that does not fire: %s", r.Data)
	}
	a.stop()
	b.stop()
	off.stop()
	got := dailyRuns(t, a)

	var late time.Duration      // from the fire time to the run's submission, the slowest tick
	for _, r := range got[1:] { // the first was fired at start, not at its tick
		late = max(late, r.rec.SubmittedAt.Sub(r.day.Add(2*time.Second)))
	}
	t.Logf("%d ticks, %d runs; a tick's run was submitted at most %s after its fire time", len(got), len(got), late)
	for _, r := range got {
		if r.rec.Status != runs.Done || r.rec.Trigger != history.TriggerSchedule {
			t.Errorf("run of %s: %s by %q, want DONE by schedule (%s)", r.day, r.rec.Status, r.rec.Trigger, r.rec.Error)
		}
		if r.day.UnixNano()%int64(2*time.Second) != 0 {
			t.Errorf("interval start %s is not on the 2s grid", r.day)
		}
	}
	if g := gaps(got, 2*time.Second); len(g) > 0 {
		t.Errorf("ticks without a run: %v", g)
	}
	mu.Lock()
	if strings.Contains(logOff.String(), "schedule fired") || off.Runs().Launches() != 0 {
		t.Errorf("a server with NECTAR_SCHEDULES=off fired a schedule")
	}
	for name, log := range map[string]string{"a": logA.String(), "b": logB.String()} {
		if n := strings.Count(log, "schedule fired"); n < len(got)-2 { // the last tick may be in flight at the stop
			t.Errorf("server %s fired %d ticks of %d: both servers should fire every tick", name, n, len(got))
		}
	}
	mu.Unlock()
	// Each run executed once: one plugin launch per run, across both servers.
	if launches := a.Runs().Launches() + b.Runs().Launches(); launches != int64(len(got)) {
		t.Errorf("%d plugin launches for %d scheduled runs: a tick ran twice", launches, len(got))
	}
}

// A server that was down for three ticks catches them up, oldest first, when the schedule says
// CatchUp; without it only the latest missed interval runs.
func TestScheduleCatchesUpAfterDowntime(t *testing.T) {
	for _, catchUp := range []bool{true, false} {
		name := map[bool]string{true: "catch-up", false: "latest only"}[catchUp]
		t.Run(name, func(t *testing.T) {
			target := t.TempDir()
			cat := scheduledCatalog(catalog.Schedule{Cron: "@every 2s", Start: "2026-01-01", CatchUp: catchUp, Param: "day"})
			// The schedule began long ago: the first server runs only the latest intervals
			// (three with catch-up: its cap), not the thousands since the start.
			a := startScheduling(t, cat, target, func(c *Config) { c.ScheduleCatchUp = 3 })
			before := waitRuns(t, a, map[bool]int{true: 3, false: 1}[catchUp], 10*time.Second)
			a.stop()
			if len(before) > 4 || time.Since(before[0].day) > time.Minute {
				t.Fatalf("first start ran %d intervals from %s: want only the latest", len(before), before[0].day)
			}
			down := time.Now()
			time.Sleep(6500 * time.Millisecond) // three ticks or more with no server
			b := startScheduling(t, cat, target)
			// Wait for the interval that ended last before b started to run.
			daily, _ := b.sched.Plan("testchains", "hello_chain", "DailyTask")
			latest := daily.Expr.Prev(time.Now()).Add(-2 * time.Second)
			deadline := time.Now().Add(10 * time.Second)
			var after []scheduledRun
			for {
				after = dailyRuns(t, b)
				if n := len(after); n > 0 && !after[n-1].day.Before(latest) && after[n-1].rec.Status.Final() {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the latest interval %s did not run within 10s of the restart", latest)
				}
				time.Sleep(50 * time.Millisecond)
			}
			b.stop()
			after = dailyRuns(t, b)
			var missed []scheduledRun // intervals that ended while no server ran
			for _, r := range after {
				if r.day.After(before[len(before)-1].day) && r.day.Add(2*time.Second).After(down) && r.day.Add(2*time.Second).Before(latest.Add(3*time.Second)) {
					missed = append(missed, r)
				}
			}
			g := gaps(after, 2*time.Second)
			if catchUp {
				if len(g) > 0 {
					t.Errorf("intervals missed during the downtime and not caught up: %v", g)
				}
				if len(missed) < 3 {
					t.Errorf("%d intervals run for the downtime, want 3 or more", len(missed))
				}
				for i := 1; i < len(missed); i++ {
					if missed[i].rec.SubmittedAt.Before(missed[i-1].rec.SubmittedAt) {
						t.Errorf("caught up %s before %s: want oldest first", missed[i].day, missed[i-1].day)
					}
				}
			} else if len(g) < 2 {
				t.Errorf("without catch-up the downtime's older intervals should be skipped; gaps: %v", g)
			}
		})
	}
}

// A pause is kept in the store: a server started later honours it; resume fires again.
func TestSchedulePauseSurvivesRestart(t *testing.T) {
	target := t.TempDir()
	cat := scheduledCatalog(catalog.Schedule{Cron: "@every 2s", Start: "2026-01-01", Param: "day"})
	a := startScheduling(t, cat, target)
	waitRuns(t, a, 1, 10*time.Second)
	if r := a.post(t, "/api/schedules/"+dailyPath+"/pause"); r.Code != http.StatusOK {
		t.Fatalf("pause: %d %s", r.Code, r.Message)
	}
	a.stop()
	n := len(dailyRuns(t, a))

	b := startScheduling(t, cat, target)
	time.Sleep(4500 * time.Millisecond) // two ticks
	if got := len(dailyRuns(t, b)); got != n {
		t.Fatalf("%d runs while paused, want %d", got, n)
	}
	var list struct {
		Schedules []struct {
			Task      string      `json:"task"`
			Paused    bool        `json:"paused"`
			PausedAt  *time.Time  `json:"paused_at"`
			NextFires []time.Time `json:"next_fires"`
		} `json:"schedules"`
		Firing bool `json:"firing"`
	}
	r := b.do(t, http.MethodGet, "/api/schedules")
	if err := json.Unmarshal(r.Data, &list); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range list.Schedules {
		if s.Task == "DailyTask" {
			found = true
			if !s.Paused || s.PausedAt == nil || len(s.NextFires) != 5 {
				t.Errorf("after a restart: paused %v at %v, %d next fires; want paused, a time, 5", s.Paused, s.PausedAt, len(s.NextFires))
			}
		}
	}
	if !found || !list.Firing {
		t.Fatalf("GET /api/schedules: %s", r.Data)
	}
	if r := b.post(t, "/api/schedules/"+dailyPath+"/resume"); r.Code != http.StatusOK {
		t.Fatalf("resume: %d %s", r.Code, r.Message)
	}
	waitRuns(t, b, n+1, 5*time.Second)
}

// A backfill runs each complete interval of the range once, with its own key; the answer lists
// them before they run.
func TestBackfillRunsEachInterval(t *testing.T) {
	ts := newTestServer(t)
	r := ts.post(t, "/api/schedules/"+dailyPath+"/backfill?from=2026-01-01&to=2026-01-05")
	if r.Code != http.StatusAccepted {
		t.Fatalf("backfill: %d %s", r.Code, r.Message)
	}
	var data struct {
		Runs []struct {
			Start     time.Time `json:"start"`
			Key       string    `json:"key"`
			StatusURL string    `json:"status_url"`
		} `json:"runs"`
	}
	if err := json.Unmarshal(r.Data, &data); err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	for i, run := range data.Runs {
		keys[run.Key] = true
		// DailyTask's days are Paris days: 1 January in Paris starts at 23:00 UTC the day before.
		want := time.Date(2025, 12, 31+i, 23, 0, 0, 0, time.UTC)
		if !run.Start.Equal(want) {
			t.Errorf("interval %d starts %s, want %s", i, run.Start, want)
		}
		st := ts.poll(t, run.StatusURL)
		if *st.JobStatus != runs.Done {
			t.Fatalf("interval %s: %s %v", run.Start, *st.JobStatus, st.Error)
		}
		if out := ts.read(t, run.Key+"/out"); out != want.Format(time.RFC3339)+" done\n" {
			t.Errorf("out of %s = %q", run.Start, out)
		}
	}
	if len(data.Runs) != 5 || len(keys) != 5 {
		t.Fatalf("%d runs with %d keys, want 5 and 5", len(data.Runs), len(keys))
	}
	// The same backfill again starts nothing new: every interval is done.
	launches := ts.Runs().Launches()
	if r := ts.post(t, "/api/schedules/"+dailyPath+"/backfill?from=2026-01-01&to=2026-01-05"); r.Code != http.StatusAccepted {
		t.Fatalf("second backfill: %d %s", r.Code, r.Message)
	}
	time.Sleep(300 * time.Millisecond)
	if ts.Runs().Launches() != launches {
		t.Errorf("a second backfill of done intervals ran them again")
	}
	if h := ts.History(); h != nil {
		h.Flush(context.Background())
		page := ts.do(t, http.MethodGet, "/api/runs?trigger=backfill")
		var p struct {
			Runs []json.RawMessage `json:"runs"`
		}
		json.Unmarshal(page.Data, &p)
		if len(p.Runs) != 5 {
			t.Errorf("history lists %d runs triggered by backfill, want 5", len(p.Runs))
		}
	}
}

func TestScheduleErrors(t *testing.T) {
	ts := newTestServer(t)
	for _, tc := range []struct {
		method, path string
		code         int
		says         string
	}{
		{"POST", "/api/schedules/" + dailyPath + "/backfill?from=2026-01-05&to=2026-01-01", 400, `"to"`},
		{"POST", "/api/schedules/" + dailyPath + "/backfill?to=2026-01-01", 400, `"from"`},
		{"POST", "/api/schedules/" + dailyPath + "/backfill?from=yesterday&to=2026-01-01", 400, `"from"`},
		// An empty bound is not the year 1 (a yearly schedule would have started 2,025 runs).
		{"POST", "/api/schedules/" + dailyPath + "/backfill?from=&to=2026-01-01", 400, `parameter "from": is empty`},
		{"POST", "/api/schedules/" + dailyPath + "/backfill?from=2026-01-01&to=", 400, `parameter "to": is empty`},
		{"POST", "/api/schedules/" + dailyPath + "/backfill?from=2026-01-01&to=2026-01-02&day=2026-01-01", 400, `"day"`},
		{"POST", "/api/schedules/" + dailyPath + "/backfill?from=2999-01-01&to=2999-01-02", 400, "no complete interval"},
		{"POST", "/api/schedules/" + dailyPath + "/backfill?from=2026-01-01&to=2026-01-02&from=x", 400, `"from"`},
		{"POST", "/api/schedules/" + dailyPath + "/backfill?from=1990-01-01&to=2026-01-01", 400, "more than 10000 intervals"},
		{"GET", "/api/schedules/testchains/hello_chain/HelloTask", 404, "declares no schedule"},
		{"POST", "/api/schedules/testchains/hello_chain/HelloTask/pause", 404, "declares no schedule"},
		{"POST", "/api/schedules/testchains/hello_chain/NoTask/pause", 404, `unknown task "NoTask"`},
		{"GET", "/api/schedules/" + dailyPath + "/pause", 405, "method"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			r := ts.do(t, tc.method, tc.path)
			if r.Code != tc.code || !strings.Contains(r.Message, tc.says) {
				t.Errorf("%d %q, want %d saying %s", r.Code, r.Message, tc.code, tc.says)
			}
		})
	}
}

// A stopped backfill starts no more intervals, whichever server sharing the store is asked to
// stop it (the one feeding it sees its own stop at once, another's through the store); the runs
// already started go on, and a backfill accepted after the stop runs. One run at a time and no
// queue: the backfill starts an interval about every half second.
func TestAStoppedBackfillStartsNoMoreIntervals(t *testing.T) {
	for _, tc := range []struct {
		name     string
		byOther  bool
		wantSays string
	}{
		{"stopped by its own server", false, "their intervals not started yet will not start"},
		{"stopped by another server", true, "backfills of " + dailyPath + " stopped on every server"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := t.TempDir()
			oneAtATime := func(c *Config) { c.Target, c.MaxRuns, c.MaxQueue = target, 1, 0 }
			a := newTestServer(t, oneAtATime)
			stopper := a
			if tc.byOther {
				stopper = newTestServer(t, oneAtATime)
			}
			if r := a.post(t, "/api/schedules/"+dailyPath+"/backfill?from=2026-01-01&to=2026-03-31"); r.Code != http.StatusAccepted {
				t.Fatalf("backfill: %d %s", r.Code, r.Message)
			}
			deadline := time.Now().Add(20 * time.Second)
			for a.Runs().Launches() < 1 {
				if time.Now().After(deadline) {
					t.Fatal("the backfill started no interval within 20 s")
				}
				time.Sleep(20 * time.Millisecond)
			}
			stop := stopper.do(t, http.MethodDelete, "/api/schedules/"+dailyPath+"/backfill")
			if stop.Code != http.StatusOK || !strings.Contains(stop.Message, tc.wantSays) {
				t.Fatalf("DELETE backfill = %d %q; want 200 saying %q", stop.Code, stop.Message, tc.wantSays)
			}
			// Within the store check's period the feeding server has seen it; then nothing
			// more starts.
			time.Sleep(2 * backfillStopCheck)
			started := a.Runs().Launches()
			time.Sleep(4 * backfillStopCheck)
			if now := a.Runs().Launches(); now != started || started >= 90 {
				t.Errorf("%d intervals started when stopped, %d a moment later; want no more, and fewer than the 90 asked", started, now)
			}
			if n := a.backfillPending(mustPlan(t, a)); n != 0 {
				t.Errorf("the feeding server still counts %d intervals waiting to start", n)
			}
			var in struct {
				StoppedAt *time.Time `json:"backfills_stopped_at"`
			}
			got := a.do(t, http.MethodGet, "/api/schedules/"+dailyPath)
			if json.Unmarshal(got.Data, &in); in.StoppedAt == nil {
				t.Errorf("GET the schedule: no backfills_stopped_at in %s", got.Data)
			}
			// A backfill accepted after the stop is not stopped, even over the intervals the
			// stopped one left: they wait for the new one (PENDING), then run.
			after := a.post(t, "/api/schedules/"+dailyPath+"/backfill?from=2026-03-01&to=2026-03-31")
			var list struct {
				Runs []struct {
					StatusURL string `json:"status_url"`
				} `json:"runs"`
			}
			if after.Code != http.StatusAccepted || json.Unmarshal(after.Data, &list) != nil || len(list.Runs) != 31 {
				t.Fatalf("backfill after the stop: %d %s", after.Code, after.Message)
			}
			time.Sleep(3 * backfillStopCheck) // the stopped backfill has ended meanwhile
			if last := a.do(t, http.MethodGet, list.Runs[30].StatusURL); last.Code != http.StatusOK || last.run.JobStatus == nil || *last.run.JobStatus != runs.Pending {
				t.Errorf("the last interval of the new backfill answers %d %q; want PENDING, waiting for it", last.Code, last.Message)
			}
			deadline = time.Now().Add(20 * time.Second)
			for a.Runs().Launches() < started+2 {
				if time.Now().After(deadline) {
					t.Fatalf("a backfill accepted after the stop started %d of its intervals in 20 s", a.Runs().Launches()-started)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

func mustPlan(t *testing.T, ts *testServer) *schedules.Plan {
	t.Helper()
	parts := strings.Split(dailyPath, "/")
	p, ok := ts.sched.Plan(parts[0], parts[1], parts[2])
	if !ok {
		t.Fatalf("no schedule %s", dailyPath)
	}
	return p
}
