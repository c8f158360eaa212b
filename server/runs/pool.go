package runs

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"nectar/plugins"
)

// The plugin process pool. A process serves one run at a time (its output file is sliced into
// that run's task logs, its usage is that run's), and once the run has ended well it waits for
// the next run of its chain type: starting a process costs ~10 ms of exec and handshake and
// its first calls a few more, which a trivial run would otherwise pay every time. A run that
// was cancelled, a process that crashed, timed out, runs an older binary or grew fat is not
// kept. User code should know: package-level state lives on from one run to the next in the
// same process, as in any worker pool.

// maxIdle bounds the processes of one chain type waiting for a run.
const maxIdle = 2

// maxIdleRSS is the resident size above which a process is not kept for another run: it
// would hold that memory while it waits.
const maxIdleRSS = 256 << 20

// idleTTL is how long a process beyond the first of its type waits for a run before it goes:
// a burst of concurrent runs leaves several, and they should not hold memory for good.
const idleTTL = 5 * time.Minute

// spare is a plugin process waiting for a run, with its output file.
type spare struct {
	proc  Process
	out   *os.File
	cpu0  float64   // CPU seconds it had used when it began to wait: the next run's usage starts there
	since time.Time // when it began to wait
	typ   string    // its chain type (set on a worker's reserved processes)
}

// reapIdle stops, every minute, the processes that waited longer than idleTTL, keeping the
// most recent one of each type (the warm spare), until the manager stops.
func (m *Manager) reapIdle() {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
		var old []*spare
		m.mu.Lock()
		for typ, l := range m.idle {
			keep := l[:0]
			for i, sp := range l {
				if i < len(l)-1 && time.Since(sp.since) > idleTTL {
					old = append(old, sp)
				} else {
					keep = append(keep, sp)
				}
			}
			m.idle[typ] = keep
		}
		m.mu.Unlock()
		for _, sp := range old {
			sp.discard()
		}
	}
}

func (sp *spare) discard() {
	sp.proc.KillNow()
	sp.out.Close()
	os.Remove(sp.out.Name())
}

// plannedRun is a run's first plugin process and the task graph it gave.
type plannedRun struct {
	proc     Process
	out      *os.File
	base     float64
	graph    *plugins.GraphResponse
	takeErr  error // no process
	graphErr error // a process, but no graph
	plain    bool  // the graph is plainGraph's: no plugin was asked
}

// plainGraph is the graph of rec's task if the catalog lists it as plain: the task alone, as
// the plugin would answer (the root's reference as asked, its connections and queue), so
// asking costs a round trip to the plugin for nothing. Nil otherwise.
func (m *Manager) plainGraph(rec Record) *plugins.GraphResponse {
	if m.cfg.Plain == nil {
		return nil
	}
	conns, queue, ok := m.cfg.Plain(rec.Type, rec.Chain, rec.Task)
	if !ok {
		return nil
	}
	return &plugins.GraphResponse{Nodes: []plugins.GraphNode{{
		TaskRef: rec.rootRef(), Connections: conns, Queue: queue}}}
}

// planner gets a run its first plugin process and task graph, as early as is useful, and
// makes sure the process is used or given back whichever way the run goes. A process waiting
// for a run of this type is taken when the run begins, and asked for the graph while the lease
// is taken and the store asked about the key: each of these costs as much as the graph call.
// None waiting: a process is started only once the run is known to execute (start).
type planner struct {
	m       *Manager
	rec     Record
	parent  context.Context
	ctx     context.Context
	cancel  context.CancelFunc
	ch      chan plannedRun
	started bool
	taken   bool
	waiting func() // called when the graph request waits in the queue for a worker
}

func (m *Manager) newPlanner(ctx context.Context, rec Record, early bool, waiting func()) *planner {
	pctx, cancel := context.WithCancel(ctx)
	pl := &planner{m: m, rec: rec, parent: ctx, ctx: pctx, cancel: cancel, ch: make(chan plannedRun, 1), waiting: waiting}
	if !early {
		return pl
	}
	if m.cfg.Queue != nil { // a worker answers: asking costs nothing here
		pl.start()
		return pl
	}
	if sp := m.takeIdle(rec.Type); sp != nil {
		pl.started = true
		go func() { pl.ch <- m.graphOf(pctx, rec, plannedRun{proc: sp.proc, out: sp.out, base: sp.cpu0}) }()
	}
	return pl
}

