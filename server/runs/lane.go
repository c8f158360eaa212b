package runs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"nectar/chains"
	"nectar/plugins"
	"nectar/targets"
)

// A lane executes the tasks of one run that reach one worker: it holds the run's plugin
// process there (its output file is sliced into those tasks' logs, its usage is the run's),
// bounds the tasks executing at once, and commits each task's files to the store. The run's
// driver (scheduler) walks the graph and hands the lane ready tasks as taskJobs, which are
// plain data: what crosses a queue between a server and its workers.
//
// TaskParallelism bounds the tasks executing (in the plugin, and fetching their inputs), not
// those preparing their folder or committing their files: a task frees its slot the moment its
// user code returns, so the plugin runs the next while the host makes a batch durable.
type lane struct {
	m     *Manager
	runID string
	typ   string
	log   *slog.Logger
	// failure turns a store or staging failure into the run record's sentence (and logs it).
	failure func(doing string, err error) string
	report  func(taskUpdate) // how the lane's tasks are doing, to the run's driver
	meter   *meter
	bg      *sync.WaitGroup

	procMu sync.Mutex
	proc   Process // the shared process, replaced when it dies
	// makeRoom, on a worker, frees a process nothing uses before the lane takes another
	// (workerprocs.go); nil elsewhere.
	makeRoom func()
	outMu    sync.Mutex
	procOut  *os.File // every process of the lane writes here (guarded by outMu until set)

	watchMu  sync.Mutex
	watchers map[Process]chan struct{}          // sampling goroutines, stopped at retire
	base     map[Process]float64                // CPU seconds each process had used before this run
	tasksIn  map[Process]map[*taskJob]time.Time // tasks running in each process, and since when
	// killedFor names the task whose timeout a process was killed for: the other tasks it
	// ran then did nothing wrong, and run again (guarded by watchMu).
	killedFor map[Process]*taskJob
	// lastSeen is each process's usage read just before the lane killed it (killNow): once it
	// has ended, /proc has no peak of it left, and wait4's may be the server's (retire).
	lastSeen map[Process]plugins.ProcessUsage
	runConns map[string]string // values of every connection the run declares

	spoolPrefix string // run-unique prefix of the task files in the spool
	// folders is the local store's fast path (nil elsewhere): files staged beside their key.
	folders   targets.Folders
	spoolNear atomic.Int32    // the spool is on the keys' file system: 0 unknown, 1 yes, 2 no (prepare)
	kept      keptOuts        // spool copies of the outs it uploaded, for its later tasks
	tainted   atomic.Bool     // a task panicked, timed out or lost its process: no reuse
	commits   chan *commitJob // to the batcher (local store)
	executing chan struct{}   // a slot per task executing (TaskParallelism)
	halted    atomic.Bool     // a fatal failure or a cancel: tasks not yet executing do not start
	outSeen   atomic.Int64    // how far the plugin output has been handed to task logs
	// scrub replaces the values of every connection the run declares: tasks sharing a process
	// share its output, so each task's log is cleaned of all of them.
	scrub   *strings.Replacer
	secrets bool
	// tasks counts the tasks handed to the lane and not yet returned: end waits for them (and
	// the batcher stops after the last). Whoever hands a task over adds to it first.
	tasks sync.WaitGroup
}

// taskJob is one task for a lane to execute: all it needs, as data.
type taskJob struct {
	Run   string          `json:"run"` // the run's id
	Type  string          `json:"type"`
	Index int             `json:"index"` // in the run's task graph
	Ref   plugins.TaskRef `json:"ref"`
	Key   string          `json:"key"`
	// Inputs are the keys of the upstream tasks whose outs it reads, in Requires order.
	Inputs  []string           `json:"inputs,omitempty"`
	Timeout time.Duration      `json:"timeout,omitempty"` // 0: the server's default
	Retry   chains.RetryPolicy `json:"retry"`
	Isolate bool               `json:"isolate,omitempty"`
	Metrics bool               `json:"metrics,omitempty"`
	Conns   []string           `json:"conns,omitempty"` // the connections it declares
	Queue   string             `json:"queue,omitempty"` // the queue it names; empty: its type's
	// NoSync: the lane makes the files of many tasks durable at once (commit.go).
	NoSync bool `json:"no_sync,omitempty"`
	// DeadRun is the run of this key whose server died: its staged files go.
	DeadRun string `json:"dead_run,omitempty"`
	// FolderMade: the task's key folder exists (the root's is made when the run takes its lease).
	FolderMade bool `json:"folder_made,omitempty"`
	// beforeCommit, if set, must return nil before the task's files are committed: the root
	// task executes while its run stores the key's params and first record (drive), and its
	// out may not appear before them. It never travels in a message: a task is published only
	// once it returned (scheduler.dispatchQueued).
	beforeCommit func() error
	// Plain: its graph came from the catalog (plainGraph); the plugin checks the task agrees.
	Plain bool `json:"plain,omitempty"`
	// Send counts the messages the driver published for the task (a task sent again goes in
	// a message of its own), and Delivery is which delivery of its message this is (set by
	// the worker): two executions of one task never share staged files.
	Send     int    `json:"send,omitempty"`
	Delivery int    `json:"-"`
	Seq      uint64 `json:"-"` // its message's stream sequence (set by the worker)
}

