package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The browser tests drive Debian's chromium (installed by `make tools`) against a real server:
// the pages as a user sees them, htmx's live refresh included. Screenshots of each page go to
// bin/test-artifacts/ (or $NECTAR_TEST_ARTIFACTS).

// chromiumPath is Debian's chromium; NECTAR_CHROMIUM overrides it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	p := os.Getenv("NECTAR_CHROMIUM")
	if p == "" {
		p = "/usr/bin/chromium"
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("the browser tests need Chromium at %s: `make tools` installs Debian's chromium (NECTAR_CHROMIUM names another)", p)
	}
	return p
}

// browserSession is one headless Chromium with a log of what its pages said on the console.
type browserSession struct {
	ctx       context.Context
	mu        sync.Mutex
	problems  []string
	artifacts string
}

func newBrowserSession(t *testing.T) *browserSession {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox, // CI runs as root
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	bs := &browserSession{ctx: ctx, artifacts: os.Getenv("NECTAR_TEST_ARTIFACTS")}
	if bs.artifacts == "" {
		_, file, _, _ := runtime.Caller(0)
		bs.artifacts = filepath.Join(filepath.Dir(file), "..", "bin", "test-artifacts")
	}
	os.MkdirAll(bs.artifacts, 0o755)
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("starting Chromium: %v", err)
	}
	// Errors and warnings of the console, uncaught exceptions, and the browser's own log (CSP
	// violations, failed loads), from every page of the session.
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleWarning || m.IsException() {
				bs.mu.Lock()
				bs.problems = append(bs.problems, fmt.Sprintf("%s %s:%d %s", m.Type, m.URL, m.Line+1, m.String()))
				bs.mu.Unlock()
			}
		}
	}()
	return bs
}