// start asks for the graph, taking or starting a process, unless that is under way already.
func (pl *planner) start() {
	if pl.started {
		return
	}
	pl.started = true
	go func() {
		if pl.m.cfg.Queue != nil {
			pl.ch <- pl.m.graphRemote(pl.ctx, pl.rec, pl.waiting)
			return
		}
		var p plannedRun
		if p.proc, p.out, p.base, p.takeErr = pl.m.takePlugin(pl.rec.Type); p.takeErr == nil {
			p = pl.m.graphOf(pl.ctx, pl.rec, p)
		}
		pl.ch <- p
	}()
}

// take is the process and graph, for the run to execute.
func (pl *planner) take() plannedRun {
	pl.start()
	pl.taken = true
	return <-pl.ch
}

// unused gives the process back if the run has not taken it (nothing to execute, another
// server runs the key, a failure first); start may ask again later (the other server died).
// Safe to call more than once, and after take.
func (pl *planner) unused() {
	if pl.started && !pl.taken {
		pl.cancel()
		pl.m.giveBack(pl.rec.Type, <-pl.ch)
		pl.started = false
		pl.ctx, pl.cancel = context.WithCancel(pl.parent)
	}
}

// close is unused, once the run is over.
func (pl *planner) close() {
	pl.unused()
	pl.cancel()
}

// graphOf asks p's process for rec's task graph, unless the task is plain.
func (m *Manager) graphOf(ctx context.Context, rec Record, p plannedRun) plannedRun {
	if g := m.plainGraph(rec); g != nil {
		p.graph, p.plain = g, true
		return p
	}
	m.graphs.Add(1)
	p.graph, p.graphErr = p.proc.Graph(ctx, &plugins.GraphRequest{Root: rec.rootRef(),
		MaxTasks: m.cfg.MaxTasks})
	return p
}

// giveBack returns the process of a run that turned out to have nothing to execute; one whose
// graph call failed or was cut short goes.
func (m *Manager) giveBack(typ string, p plannedRun) {
	if p.takeErr != nil || p.proc == nil { // (a graph from a worker holds no process here)
		return
	}
	if p.graphErr == nil {
		if cpu, _, rss, ok := idleUsage(p.proc.Pid()); ok && m.release(typ, p.proc, p.out, cpu, rss) {
			return
		}
	}
	(&spare{proc: p.proc, out: p.out}).discard()
}

// takePlugin gives a run its first plugin process: the one of that chain type that waited
// last (the warmest), else a new one, with where its usage starts. With warm plugins, taking
// the last waiting process starts the next in the background.
func (m *Manager) takePlugin(typ string) (Process, *os.File, float64, error) {
	if sp := m.takeIdle(typ); sp != nil {
		return sp.proc, sp.out, sp.cpu0, nil
	}
	if m.cfg.WarmPlugins {
		defer m.refill(typ)
	}
	out, err := m.newOutput()
	if err != nil {
		return nil, nil, 0, err
	}
	p, err := m.spawn(typ, out) // counted by the run, once it executes
	if err != nil {
		out.Close()
		os.Remove(out.Name())
		return nil, nil, 0, err
	}
	return p, out, 0, nil
}

// takeIdle takes the process of typ that waited last (the warmest), if one waits that is alive
// and runs the binary now installed. With warm plugins, taking the last one starts the next
// in the background.
func (m *Manager) takeIdle(typ string) *spare {
	for {
		m.mu.Lock()
		var sp *spare
		if n := len(m.idle[typ]); n > 0 {
			sp = m.idle[typ][n-1]
			m.idle[typ] = m.idle[typ][:n-1]
		}
		m.mu.Unlock()
		if sp == nil {
			return nil
		}
		if m.cfg.WarmPlugins {
			m.refill(typ) // (a no-op while another waits)
		}
		if !sp.proc.Exited() && m.cfg.Plugins.Current(typ, sp.proc) {
			return sp
		}
		sp.discard() // died, or the binary was rebuilt since
	}
}

// release offers a process whose run has ended well to the next run of its type. It reports
// false (and the caller stops the process) when the process should not be kept.
func (m *Manager) release(typ string, p Process, out *os.File, cpu float64, rss uint64) bool {
	if rss > maxIdleRSS || p.Exited() || !m.cfg.Plugins.Current(typ, p) {
		return false
	}
	// The next run's task logs start at the beginning of the file (the plugin appends).
	if err := out.Truncate(0); err != nil {
		return false
	}
	resetPeak(p.Pid())
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.draining || len(m.idle[typ]) >= maxIdle {
		return false
	}
	m.idle[typ] = append(m.idle[typ], &spare{proc: p, out: out, cpu0: cpu, since: time.Now()})
	return true
}