// queue is the queue the task goes to: the one it names, or its chain type's.
func (j *taskJob) queue() string { return cmp.Or(j.Queue, j.Type) }

// taskOfKey is the task name in a key (chains/<type>/<chain>/<Task>/<md5>).
func taskOfKey(key string) string { return path.Base(path.Dir(key)) }

// taskUpdate is news of one task from its lane. Fields left zero did not change.
type taskUpdate struct {
	Index    int        `json:"index"`
	Started  *time.Time `json:"started,omitempty"` // it took an execution slot: RUNNING
	Attempt  *Attempt   `json:"attempt,omitempty"` // one began (no FinishedAt) or ended
	Progress *Progress  `json:"progress,omitempty"`
	// From a worker (the queue path): which worker, and which delivery of the task message
	// it has (above 1: the worker that had it before was lost).
	Worker   string `json:"worker,omitempty"`
	Delivery int    `json:"delivery,omitempty"`
	Seq      uint64 `json:"seq,omitempty"` // with Delivery: the stream sequence of the message
	// Found: the worker found the task's out committed (by the delivery before, whose worker
	// died before it reported), so it ran nothing.
	Found bool `json:"found,omitempty"`
}

// taskResult is how a task ended in its lane.
type taskResult struct {
	idx        int
	err        string
	fatal      bool // the process or the store is gone: start nothing more
	notStarted bool // halted before it executed: it stays pending (then CANCELLED)
	artifacts  []Artifact
	attempts   []Attempt // as reported on the way (the queue path sends them with the result)
	noLog      bool      // it failed, and no log of it was stored (none was made, or the store refused it)
	logEmpty   bool      // it is done and wrote no log: none is stored (commitDone)
}

// laneConfig is what a run tells the lanes of its tasks.
type laneConfig struct {
	runID, typ  string
	parallelism int
	runConns    []string // every connection the run's tasks declare
	log         *slog.Logger
	failure     func(doing string, err error) string
	report      func(taskUpdate)
	meter       *meter
	bg          *sync.WaitGroup // where the lane counts processes it stops in the background
}

// newLane starts a lane with p, its first plugin process (nil: started at the first task),
// whose output goes to out; base is the CPU p had used before.
func (m *Manager) newLane(c laneConfig, p Process, out *os.File, base float64) *lane {
	folders, _ := m.cfg.Store.(targets.Folders)
	if c.bg == nil {
		c.bg = &m.wg
	}
	l := &lane{m: m, runID: c.runID, typ: c.typ, log: c.log, failure: c.failure, report: c.report, meter: c.meter, bg: c.bg,
		procOut: out, folders: folders, kept: keptOuts{total: &m.keptBytes},
		spoolPrefix: filepath.Join(m.spool, taskFilesPrefix+c.runID),
		watchers:    map[Process]chan struct{}{}, tasksIn: map[Process]map[*taskJob]time.Time{}, killedFor: map[Process]*taskJob{}, base: map[Process]float64{},
		lastSeen:  map[Process]plugins.ProcessUsage{},
		executing: make(chan struct{}, max(c.parallelism, 1)), runConns: map[string]string{}}
	for _, name := range c.runConns {
		if v := m.connection(name); v != "" {
			l.runConns[name] = v
		}
	}
	l.scrub, l.secrets = plugins.Scrubber(l.runConns), len(l.runConns) > 0
	if folders != nil {
		l.commits = make(chan *commitJob)
		go l.batcher(l.commits)
	}
	if p != nil {
		l.adopt(p, base)
		l.proc = p
	}
	return l
}