func (bs *browserSession) do(t *testing.T, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(bs.ctx, time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func browserRun[T any](t *testing.T, bs *browserSession, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(bs.ctx, time.Minute)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

func (bs *browserSession) screenshot(t *testing.T, name string) {
	t.Helper()
	png := browserRun(t, bs, "screenshot "+name, chromedp.FullScreenshot(100)) // quality 100 is a PNG; below, a JPEG
	if err := os.WriteFile(filepath.Join(bs.artifacts, name+".png"), png, 0o644); err != nil {
		t.Errorf("saving screenshot %s: %v", name, err)
	}
}

// checkConsole fails the test for anything the pages said on their console.
func (bs *browserSession) checkConsole(t *testing.T) {
	t.Helper()
	time.Sleep(200 * time.Millisecond) // the last messages are delivered from another goroutine
	bs.mu.Lock()
	defer bs.mu.Unlock()
	for _, p := range bs.problems {
		// A form sent back with its errors is answered 422 on purpose (the request could not be
		// processed); Chrome logs every 4xx document as a failed load.
		if strings.Contains(p, "/catalog/") && strings.Contains(p, "status of 422") {
			continue
		}
		// A report artifact's script blocked by its sandbox is the sandbox working.
		if strings.Contains(p, "Blocked script execution") && strings.Contains(p, "sandboxed") {
			continue
		}
		t.Errorf("browser console: %s", p)
	}
	bs.problems = nil
}

// dailyBackfill is DailyTask's backfill form on the schedules page.
const dailyBackfill = `form[action="/schedules/testchains/hello_chain/DailyTask/backfill"]`

func TestBrowser(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.MonitorInterval = 100 * time.Millisecond; c.Schedules = true })
	bs := newBrowserSession(t)
	text := func(sel string) string { return browserRun(t, bs, "text of "+sel, chromedp.Text(chromedp.CSS(sel))) }
	eval := func(js string) int { return browserRun(t, bs, js, chromedp.Evaluate[int](js)) }

	// Trigger HelloTask from the catalog form; its run page turns DONE with no reload.
	bs.do(t, "open /", chromedp.Navigate(ts.url+"/"), chromedp.WaitVisible(chromedp.CSS("h1")))
	bs.screenshot(t, "runs-empty")
	bs.do(t, "catalog", chromedp.Click(chromedp.CSS(`a[href="/catalog"]`)), chromedp.WaitVisible(chromedp.CSS(`a[href="/catalog/testchains/hello_chain/HelloTask"]`)))
	bs.screenshot(t, "catalog")
	bs.do(t, "form", chromedp.Click(chromedp.CSS(`a[href="/catalog/testchains/hello_chain/HelloTask"]`)), chromedp.WaitVisible(chromedp.ID("f-name")))
	bs.screenshot(t, "trigger-form")
	bs.do(t, "submit",
		chromedp.SetValue(chromedp.ID("f-name"), "browser"),
		chromedp.Submit(chromedp.CSS(`form.trigger`)),
		chromedp.WaitVisible(chromedp.ID("run-live")),
	)
	eval(`window.__mark = 1`) // a reload would lose it
	bs.do(t, "run turns DONE", chromedp.WaitVisible(chromedp.CSS(`#run-live .s-done`)))
	if eval(`window.__mark || 0`) != 1 {
		t.Errorf("the run page reloaded to show DONE; it should refresh in place")
	}
	// The graph, the log and the out preview.
	bs.do(t, "reload for details", chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("out-preview")))
	if got := text("#out-preview"); strings.TrimSpace(got) != "hello browser" {
		t.Errorf("out preview = %q", got)
	}
	if got := text("#log"); !strings.Contains(got, "greeting") || !strings.Contains(got, "name=browser") {
		t.Errorf("log = %q", got)
	}
	if n := eval(`document.querySelectorAll("svg .node").length`); n != 1 {
		t.Errorf("graph has %d nodes, want 1", n)
	}
	bs.screenshot(t, "run-hello")

	// The runs list refreshes in place when another run arrives.
	bs.do(t, "runs list", chromedp.Navigate(ts.url+"/"), chromedp.WaitVisible(chromedp.CSS(`table.runs`)))
	eval(`window.__mark = 2`)
	ts.postWait(t, "/api/chains/testchains/faults_chain/FailTask?wait=20s&message=seen+live", nil)
	bs.do(t, "new run appears", chromedp.Poll[chromedp.Void](`document.body.textContent.includes("seen live")`, chromedp.WithPollingTimeout(20*time.Second)))
	if eval(`window.__mark || 0`) != 2 {
		t.Errorf("the runs list reloaded; it should refresh in place")
	}
	bs.screenshot(t, "runs")
	// On a phone the list fits the screen's width (rows become stacked cards).
	bs.do(t, "phone", chromedp.EmulateViewport(390, 844), chromedp.Navigate(ts.url+"/"), chromedp.WaitVisible(chromedp.CSS(`table.runs`)))
	if w := eval(`document.documentElement.scrollWidth`); w > 390 {
		t.Errorf("the runs page is %d px wide on a 390 px phone", w)
	}
	bs.screenshot(t, "runs-phone")
	bs.do(t, "desktop again", chromedp.EmulateReset())

	// A bad parameter: the server's message beside the field.
	bs.do(t, "bad parameter", chromedp.Navigate(ts.url+"/catalog/testchains/fanin_chain/JoinTask"), chromedp.WaitVisible(chromedp.ID("f-leaves")),
		chromedp.SetValue(chromedp.ID("f-leaves"), "2.5"), chromedp.Submit(chromedp.CSS(`form.trigger`)),
		chromedp.WaitVisible(chromedp.ID("e-leaves")))
	if got := text("#e-leaves"); !strings.Contains(got, "is not an integer") {
		t.Errorf("message beside leaves = %q", got)
	}
	bs.screenshot(t, "form-error")

	// A 100-leaf fan-in is drawn with one group node.
	ts.postWait(t, "/api/chains/testchains/fanin_chain/JoinTask?wait=60s&leaves=100", nil)
	ts.flushHistory(t)
	fan := ts.runs(t, "task=JoinTask").Runs[0]
	bs.do(t, "fan-in", chromedp.Navigate(ts.url+"/runs/"+fan.RunID), chromedp.WaitVisible(chromedp.CSS(`svg .node.group`)))
	if label := browserRun(t, bs, "group label", chromedp.TextContent(chromedp.CSS(`svg .node.group .label`))); label != "LeafTask ×100" {
		t.Errorf("group node label = %q", label)
	}
	bs.screenshot(t, "run-fanin")

	// A slow task that reports progress: its status line moves live; cancel it from its page.
	a := ts.post(t, "/api/chains/testchains/faults_chain/ProgressTask?count=600&every=100ms")
	var runID string
	for deadline := time.Now().Add(10 * time.Second); runID == ""; time.Sleep(20 * time.Millisecond) {
		rec, _ := ts.Runs().Lookup(context.Background(), a.run.Key)
		if len(rec.Tasks) > 0 && rec.Tasks[0].Status == "RUNNING" {
			runID = rec.RunID
		}
		if time.Now().After(deadline) {
			t.Fatal("ProgressTask did not start")
		}
	}
	bs.do(t, "running page", chromedp.Navigate(ts.url+"/runs/"+runID+"?key="+a.run.Key), chromedp.WaitVisible(chromedp.CSS(`#run-live .s-running`)))
	bs.do(t, "progress shows", chromedp.WaitVisible(chromedp.ID("status-line")))
	step := func() int {
		var n int
		fmt.Sscanf(text("#status-line"), "step %d of 600", &n)
		return n
	}
	first := step()
	bs.do(t, "progress moves", chromedp.Poll[chromedp.Void](fmt.Sprintf(
		`(m => m && Number(m[1]) >= %d)(document.getElementById("status-line").textContent.match(/step (\d+) of 600/))`, first+5),
		chromedp.WithPollingTimeout(20*time.Second)))
	if n := eval(`document.querySelectorAll("progress").length`); n == 0 {
		t.Errorf("no progress bar on the running task's page")
	}
	bs.screenshot(t, "run-progress")
	bs.do(t, "cancel", chromedp.Click(chromedp.CSS(`button.danger`)), chromedp.WaitVisible(chromedp.CSS(`#run-live .s-cancelled`)))
	bs.screenshot(t, "run-cancelled")

	// Schedules: backfill three days from the schedules page; the runs list shows them marked.
	bs.do(t, "schedules", chromedp.EmulateViewport(1280, 800), chromedp.Click(chromedp.CSS(`a[href="/schedules"]`)), chromedp.WaitVisible(chromedp.CSS(`table.schedules`)))
	bs.do(t, "backfill",
		chromedp.SetValue(chromedp.CSS(dailyBackfill+` input[name=from]`), "2026-01-01"),
		chromedp.SetValue(chromedp.CSS(dailyBackfill+` input[name=to]`), "2026-01-03"),
		chromedp.Submit(chromedp.CSS(dailyBackfill)),
		chromedp.WaitVisible(chromedp.CSS(`table.runs`)))
	bs.do(t, "backfilled runs DONE", chromedp.Poll[chromedp.Void](
		`document.querySelectorAll("table.runs tbody .t-backfill").length == 3 && document.querySelectorAll("table.runs tbody .s-done").length == 3`,
		chromedp.WithPollingTimeout(20*time.Second)))
	bs.screenshot(t, "runs-backfill")
	bs.do(t, "pause", chromedp.Navigate(ts.url+"/schedules"), chromedp.WaitVisible(chromedp.CSS(`table.schedules`)),
		chromedp.Click(chromedp.CSS(`form[action="/schedules/testchains/hello_chain/DailyTask/pause"] button`)),
		chromedp.WaitVisible(chromedp.CSS(`form[action="/schedules/testchains/hello_chain/DailyTask/resume"]`)))
	bs.screenshot(t, "schedules")

	// Artifacts: images in a gallery, an HTML report framed in a sandbox whose script cannot run.
	ts.postWait(t, "/api/chains/testchains/data_chain/ArtifactsTask?count=2&pictures=true&wait=30s", nil)
	ts.flushHistory(t)
	art := ts.runs(t, "task=ArtifactsTask").Runs[0]
	bs.do(t, "artifacts", chromedp.Navigate(ts.url+"/runs/"+art.RunID+"?task=0"), chromedp.WaitVisible(chromedp.CSS(`.gallery img`)))
	bs.do(t, "gallery images load", chromedp.Poll[chromedp.Void](
		`[...document.querySelectorAll(".gallery img")].every(i => i.complete && i.naturalWidth === 120)`, chromedp.WithPollingTimeout(10*time.Second)))
	time.Sleep(300 * time.Millisecond) // the frame's script would have run by now
	if title := browserRun(t, bs, "title", chromedp.Evaluate[string](`document.title`)); strings.Contains(title, "escaped") {
		t.Errorf("a report artifact's script changed the page: title %q", title)
	}
	bs.screenshot(t, "run-artifacts")

	// Workers (a server with queue dispatch whatever this pass's default): the table refreshes
	// in place, and Drain turns the worker draining or drained.
	tq := newTestServer(t, func(c *Config) { c.Dispatch = "queue"; c.WorkerBeat = time.Second })
	tq.postWait(t, "/api/chains/testchains/fanin_chain/JoinTask?leaves=20&wait=30s", nil)
	bs.do(t, "workers", chromedp.Navigate(tq.url+"/workers"), chromedp.WaitVisible(chromedp.CSS(`tr.worker .w-running`)))
	eval(`window.__mark = 3`)
	bs.do(t, "queue row", chromedp.WaitVisible(chromedp.CSS(`table.queues`)))
	bs.do(t, "done count comes with a heartbeat", chromedp.Poll[chromedp.Void](
		`document.querySelector("tr.worker td:nth-child(5)").textContent.trim() === "21"`, chromedp.WithPollingTimeout(20*time.Second)))
	if eval(`window.__mark || 0`) != 3 {
		t.Errorf("the workers page reloaded; it should refresh in place")
	}
	bs.screenshot(t, "workers")
	bs.do(t, "drain", chromedp.Click(chromedp.CSS(`form.drain button`)), chromedp.WaitVisible(chromedp.CSS(`p.notice`)),
		chromedp.Poll[chromedp.Void](`document.querySelector("tr.worker .w-drained") !== null`, chromedp.WithPollingTimeout(20*time.Second)))
	bs.screenshot(t, "workers-drained")
	bs.checkConsole(t)
}