// resetPeak restarts the kernel's record of pid's peak resident size (VmHWM), so the next
// run's peak is its own.
func resetPeak(pid int) {
	plugins.WriteProc("/proc/"+strconv.Itoa(pid)+"/clear_refs", []byte("5"))
}

// refill starts a spare for typ unless one waits already, one is being started, the server
// is stopping, or its workers hold their processes already (roomForSpare). One at a time: a
// burst of runs takes a process every few milliseconds, and each take started a spare of its
// own while the last was still starting (a worker once ran a hundred processes at once, most
// of them spares on their way to being discarded).
func (m *Manager) refill(typ string) {
	if !m.roomForSpare() {
		return
	}
	m.mu.Lock()
	skip := m.draining || len(m.idle[typ]) > 0 || m.refills[typ]
	if !skip {
		m.refills[typ] = true
	}
	m.mu.Unlock()
	if skip {
		return
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer func() {
			m.mu.Lock()
			delete(m.refills, typ)
			m.mu.Unlock()
		}()
		out, err := m.newOutput()
		if err != nil {
			return
		}
		start := time.Now()
		p, err := m.cfg.Plugins.Start(typ, out)
		m.cfg.Observer.PluginLaunched(typ, time.Since(start), err)
		if err != nil {
			out.Close()
			os.Remove(out.Name())
			return
		}
		// One call through the connection while nobody waits: the first call of a fresh
		// process costs milliseconds (HTTP/2 setup, code paths paged in on both sides), and
		// it would otherwise be a run's.
		wctx, cancel := context.WithTimeout(m.ctx, 5*time.Second)
		p.Progress(wctx, &plugins.ProgressRequest{})
		cancel()
		cpu, _, _, _ := idleUsage(p.Pid()) // its start is not the first run's usage
		resetPeak(p.Pid())
		sp := &spare{proc: p, out: out, cpu0: cpu, since: time.Now()}
		m.mu.Lock()
		if m.draining || len(m.idle[typ]) >= maxIdle {
			m.mu.Unlock()
			sp.discard()
			return
		}
		m.idle[typ] = append(m.idle[typ], sp)
		m.mu.Unlock()
	}()
}

// WarmSpares is the number of plugin processes waiting for a run.
func (m *Manager) WarmSpares() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, l := range m.idle {
		n += len(l)
	}
	return n
}

// dropSpares stops the waiting processes (at shutdown).
func (m *Manager) dropSpares() {
	m.mu.Lock()
	idle := m.idle
	m.idle = map[string][]*spare{}
	m.mu.Unlock()
	for _, l := range idle {
		for _, sp := range l {
			sp.discard()
		}
	}
}

// startPlugin launches the chain type's plugin and counts the launch.
func (m *Manager) startPlugin(typ string, output *os.File) (Process, error) {
	m.launches.Add(1)
	return m.spawn(typ, output)
}

// spawn launches the chain type's plugin.
func (m *Manager) spawn(typ string, output *os.File) (Process, error) {
	start := time.Now()
	p, err := m.cfg.Plugins.Start(typ, output)
	m.cfg.Observer.PluginLaunched(typ, time.Since(start), err)
	if err != nil {
		return nil, fmt.Errorf("starting the plugin for chain type %s failed: %w", typ, err)
	}
	return p, nil
}

// newOutput makes the file a plugin process writes its output to (O_APPEND: the plugin and
// go-plugin's stderr copier both write to it).
func (m *Manager) newOutput() (*os.File, error) {
	f, err := os.CreateTemp(m.spool, "plugin-output-*")
	if err != nil {
		return nil, fmt.Errorf("%w: creating the plugin output file: %w", errStaging, err)
	}
	f.Close()
	if f, err = os.OpenFile(f.Name(), os.O_RDWR|os.O_APPEND, 0o600); err != nil {
		return nil, fmt.Errorf("%w: creating the plugin output file: %w", errStaging, err)
	}
	return f, nil
}

// rootRef is the reference of the task rec runs: what a graph request names as its root.
func (rec Record) rootRef() plugins.TaskRef {
	return plugins.TaskRef{Chain: rec.Chain, Task: rec.Task, Params: rec.Params}
}