// connection is the value of a named connection, "" when not configured.
func (m *Manager) connection(name string) string {
	if m.cfg.Connection == nil {
		return ""
	}
	return m.cfg.Connection(name)
}

// halt stops the tasks waiting for a slot from starting: the run is over for them.
func (l *lane) halt() { l.halted.Store(true) }

// execute runs one task in the plugin and commits its files (commit.go): log and artifacts
// first, out last, so an existing out always means a finished task.
// The caller has added the task to l.tasks; execute marks it done.
func (l *lane) execute(ctx context.Context, job *taskJob) taskResult {
	defer l.tasks.Done()
	i := job.Index
	var attempts []Attempt
	// A failure stores no log unless failLogged commits it.
	fail := func(msg string, fatal bool) taskResult {
		if fatal || ctx.Err() != nil {
			// Before this task's slot is freed (deferred): no task waiting for it may start.
			l.halted.Store(true)
		}
		return taskResult{idx: i, err: msg, fatal: fatal, attempts: attempts, noLog: true}
	}

	files, err := l.prepare(job)
	if err != nil {
		return fail(l.failure("making the folder of "+job.Ref.Task, err), true)
	}
	artDir := ""
	committed, madeArts := false, false
	defer func() {
		switch {
		case committed && files.beside: // renamed away
		case committed && l.kept.keep(job.Key, files.out): // uploaded: a later task may read it
			os.Remove(files.log)
		default:
			l.discardOut(files)
		}
		if madeArts || !committed { // a task that made none leaves nothing to remove
			os.RemoveAll(artDir)
		}
	}()
	// An execution slot, from fetching the inputs to the end of the last attempt.
	select {
	case l.executing <- struct{}{}:
	case <-ctx.Done():
		return taskResult{idx: i, notStarted: true}
	}
	released := false
	release := func() {
		if !released {
			released = true
			<-l.executing
		}
	}
	defer release()
	if l.halted.Load() || ctx.Err() != nil {
		return taskResult{idx: i, notStarted: true}
	}
	now := time.Now().UTC()
	l.report(taskUpdate{Index: i, Started: &now})
	conns, missing := l.connections(job)
	inputs, err := l.inputs(ctx, job)
	defer func() {
		for _, p := range inputs.downloaded {
			os.Remove(p)
		}
	}()
	if err != nil {
		return fail(err.Error(), true)
	}

	// Readable (and followable) while it runs; the plugin creates the file at the task's first
	// line (a task that writes none has no log: its end says the log is complete, and empty).
	defer l.m.live(job.Key, files.log)()

	policy := job.Retry
	if policy.Attempts < 1 {
		policy.Attempts = 1
	}
	backoff := policy.Backoff
	var res attemptResult
	reruns := 0 // attempts stopped by another task's timeout
	for attempt := 1; ; attempt++ {
		// A folder per attempt: what a failed attempt wrote (even late, from a goroutine it
		// left running) is never the next one's.
		if attempt > 1 {
			os.RemoveAll(artDir)
		}
		artDir = files.artDir(attempt)
		if missing != "" { // no retry can help
			msg := fmt.Sprintf("%s declares connection %q, which this server does not configure: set NECTAR_CONN_%s", job.Ref.Task, missing, strings.ToUpper(missing))
			appendText(files.log, msg+"\n")
			return l.failLogged(job, files, false, fail(msg, false))
		}
		res = l.attempt(ctx, job, attempt, files, artDir, inputs, conns)
		attempts = append(attempts, res.att)
		madeArts = madeArts || res.artifacts
		if res.msg == "" {
			break
		}
		if res.innocent && reruns < maxInnocentReruns && ctx.Err() == nil {
			reruns++ // not its fault: it does not use up its retries
			appendText(files.log, fmt.Sprintf("--- attempt %d stopped: %s; running it again ---\n", attempt, res.msg))
			continue
		}
		if handedBack(ctx) { // its worker hands it back: the next one runs it, with its retries
			return fail(res.msg, true)
		}
		if res.fatal || attempt-reruns >= policy.Attempts || ctx.Err() != nil {
			return l.failLogged(job, files, false, fail(res.msg, res.fatal))
		}
		appendText(files.log, fmt.Sprintf("--- attempt %d of %d failed: %s; retrying in %s ---\n", attempt, policy.Attempts, res.msg, backoff))
		select {
		case <-ctx.Done():
			if handedBack(ctx) { // its retries go on elsewhere
				return fail(context.Cause(ctx).Error(), true)
			}
			return l.failLogged(job, files, false, fail("cancelled: "+cancelReason(ctx), true))
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, max(policy.MaxBackoff, policy.Backoff))
	}
	release() // its user code has returned: the next task may execute while this one commits
	arts, logged, err := l.commitDone(commitContext(ctx), job, files, artDir, res.artifacts, res.publish, !job.NoSync)
	if err != nil {
		var res taskResult
		switch {
		case errors.Is(err, errStartWrites): // its run says why (drive): no store failure here
			res = fail("not committed: "+errStartWrites.Error(), true)
		case errors.Is(err, errTaskArtifacts): // the task's doing: said as it is, and only its
			// dependents are stopped (as by its own error), not the run's other branches
			res = fail(err.Error(), false)
		default:
			res = fail(l.failure("committing the files of "+job.Ref.Task, err), true)
		}
		if handedBack(ctx) {
			return res
		}
		return l.failLogged(job, files, logged, res)
	}
	committed = true
	return taskResult{idx: i, artifacts: arts, attempts: attempts, logEmpty: !logged}
}

