package runs

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"nectar/plugins"
)

// A worker holding its Processes frees an idle one before it takes another. The process of the
// run with no task in hand here goes to the pool, and the run that needs one takes it warm (no
// launch); the run with a task in hand keeps its own. When the run that lost its process gets
// a task while every process is busy, a new one is started: no task waits for a process.
func TestAWorkerAtItsProcessesReusesAnIdleRunsProcess(t *testing.T) {
	f := newFakePlugins(fakeChain{{name: "Root"}}, nil)
	g := newRig(t, f, 1)
	w := &Worker{m: g.m, cfg: WorkerConfig{Processes: 2}, lanes: map[string]*workerLane{}, reserved: map[string]*spare{}}
	lane := func(run string, inHand int) *workerLane {
		l := g.m.newLane(laneConfig{runID: run, typ: fakeType, parallelism: 1, log: slog.New(slog.DiscardHandler),
			failure: func(doing string, err error) string { return doing + ": " + err.Error() },
			report:  func(taskUpdate) {}, meter: newMeter(time.Hour, Pricing{})}, nil, nil, 0)
		l.makeRoom = func() { w.makeRoom(fakeType, l) }
		wl := &workerLane{lane: l, inHand: inHand, idle: time.Now()}
		w.mu.Lock()
		w.lanes[run] = wl
		w.mu.Unlock()
		t.Cleanup(func() { l.end(false) })
		return wl
	}
	process := func(wl *workerLane) Process {
		t.Helper()
		p, err := wl.lane.process()
		if err != nil {
			t.Fatalf("run %s: taking a process: %v", wl.lane.runID, err)
		}
		return p
	}
	held := func(wl *workerLane) Process {
		wl.lane.procMu.Lock()
		defer wl.lane.procMu.Unlock()
		return wl.lane.proc
	}

	busy, idle := lane("busy", 1), lane("idle", 0)
	pBusy, pIdle := process(busy), process(idle)
	if pBusy == pIdle || f.processes() != 2 {
		t.Fatalf("two runs share a process or %d were started; want one each, 2 started", f.processes())
	}

	third := lane("third", 1)
	if p := process(third); p != pIdle {
		t.Errorf("the third run got a new process; want the idle run's, warm from the pool")
	}
	if n := f.processes(); n != 2 {
		t.Errorf("%d processes were started; want 2 (the third run reuses one)", n)
	}
	if held(idle) != nil {
		t.Errorf("the idle run still holds its process")
	}
	if held(busy) != pBusy {
		t.Errorf("the run with a task in hand lost its process")
	}
	if pIdle.Exited() {
		t.Errorf("the reused process was stopped")
	}

	w.mu.Lock()
	idle.inHand = 1 // a task of the run that lost its process: every process is busy
	w.mu.Unlock()
	if p := process(idle); p == pBusy || p == pIdle {
		t.Errorf("the run took a process another run is using")
	}
	if n := f.processes(); n != 3 {
		t.Errorf("%d processes were started; want 3 (all busy: one more, not a wait)", n)
	}
}

// A worker's warm spare counts against its Processes. Graph requests that come in a burst each
// take a process and keep it for their run's first task; each take started a spare at once,
// which the next request took, so the cap never held (a worker with 8 slots and 2 processes
// ran 36). Now no spare is started while the worker holds its Processes.
func TestAWorkerAtItsProcessesStartsNoSpare(t *testing.T) {
	was := reserveFor
	reserveFor = time.Hour // a slow machine must not see the graphs' processes given back
	t.Cleanup(func() { reserveFor = was })
	f := newFakePlugins(fakeChain{{name: "Root"}}, nil)
	g := newRig(t, f, 1, func(c *Config) { c.WarmPlugins = true })
	w := &Worker{m: g.m, cfg: WorkerConfig{Processes: 2}, lanes: map[string]*workerLane{}, reserved: map[string]*spare{},
		log: slog.New(slog.DiscardHandler)}
	g.m.mu.Lock()
	g.m.workers = append(g.m.workers, w)
	g.m.mu.Unlock()
	settled := func() { // no spare being started
		for start := time.Now(); time.Since(start) < 10*time.Second; time.Sleep(time.Millisecond) {
			g.m.mu.Lock()
			n := len(g.m.refills)
			g.m.mu.Unlock()
			if n == 0 {
				return
			}
		}
		t.Fatal("a spare is still being started after 10 s")
	}
	for i := range 6 {
		p := w.graph(context.Background(), fmt.Sprintf("run%d", i), fakeType,
			&plugins.GraphRequest{Root: plugins.TaskRef{Chain: fakeChainName, Task: "Root", Params: json.RawMessage(`{}`)}})
		if p.takeErr != nil || p.graphErr != nil {
			t.Fatalf("graph %d: %v %v", i, p.takeErr, p.graphErr)
		}
		settled()
		spares, _ := g.m.spareCounts("")
		if held := w.holding() + spares; held > w.cfg.Processes+1 {
			t.Fatalf("after graph %d the worker holds %d processes (%d reserved, %d spares); want at most %d", i, held, w.holding(), spares, w.cfg.Processes+1)
		}
	}
	if n := f.processes(); n > w.cfg.Processes+1 {
		t.Errorf("%d processes were started for 6 graphs; want at most %d", n, w.cfg.Processes+1)
	}
}