// failLogged commits the log of a task that failed (committed: its commit failed after the
// log may have been stored) and returns res, saying whether the log could not be stored: the
// record then signs no URL to it.
func (l *lane) failLogged(job *taskJob, files taskFiles, committed bool, res taskResult) taskResult {
	err := l.commitLog(job, files, committed)
	if err != nil {
		l.log.Warn("storing the log of a failed task", "task", job.Ref.Task, "key", job.Key, "err", err)
	}
	res.noLog = err != nil
	return res
}

// maxInnocentReruns bounds the attempts of a task run again because their process was killed
// for another task's timeout.
const maxInnocentReruns = 3

// attemptResult is how one attempt ended: msg is "" on success, else why it failed; fatal
// means the run cannot go on (cancelled, no plugin).
type attemptResult struct {
	msg       string
	fatal     bool
	innocent  bool // its process was killed for another task's timeout: it runs again
	publish   map[string]string
	artifacts bool    // the task made its artifact folder
	att       Attempt // as recorded
}

// attempt runs the task once, with its timeout, and reports the attempt.
func (l *lane) attempt(ctx context.Context, job *taskJob, number int, files taskFiles, artDir string, inputs taskInputs, conns map[string]string) (res attemptResult) {
	started := time.Now().UTC()
	l.report(taskUpdate{Index: job.Index, Attempt: &Attempt{Number: number, StartedAt: started}})
	defer func() {
		if l.secrets {
			res.msg = l.scrub.Replace(res.msg) // a task's error may quote its connection
		}
		finished := time.Now().UTC()
		res.att = Attempt{Number: number, StartedAt: started, FinishedAt: &finished, Error: res.msg}
		l.report(taskUpdate{Index: job.Index, Attempt: &res.att})
	}()
	var proc Process
	var err error
	if job.Isolate {
		// A process of its own: its figures are this task's alone.
		if proc, err = l.launch(); err != nil {
			return attemptResult{msg: err.Error(), fatal: true}
		}
		defer l.isolatedDone(job, proc, started)
	} else if proc, err = l.process(); err != nil {
		return attemptResult{msg: err.Error(), fatal: true}
	}
	l.watchMu.Lock()
	if l.tasksIn[proc] == nil {
		l.tasksIn[proc] = map[*taskJob]time.Time{}
	}
	l.tasksIn[proc][job] = started
	l.watchMu.Unlock()
	defer func() {
		l.watchMu.Lock()
		delete(l.tasksIn[proc], job)
		l.watchMu.Unlock()
	}()
	timeout := job.Timeout
	if timeout <= 0 {
		timeout = l.m.cfg.TaskTimeout
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	outStart := l.outSeen.Load()
	resp, err := proc.RunTask(actx, &plugins.RunTaskRequest{Task: job.Ref, Key: job.Key, OutPath: files.out, LogPath: files.log, Inputs: inputs.paths, InputRoot: inputs.root, InputName: inputs.name,
		ArtifactDir: artDir, Connections: conns, NoSync: job.NoSync, Plain: job.Plain, Queue: job.Queue})
	if err == nil && resp.Progress != nil {
		l.report(taskUpdate{Index: job.Index, Progress: l.progressOf(resp.Progress)})
	}
	if err != nil || resp.Panic {
		// A panic may have left a lock held, a timeout or a lost call a goroutine running:
		// this process serves no other run.
		l.tainted.Store(true)
	}
	if err != nil && actx.Err() == nil {
		// The plugin side may report its deadline (a cancelled stream) a moment before our
		// own timer fires: an error this close to the deadline is the timeout.
		if dl, ok := actx.Deadline(); ok && time.Until(dl) < 100*time.Millisecond {
			<-actx.Done()
		}
	}
	switch {
	case err != nil && ctx.Err() != nil:
		l.killNow(proc)      // the process group, at once: user code may ignore its context
		if handedBack(ctx) { // no log: the worker that runs it next commits its own
			return attemptResult{msg: context.Cause(ctx).Error(), fatal: true}
		}
		why := "cancelled: " + cancelReason(ctx)
		l.appendOutput(files.log, outStart, why)
		return attemptResult{msg: why, fatal: true}
	case err != nil && actx.Err() != nil:
		// The task outlived its timeout. Its goroutine may ignore the context, so the process
		// goes (the next attempt, and other tasks, get a new one).
		l.watchMu.Lock()
		l.killedFor[proc] = job
		l.watchMu.Unlock()
		l.killNow(proc)
		l.discard(proc)
		why := fmt.Sprintf("timed out after %s", timeout)
		l.appendOutput(files.log, outStart, why)
		return attemptResult{msg: why}
	case err != nil:
		l.watchMu.Lock()
		killer := l.killedFor[proc]
		l.watchMu.Unlock()
		if killer != nil && killer != job {
			why := fmt.Sprintf("its process was killed when %s, which ran beside it, outlived its timeout", killer.Ref.Task)
			l.appendOutput(files.log, outStart, why)
			return attemptResult{msg: why, innocent: true}
		}
		why := l.crashCause(proc, err)
		if !proc.Exited() { // alive but not answering: do not trust it with more tasks
			l.killNow(proc)
			l.discard(proc)
		}
		l.appendOutput(files.log, outStart, why)
		return attemptResult{msg: why}
	}
	l.appendOutput(files.log, outStart, "")
	return attemptResult{msg: resp.Error, publish: resp.Publish, artifacts: resp.Artifacts}
}

// process returns the live plugin process, starting a new one if the last died (a crash, a
// timeout kill): one task's crash costs only its own attempt.
func (l *lane) process() (Process, error) {
	l.procMu.Lock()
	defer l.procMu.Unlock()
	if l.proc != nil && !l.proc.Exited() {
		return l.proc, nil
	}
	l.outMu.Lock()
	first := l.procOut == nil
	l.outMu.Unlock()
	died := l.proc != nil
	if died {
		l.retire(l.proc)
	}
	if !died && first {
		// The lane's first process: one waiting in the pool, if any. (A process replacing a
		// dead one changes no count: the worker frees none for it.)
		if l.makeRoom != nil {
			l.makeRoom()
		}
		p, out, base, err := l.m.takePlugin(l.typ)
		if err != nil {
			return nil, err
		}
		l.outMu.Lock()
		raced := l.procOut != nil // an isolated task's process made the lane's output first
		if !raced {
			l.procOut = out
		}
		l.outMu.Unlock()
		if !raced {
			l.adopt(p, base)
			l.proc = p
			return p, nil
		}
		(&spare{proc: p, out: out}).discard() // its output file is not the lane's: a new one writes there
	}
	p, err := l.launch()
	if err != nil {
		l.proc = nil
		return nil, err
	}
	l.proc = p
	return p, nil
}

// discard retires p if it is the shared process, so the next task starts a new one (a killed
// process may not count as exited until it is reaped).
func (l *lane) discard(p Process) {
	l.procMu.Lock()
	defer l.procMu.Unlock()
	if l.proc == p {
		l.retire(p)
		l.proc = nil
	}
}

// launch starts a plugin process and samples it until it is retired.
func (l *lane) launch() (Process, error) {
	l.outMu.Lock()
	if l.procOut == nil { // a worker's lane: made by its first process (an isolated task's, say)
		out, err := l.m.newOutput()
		if err != nil {
			l.outMu.Unlock()
			return nil, err
		}
		l.procOut = out
	}
	out := l.procOut
	l.outMu.Unlock()
	p, err := l.m.startPlugin(l.typ, out)
	if err != nil {
		return nil, err
	}
	l.adopt(p, 0)
	return p, nil
}

// adopt samples p, a process of this run, until it is retired; base is the CPU it had used
// before (a process reused from an earlier run).
func (l *lane) adopt(p Process, base float64) {
	stop := make(chan struct{})
	l.watchMu.Lock()
	l.watchers[p] = stop
	l.base[p] = base
	l.watchMu.Unlock()
	go l.meter.watch(p, base, stop, func(sample Sample) { l.onSample(p, sample) })
}

// retire ends a process and adds its exact usage to the run's metrics (once), and returns it
// (CPU seconds since the process started, peak RSS; ok false if not known). The process has
// nothing left to do (its tasks' files are committed, its output is in a file), so it is
// killed at once rather than asked to shut down. The peak of a live one is read from /proc
// first: once it has ended, the kernel's peak for it is the server's at its start, if that
// was larger (Process.Usage). Its CPU comes from wait4, in microseconds, not /proc's 10 ms
// ticks (an isolated task may take less).
func (l *lane) retire(p Process) (cpu float64, peak uint64, ok bool) {
	var live plugins.ProcessUsage
	alive := false
	if !p.Exited() {
		live, alive = plugins.ReadUsage(p.Pid())
	}
	if !alive { // killed by the lane a moment ago (a timeout, a cancel)?
		l.watchMu.Lock()
		live, alive = l.lastSeen[p]
		l.watchMu.Unlock()
	}
	p.KillNow()
	cpu, peak, ok = p.Usage()
	if alive {
		peak = max(peak, live.PeakRSS) // wait4's, when kept, counts the children it reaped
		if !ok {
			cpu, ok = live.CPUSeconds, true
		}
	}
	if base, watched := l.unwatch(p); watched && ok {
		l.meter.ended(p.Pid(), max(cpu-base, 0), peak)
	}
	return cpu, peak, ok
}

// killNow kills p's process group at once, having read its usage for retire first.
func (l *lane) killNow(p Process) {
	if u, ok := plugins.ReadUsage(p.Pid()); ok && !p.Exited() {
		l.watchMu.Lock()
		l.lastSeen[p] = u
		l.watchMu.Unlock()
	}
	p.KillNow()
}

// unwatch stops sampling p and forgets it; ok is false if it was not watched (any more).
func (l *lane) unwatch(p Process) (base float64, ok bool) {
	l.watchMu.Lock()
	stop, ok := l.watchers[p]
	base = l.base[p]
	delete(l.watchers, p)
	delete(l.tasksIn, p)
	delete(l.base, p)
	delete(l.lastSeen, p)
	l.watchMu.Unlock()
	if ok {
		close(stop)
	}
	return base, ok
}

// end is the lane's last word to its shared process, once every task has returned. Its usage
// is read from /proc while it idles (the figure wait4 would give once it has exited), so the
// run's answer waits for no exit; then it waits for the next run of its chain type (pool.go)
// if reuse says the run ended well and nothing unusual happened, else it is killed in the
// background. A process that cannot be read is retired the slow, exact way.
func (l *lane) end(reuse bool) {
	l.tasks.Wait()
	l.kept.removeAll()
	if l.commits != nil {
		close(l.commits)
	}
	// A cancel, a panic, a timeout may have left the process in any state, and a task's
	// goroutine left running could print a connection's value where the next run would not
	// scrub it.
	reuse = reuse && !l.tainted.Load() && !l.secrets
	l.procMu.Lock()
	p := l.proc
	l.proc = nil
	l.procMu.Unlock()
	l.outMu.Lock()
	out := l.procOut
	l.outMu.Unlock()
	if p == nil {
		closeOutput(out) // no process of this run writes it any more
		return
	}
	l.m.parkDetached(l.typ, l.typ, l.settle(p, out, reuse), l.bg)
}

// settle takes p from the lane, with out, the output file its tasks wrote to: no task of the
// lane uses p now, so its usage so far is added to the run's metrics, exactly as the run's
// end reports it. What comes back goes to Manager.parkDetached: to the pool if reuse allows,
// else stopped. A process that has exited (or cannot be read) is retired here.
func (l *lane) settle(p Process, out *os.File, reuse bool) *parkedProcess {
	pp := &parkedProcess{spare: spare{proc: p, out: out}, reuse: reuse}
	cpu, peak, rss, ok := idleUsage(p.Pid())
	if !ok || p.Exited() {
		l.retire(p)
		pp.reuse, pp.retired = false, true
		return pp
	}
	if base, ok := l.unwatch(p); ok {
		l.meter.ended(p.Pid(), max(cpu-base, 0), peak)
	}
	pp.cpu0, pp.rss = cpu, rss
	return pp
}

// onSample asks the tasks running in p that define metrics for their values, and p for the
// progress its tasks reported since the last sample.
func (l *lane) onSample(p Process, sample Sample) {
	l.watchMu.Lock()
	var ask []*taskJob
	starts := map[*taskJob]time.Time{}
	running := map[string]*taskJob{}
	for job, started := range l.tasksIn[p] {
		running[job.Key] = job
		if job.Metrics {
			ask = append(ask, job)
			starts[job] = started
		}
	}
	l.watchMu.Unlock()
	if len(running) > 0 {
		l.pollProgress(p, running)
	}
	for _, job := range ask {
		l.customMetrics(p, job, sample, starts[job])
	}
}

// isolatedDone retires an isolated task's process and records the task's own usage.
func (l *lane) isolatedDone(job *taskJob, p Process, started time.Time) {
	cpu, peak, ok := l.retire(p)
	if !ok {
		return
	}
	wall := time.Since(started)
	l.meter.setTask(job.Key, func(tm *TaskMetrics) {
		u := Usage{}
		if tm.Usage != nil {
			u = *tm.Usage
		}
		u.CPUSeconds += cpu
		u.PeakRSSBytes = max(u.PeakRSSBytes, peak)
		u.WallSeconds += wall.Seconds()
		u.CostUSD = l.m.cfg.Pricing.Cost(u.CPUSeconds, u.PeakRSSBytes, time.Duration(u.WallSeconds*float64(time.Second)))
		tm.Usage = &u
	})
}

// crashCause waits for the dead plugin to be reaped and says how it ended.
func (l *lane) crashCause(proc Process, rpcErr error) string {
	deadline := time.Now().Add(2 * time.Second)
	for !proc.Exited() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if !proc.Exited() {
		return "lost contact with the plugin process: " + rpcMessage(rpcErr)
	}
	proc.Kill() // waits until its output is drained, so the log gets all of it
	return "plugin process exited (" + proc.ExitStatus() + ") while the task was running"
}

// taskInputs say where the plugin reads a task's upstream outs (RunTaskRequest's Inputs,
// InputRoot and InputName).
type taskInputs struct {
	root, name string   // a local store: paths are keys, each holding its out as name under root
	paths      []string // in Requires order
	downloaded []string // copies in the spool, removed when the task ends
}

// inputs are where the plugin reads the task's upstream outs. From a local store, the keys
// themselves under the store's folder: a join of 50,000 leaves sends the keys the scheduler
// holds, not 50,000 paths built for it. From a remote store they are downloaded side by side,
// TaskParallelism at a time: a join of 1,000 leaves would otherwise wait for 1,000 round trips
// in a row. The error is the run record's sentence.
func (l *lane) inputs(ctx context.Context, job *taskJob) (in taskInputs, err error) {
	if len(job.Inputs) == 0 {
		return in, nil
	}
	if lp, ok := l.m.cfg.Store.(targets.LocalPather); ok {
		for _, k := range job.Inputs { // a queue message's: each a task's key, in the store
			err := targets.CheckKey(k)
			if err == nil && !strings.HasPrefix(k, "chains/") {
				err = fmt.Errorf("%w: %q is not a task's key", targets.ErrBadKey, k)
			}
			if err != nil {
				return in, errors.New(l.failure("reading the out of "+taskOfKey(k), err))
			}
		}
		return taskInputs{root: lp.Root(), name: OutName, paths: job.Inputs}, nil
	}
	paths := make([]string, len(job.Inputs))
	errs := make([]error, len(job.Inputs))
	sem := make(chan struct{}, cap(l.executing))
	var wg sync.WaitGroup
	fetched := make([]bool, len(job.Inputs))
	for j := range job.Inputs {
		if p, ok := l.kept.lookup(job.Inputs[j]); ok { // uploaded by this lane: no download
			paths[j] = p
			continue
		}
		fetched[j] = true
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			spooled := fmt.Sprintf("%s-%d-input-%d", l.spoolPrefix, job.Index, j)
			paths[j], errs[j] = l.download(ctx, spooled, job.Inputs[j]+"/"+OutName)
		}()
	}
	wg.Wait()
	in.paths = paths
	for j, p := range paths {
		if fetched[j] && p != "" {
			in.downloaded = append(in.downloaded, p)
		}
	}
	for j, err := range errs {
		if err != nil {
			return in, errors.New(l.failure("reading the out of "+taskOfKey(job.Inputs[j]), err))
		}
	}
	return in, nil
}

// download copies the object of key to the spool file p for the plugin to read.
func (l *lane) download(ctx context.Context, p, key string) (string, error) {
	rc, err := l.m.cfg.Store.Get(ctx, key)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	f, err := os.Create(p)
	if err != nil {
		return "", fmt.Errorf("%w: %w", errStaging, err)
	}
	// ReadFrom fails on the download at least as often as on the disk: it counts as the store's.
	_, err = f.ReadFrom(rc)
	return p, errors.Join(err, f.Close())
}

// connections are the values of the connections the task declares; missing names the first
// one this worker does not configure.
func (l *lane) connections(job *taskJob) (conns map[string]string, missing string) {
	for _, name := range job.Conns {
		v := l.m.connection(name)
		if v == "" {
			return nil, name
		}
		if conns == nil {
			conns = map[string]string{}
		}
		conns[name] = v
	}
	return conns, ""
}

// progressOf is a task's report for its record, its status line cleaned of the run's secrets.
func (l *lane) progressOf(p *plugins.TaskProgress) *Progress {
	pr := progressOf(p)
	if pr != nil && l.secrets {
		pr.Status = l.scrub.Replace(pr.Status)
	}
	return pr
}

// ContentType is an artifact's media type, from its name's extension.
func ContentType(name string) string {
	if t := mime.TypeByExtension(path.Ext(name)); t != "" {
		return t
	}
	return "application/octet-stream"
}

func appendText(path, text string) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	f.WriteString(text)
}

// outputSize is the size of the plugin's output file now; it moves outSeen forward, which is
// where the next task's share of the output starts (one fstat per task, at its end).
func (l *lane) outputSize() int64 {
	fi, err := l.procOut.Stat()
	if err != nil {
		return 0
	}
	end := fi.Size()
	for {
		seen := l.outSeen.Load()
		if end <= seen || l.outSeen.CompareAndSwap(seen, end) {
			return end
		}
	}
}

// appendOutput copies what the plugin process printed since start into the task's log: the
// task's own prints when it ran alone, everyone's when tasks ran side by side (nothing is lost,
// though it may be shared). ending, if set, says why the task stopped.
func (l *lane) appendOutput(logPath string, start int64, ending string) {
	end := l.outputSize()
	if end <= start && ending == "" {
		return
	}
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		l.log.Warn("appending process output to a task log", "err", err)
		return
	}
	defer f.Close()
	if end > start {
		fmt.Fprintf(f, "--- stdout/stderr of the plugin process ---\n")
		if l.secrets { // scrubbed before anyone can read it live
			b, _ := io.ReadAll(io.NewSectionReader(l.procOut, start, end-start))
			io.WriteString(f, l.scrub.Replace(string(b)))
		} else {
			io.Copy(f, io.NewSectionReader(l.procOut, start, end-start))
		}
	}
	if ending != "" {
		fmt.Fprintf(f, "--- %s ---\n", ending)
	}
}

// pollProgress reports what the tasks running in p said of themselves (one call per process
// and monitor interval, however many tasks it runs).
func (l *lane) pollProgress(p Process, running map[string]*taskJob) {
	ctx, cancel := context.WithTimeout(context.Background(), l.m.cfg.MonitorInterval)
	defer cancel()
	resp, err := p.Progress(ctx, &plugins.ProgressRequest{})
	if err != nil {
		return // a plugin busy dying: its tasks' outcome says more
	}
	for _, tp := range resp.Tasks {
		if job, ok := running[tp.Key]; ok {
			l.report(taskUpdate{Index: job.Index, Progress: l.progressOf(&tp)})
		}
	}
}
