package runs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"mime"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"nectar/chains"
	"nectar/plugins"
	"nectar/targets"
)

// scheduler drives one run's graph through one plugin process: tasks whose out exists are
// skipped (and so is everything below them), the rest run in dependency order, independent
// ones in parallel up to TaskParallelism.
//
// TaskParallelism bounds the tasks executing (in the plugin, and fetching their inputs), not
// those preparing their folder or committing their files: a task frees its slot the moment its
// user code returns, so the plugin runs the next while the host makes a batch durable. Up to
// commitBacklog times as many tasks are in hand in all.
type scheduler struct {
	m       *Manager
	r       *Run
	procMu  sync.Mutex
	proc    Process // the shared process, replaced when it dies
	procOut *os.File
	meter   *meter

	watchMu  sync.Mutex
	watchers map[Process]chan struct{}     // sampling goroutines, stopped at retire
	base     map[Process]float64           // CPU seconds each process had used before this run
	tasksIn  map[Process]map[int]time.Time // tasks running in each process, and since when
	log      *slog.Logger
	typ      string

	spoolPrefix string // run-unique prefix of the task files in the spool
	runID       string
	// folders is the local store's fast path (nil elsewhere): files staged beside their key.
	folders       targets.Folders
	spooledInputs bool            // upstream outs are downloaded to the spool (not local)
	rootAbsent    bool            // the run looked for the root's out under its lease: none
	deadRun       string          // the run of this key whose server died: its staged files go
	tainted       atomic.Bool     // a task panicked, timed out or lost its process: no reuse
	noSync        bool            // the host syncs tasks' files in batches (commit.go)
	commits       chan *commitJob // to the batcher (local store)
	executing     chan struct{}   // a slot per task executing (TaskParallelism)
	halted        atomic.Bool     // a fatal failure: tasks not yet executing do not start
	outSeen       atomic.Int64    // how far the plugin output has been handed to task logs
	nodes         []*node
	// scrub replaces the values of every connection a task of this run declares: tasks sharing
	// a process share its output, so each task's log is cleaned of all of them.
	scrub   *strings.Replacer
	secrets bool
}

type node struct {
	ref        plugins.TaskRef
	timeout    time.Duration      // declared by the task; 0 = server default
	retry      chains.RetryPolicy // declared by the task; zero = one attempt
	isolate    bool               // chains.Isolated: a process per attempt
	metrics    bool               // chains.MetricsDefiner
	conns      []string           // chains.Connector: the connections it may read
	key        string
	deps       []int // graph indices, in Requires order
	dependents []int
	waiting    int // unfinished deps
	slot       int // index in Record.Tasks
}

type taskResult struct {
	idx        int
	err        string
	fatal      bool // the process or the store is gone: start nothing more
	notStarted bool // halted before it executed: it stays pending (then CANCELLED)
}

// commitBacklog is how many tasks per execution slot a run holds at once (see scheduler).
const commitBacklog = 4

func (s *scheduler) run(ctx context.Context, graph *plugins.GraphResponse) (Status, string) {
	if len(graph.Nodes) == 0 {
		return Failed, "the plugin returned an empty task graph"
	}
	s.nodes = make([]*node, len(graph.Nodes))
	for i, g := range graph.Nodes {
		s.nodes[i] = &node{ref: g.TaskRef, key: Key(s.typ, g.Chain, g.Task, g.Params), deps: g.Requires, slot: -1, timeout: g.Timeout}
		if g.Retry != nil {
			s.nodes[i].retry = *g.Retry
		}
		s.nodes[i].isolate, s.nodes[i].metrics, s.nodes[i].conns = g.Isolate, g.Metrics, g.Connections
	}
	all := map[string]string{}
	for _, n := range s.nodes {
		conns, _ := s.connections(n)
		maps.Copy(all, conns)
	}
	s.scrub, s.secrets = plugins.Scrubber(all), len(all) > 0
	for i, n := range s.nodes {
		for _, d := range n.deps {
			if d < 0 || d >= len(s.nodes) {
				return Failed, fmt.Sprintf("the plugin returned a bad task graph (dependency %d of %d)", d, i)
			}
			s.nodes[d].dependents = append(s.nodes[d].dependents, i)
		}
	}

	// A remote store answers in milliseconds, not microseconds: ask about every out at once.
	var known []bool
	if _, local := s.m.cfg.Store.(targets.LocalPather); !local {
		var err error
		if known, err = s.outsExist(ctx); err != nil {
			return Failed, s.failure("looking for the outs of the task graph", err)
		}
	}

	// Walk from the root; a task whose out exists is done and its own requirements are not needed.
	var tasks []TaskState
	var ready []int
	var walk func(i int) error
	walk = func(i int) (err error) {
		n := s.nodes[i]
		if n.slot >= 0 {
			return nil
		}
		var done bool
		switch {
		case known != nil:
			done = known[i]
		case i == 0 && s.rootAbsent:
		default:
			if done, err = targets.Exists(ctx, s.m.cfg.Store, n.key+"/"+OutName); err != nil {
				return err
			}
		}
		if i == 0 && s.r.force {
			done = false // ?force=true: rerun the named task; its upstream outs are kept
		}
		n.slot = len(tasks)
		st := TaskState{Chain: n.ref.Chain, Task: n.ref.Task, Key: n.key, Params: n.ref.Params, Status: Pending}
		if done {
			st.Status, st.Cached = Done, true
		}
		tasks = append(tasks, st)
		if done {
			return nil
		}
		for _, d := range n.deps {
			if err := walk(d); err != nil {
				return err
			}
			if tasks[s.nodes[d].slot].Status != Done {
				n.waiting++
			}
		}
		if n.waiting == 0 {
			ready = append(ready, i)
		}
		return nil
	}
	if err := walk(0); err != nil {
		return Failed, s.failure("looking for the outs of the task graph", err)
	}
	// The edges, for the graph the UI draws: a task that runs lists the slots it waits for (a
	// cached one was not expanded, so it lists none).
	for _, n := range s.nodes {
		if n.slot < 0 || tasks[n.slot].Cached {
			continue
		}
		for _, d := range n.deps {
			tasks[n.slot].Requires = append(tasks[n.slot].Requires, s.nodes[d].slot)
		}
	}
	s.r.update(func(rec *Record) { rec.Tasks = tasks })
	stopRecorder := s.startRecorder()
	defer stopRecorder()

	toRun := 0
	for _, t := range tasks {
		if !t.Cached {
			toRun++
		}
	}
	// Many tasks: the host makes their files durable in batches; a few: each plugin syncs its
	// own out (commit.go). A remote store's PUT is the durable write.
	s.noSync = s.folders == nil || toRun >= batchSyncFrom
	if s.folders != nil {
		s.commits = make(chan *commitJob)
		go s.batcher(s.commits)
		defer close(s.commits) // every task has returned when run does
	}

	results := make(chan taskResult)
	running := 0
	var firstErr string
	stopped := false
	s.executing = make(chan struct{}, s.m.cfg.TaskParallelism)
	for len(ready) > 0 || running > 0 {
		for !stopped && running < commitBacklog*s.m.cfg.TaskParallelism && len(ready) > 0 {
			i := ready[0]
			ready = ready[1:]
			running++
			go func() { results <- s.runTask(ctx, i) }()
		}
		if stopped {
			ready = nil
		}
		if running == 0 {
			break
		}
		res := <-results
		running--
		n := s.nodes[res.idx]
		if res.notStarted {
			continue
		}
		if res.err == "" {
			s.setTask(res.idx, func(t *TaskState) { t.Status, t.FinishedAt = Done, timePtr(time.Now().UTC()) })
			for _, d := range n.dependents {
				dn := s.nodes[d]
				if dn.slot < 0 || s.status(d) != Pending {
					continue
				}
				if dn.waiting--; dn.waiting == 0 {
					ready = append(ready, d)
				}
			}
			continue
		}
		status := Failed
		if ctx.Err() != nil {
			status = Cancelled
		}
		s.setTask(res.idx, func(t *TaskState) { t.Status, t.Error, t.FinishedAt = status, res.err, timePtr(time.Now().UTC()) })
		if firstErr == "" {
			firstErr = fmt.Sprintf("%s failed: %s", n.ref.Task, res.err)
		}
		s.markUpstreamFailed(res.idx)
		if res.fatal || ctx.Err() != nil {
			stopped = true
			s.halted.Store(true)
		}
	}

	// Anything still pending never started (the process died or the run was cancelled).
	if firstErr == "" && ctx.Err() != nil {
		firstErr = "cancelled: " + cancelReason(ctx)
	}
	final := Done
	for i, n := range s.nodes {
		if n.slot < 0 {
			continue
		}
		if st := s.status(i); st == Pending {
			s.setTask(i, func(t *TaskState) { t.Status, t.Error = Cancelled, "not started: "+firstErr })
		}
	}
	switch {
	case ctx.Err() != nil:
		final = Cancelled
		firstErr = "cancelled: " + cancelReason(ctx)
	case s.status(0) != Done:
		final = Failed
		if firstErr == "" {
			firstErr = "the root task did not finish"
		}
	default:
		firstErr = ""
	}
	return final, firstErr
}

// recordEvery is how often, at most, the record of a running run is stored while it changes.
const recordEvery = time.Second

// startRecorder stores the run record while the run executes: at once (the task list is now
// known), then every recordEvery if it changed, never spending more than a tenth of the time
// on it (a record of 50,000 tasks takes a while to encode). A server killed mid-run thus leaves
// a record that lists the tasks and how far they got. The returned stop waits for the last
// write, so none lands after the final record.
func (s *scheduler) startRecorder() (stop func()) {
	quit, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		var written uint64
		wait := recordEvery
		for {
			if s.r.leaseLost.Load() { // the key is another server's: so is its record
				return
			}
			if v := s.r.version(); v != written {
				start := time.Now()
				if err := s.m.putRecord(context.Background(), s.r); err != nil {
					s.log.Warn("storing the run record of a running run", "err", err)
				} else {
					written = v
				}
				wait = max(recordEvery, 10*time.Since(start))
			}
			select {
			case <-quit:
				return
			case <-time.After(wait):
			}
		}
	}()
	return func() { close(quit); <-finished }
}

// outsExist asks the store, TaskParallelism at a time, which tasks of the graph have an out.
func (s *scheduler) outsExist(ctx context.Context) ([]bool, error) {
	known := make([]bool, len(s.nodes))
	errs := make([]error, len(s.nodes))
	sem := make(chan struct{}, s.m.cfg.TaskParallelism)
	var wg sync.WaitGroup
	for i, n := range s.nodes {
		if i == 0 && s.rootAbsent {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			known[i], errs[i] = targets.Exists(ctx, s.m.cfg.Store, n.key+"/"+OutName)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return known, nil
}

func (s *scheduler) status(i int) Status {
	slot := s.nodes[i].slot
	var st Status
	s.r.update(func(rec *Record) { st = rec.Tasks[slot].Status })
	return st
}

func (s *scheduler) setTask(i int, f func(*TaskState)) {
	slot := s.nodes[i].slot
	s.r.update(func(rec *Record) { f(&rec.Tasks[slot]) })
}

// markUpstreamFailed marks every pending task that depends on i, transitively.
func (s *scheduler) markUpstreamFailed(i int) {
	for _, d := range s.nodes[i].dependents {
		if s.nodes[d].slot < 0 || s.status(d) != Pending {
			continue
		}
		cause := s.nodes[i].ref.Task
		s.setTask(d, func(t *TaskState) { t.Status, t.Error = UpstreamFailed, "requires "+cause+", which did not finish" })
		s.markUpstreamFailed(d)
	}
}

// runTask executes one task in the plugin and commits its files (commit.go): log and
// artifacts first, out last, so an existing out always means a finished task.
func (s *scheduler) runTask(ctx context.Context, i int) taskResult {
	n := s.nodes[i]
	fail := func(msg string, fatal bool) taskResult {
		if fatal || ctx.Err() != nil {
			// Before this task's slot is freed (deferred): no task waiting for it may start.
			s.halted.Store(true)
		}
		return taskResult{idx: i, err: msg, fatal: fatal}
	}

	files, err := s.prepare(i)
	if err != nil {
		return fail(s.failure("making the folder of "+n.ref.Task, err), true)
	}
	artDir := ""
	committed, madeArts := false, false
	defer func() {
		if !committed || !files.beside { // beside the key, a committed file was renamed away
			s.discardOut(files)
		}
		if madeArts || !committed { // a task that made none leaves nothing to remove
			os.RemoveAll(artDir)
		}
	}()
	// An execution slot, from fetching the inputs to the end of the last attempt.
	select {
	case s.executing <- struct{}{}:
	case <-ctx.Done():
		return taskResult{idx: i, notStarted: true}
	}
	released := false
	release := func() {
		if !released {
			released = true
			<-s.executing
		}
	}
	defer release()
	if s.halted.Load() || ctx.Err() != nil {
		return taskResult{idx: i, notStarted: true}
	}
	s.setTask(i, func(t *TaskState) { t.Status, t.StartedAt = Running, timePtr(time.Now().UTC()) })
	conns, missing := s.connections(n)
	inputs, err := s.inputs(ctx, i)
	if s.spooledInputs {
		defer func() {
			for _, p := range inputs {
				if p != "" {
					os.Remove(p)
				}
			}
		}()
	}
	if err != nil {
		return fail(err.Error(), true)
	}

	// Readable (and followable) while it runs; the plugin creates the file when the task starts.
	defer s.m.live(n.key, files.log)()

	policy := n.retry
	if policy.Attempts < 1 {
		policy.Attempts = 1
	}
	backoff := policy.Backoff
	var res attemptResult
	for attempt := 1; ; attempt++ {
		// A folder per attempt: what a failed attempt wrote (even late, from a goroutine it
		// left running) is never the next one's.
		if attempt > 1 {
			os.RemoveAll(artDir)
		}
		artDir = files.artDir(attempt)
		if missing != "" { // no retry can help
			msg := fmt.Sprintf("%s declares connection %q, which this server does not configure: set NECTAR_CONN_%s", n.ref.Task, missing, strings.ToUpper(missing))
			appendText(files.log, msg+"\n")
			s.commitLog(n, files, false)
			return fail(msg, false)
		}
		res = s.attempt(ctx, i, attempt, files, artDir, inputs, conns)
		madeArts = madeArts || res.artifacts
		if res.msg == "" {
			break
		}
		if res.fatal || attempt >= policy.Attempts || ctx.Err() != nil {
			s.commitLog(n, files, false)
			return fail(res.msg, res.fatal)
		}
		appendText(files.log, fmt.Sprintf("--- attempt %d of %d failed: %s; retrying in %s ---\n", attempt, policy.Attempts, res.msg, backoff))
		select {
		case <-ctx.Done():
			s.commitLog(n, files, false)
			return fail("cancelled: "+cancelReason(ctx), true)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, max(policy.MaxBackoff, policy.Backoff))
	}
	release() // its user code has returned: the next task may execute while this one commits
	arts, err := s.commitDone(ctx, n, files, artDir, res.artifacts, res.publish, !s.noSync)
	if err != nil {
		s.commitLog(n, files, true)
		return fail(s.failure("committing the files of "+n.ref.Task, err), true)
	}
	committed = true
	if len(arts) > 0 {
		s.setTask(i, func(t *TaskState) { t.Artifacts = arts })
	}
	return taskResult{idx: i}
}

// attemptResult is how one attempt ended: msg is "" on success, else why it failed; fatal
// means the run cannot go on (cancelled, no plugin).
type attemptResult struct {
	msg       string
	fatal     bool
	publish   map[string]string
	artifacts bool // the task made its artifact folder
}

// attempt runs task i once, with its timeout, and records the attempt.
func (s *scheduler) attempt(ctx context.Context, i, number int, files taskFiles, artDir string, inputs []string, conns map[string]string) (res attemptResult) {
	n := s.nodes[i]
	started := time.Now().UTC()
	s.setTask(i, func(t *TaskState) {
		t.Attempts = append(t.Attempts, Attempt{Number: number, StartedAt: started})
	})
	defer func() {
		if s.secrets {
			res.msg = s.scrub.Replace(res.msg) // a task's error may quote its connection
		}
		finished := time.Now().UTC()
		s.setTask(i, func(t *TaskState) {
			a := &t.Attempts[len(t.Attempts)-1]
			a.FinishedAt, a.Error = &finished, res.msg
		})
	}()
	var proc Process
	var err error
	if n.isolate {
		// A process of its own: its figures are this task's alone.
		if proc, err = s.launch(); err != nil {
			return attemptResult{msg: err.Error(), fatal: true}
		}
		defer s.isolatedDone(n, proc, started)
	} else if proc, err = s.process(); err != nil {
		return attemptResult{msg: err.Error(), fatal: true}
	}
	s.watchMu.Lock()
	if s.tasksIn[proc] == nil {
		s.tasksIn[proc] = map[int]time.Time{}
	}
	s.tasksIn[proc][i] = started
	s.watchMu.Unlock()
	defer func() {
		s.watchMu.Lock()
		delete(s.tasksIn[proc], i)
		s.watchMu.Unlock()
	}()
	timeout := n.timeout
	if timeout <= 0 {
		timeout = s.m.cfg.TaskTimeout
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	outStart := s.outSeen.Load()
	resp, err := proc.RunTask(actx, &plugins.RunTaskRequest{Task: n.ref, Key: n.key, OutPath: files.out, LogPath: files.log, Inputs: inputs,
		ArtifactDir: artDir, Connections: conns, NoSync: s.noSync})
	if err == nil && resp.Progress != nil {
		s.setTask(i, func(t *TaskState) { t.Progress = s.progressOf(resp.Progress) })
	}
	if err != nil || resp.Panic {
		// A panic may have left a lock held, a timeout or a lost call a goroutine running:
		// this process serves no other run.
		s.tainted.Store(true)
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
		proc.KillNow() // the process group, at once: user code may ignore its context
		why := "cancelled: " + cancelReason(ctx)
		s.appendOutput(files.log, outStart, why)
		return attemptResult{msg: why, fatal: true}
	case err != nil && actx.Err() != nil:
		// The task outlived its timeout. Its goroutine may ignore the context, so the process
		// goes (the next attempt, and other tasks, get a new one).
		proc.KillNow()
		s.discard(proc)
		why := fmt.Sprintf("timed out after %s", timeout)
		s.appendOutput(files.log, outStart, why)
		return attemptResult{msg: why}
	case err != nil:
		why := s.crashCause(proc, err)
		if !proc.Exited() { // alive but not answering: do not trust it with more tasks
			proc.KillNow()
			s.discard(proc)
		}
		s.appendOutput(files.log, outStart, why)
		return attemptResult{msg: why}
	}
	s.appendOutput(files.log, outStart, "")
	return attemptResult{msg: resp.Error, publish: resp.Publish, artifacts: resp.Artifacts}
}

// process returns the live plugin process, starting a new one if the last died (a crash, a
// timeout kill): one task's crash costs only its own attempt.
func (s *scheduler) process() (Process, error) {
	s.procMu.Lock()
	defer s.procMu.Unlock()
	if s.proc != nil && !s.proc.Exited() {
		return s.proc, nil
	}
	if s.proc != nil {
		s.retire(s.proc)
	}
	p, err := s.launch()
	if err != nil {
		s.proc = nil
		return nil, err
	}
	s.proc = p
	return p, nil
}

// discard retires p if it is the shared process, so the next task starts a new one (a killed
// process may not count as exited until it is reaped).
func (s *scheduler) discard(p Process) {
	s.procMu.Lock()
	defer s.procMu.Unlock()
	if s.proc == p {
		s.retire(p)
		s.proc = nil
	}
}

// launch starts a plugin process and samples it until it is retired.
func (s *scheduler) launch() (Process, error) {
	p, err := s.m.startPlugin(s.typ, s.procOut)
	if err != nil {
		return nil, err
	}
	s.adopt(p, 0)
	return p, nil
}

// adopt samples p, a process of this run, until it is retired; base is the CPU it had used
// before (a process reused from an earlier run).
func (s *scheduler) adopt(p Process, base float64) {
	stop := make(chan struct{})
	s.watchMu.Lock()
	s.watchers[p] = stop
	s.base[p] = base
	s.watchMu.Unlock()
	go s.meter.watch(p, base, stop, func(sample Sample) { s.onSample(p, sample) })
}

// retire ends a process and adds its exact usage to the run's metrics (once). The process has
// nothing left to do (its tasks' files are committed, its output is in a file), so it is
// killed at once rather than asked to shut down.
func (s *scheduler) retire(p Process) {
	p.KillNow()
	if base, ok := s.unwatch(p); ok {
		s.meter.ended(p, base)
	}
}

// unwatch stops sampling p and forgets it; ok is false if it was not watched (any more).
func (s *scheduler) unwatch(p Process) (base float64, ok bool) {
	s.watchMu.Lock()
	stop, ok := s.watchers[p]
	base = s.base[p]
	delete(s.watchers, p)
	delete(s.tasksIn, p)
	delete(s.base, p)
	s.watchMu.Unlock()
	if ok {
		close(stop)
	}
	return base, ok
}

// end is the run's last word to its shared process, once every task has returned. Its usage
// is read from /proc while it idles (the figure wait4 would give once it has exited), so the
// run's answer waits for no exit; then it waits for the next run of its chain type (pool.go),
// unless the run was cancelled or the process should not be kept, and is killed in the
// background. A process that cannot be read is retired the slow, exact way.
func (s *scheduler) end(reuse bool) {
	s.procMu.Lock()
	p := s.proc
	s.proc = nil
	s.procMu.Unlock()
	keepOut := false
	defer func() {
		if !keepOut { // the output file goes once no process of this run writes it
			s.procOut.Close()
			os.Remove(s.procOut.Name())
		}
	}()
	if p == nil {
		return
	}
	cpu, peak, rss, ok := idleUsage(p.Pid())
	if !ok || p.Exited() {
		s.retire(p)
		return
	}
	if base, ok := s.unwatch(p); ok {
		s.meter.endedIdle(p.Pid(), max(cpu-base, 0), peak)
	}
	if reuse && s.m.release(s.typ, p, s.procOut, cpu, rss) {
		keepOut = true
		return
	}
	s.m.wg.Add(1)
	go func() {
		defer s.m.wg.Done()
		p.KillNow()
	}()
}

// onSample asks the tasks running in p that define metrics for their values, and p for the
// progress its tasks reported since the last sample.
func (s *scheduler) onSample(p Process, sample Sample) {
	s.watchMu.Lock()
	var ask []int
	starts := map[int]time.Time{}
	running := map[string]int{}
	for i, started := range s.tasksIn[p] {
		running[s.nodes[i].key] = i
		if s.nodes[i].metrics {
			ask = append(ask, i)
			starts[i] = started
		}
	}
	s.watchMu.Unlock()
	if len(running) > 0 {
		s.pollProgress(p, running)
	}
	for _, i := range ask {
		s.customMetrics(p, i, sample, starts[i])
	}
}

// isolatedDone retires an isolated task's process and records the task's own usage.
func (s *scheduler) isolatedDone(n *node, p Process, started time.Time) {
	s.retire(p)
	cpu, peak, ok := p.Usage()
	if !ok {
		return
	}
	wall := time.Since(started)
	s.meter.setTask(n.key, func(tm *TaskMetrics) {
		u := Usage{}
		if tm.Usage != nil {
			u = *tm.Usage
		}
		u.CPUSeconds += cpu
		u.PeakRSSBytes = max(u.PeakRSSBytes, peak)
		u.WallSeconds += wall.Seconds()
		u.CostUSD = s.m.cfg.Pricing.Cost(u.CPUSeconds, u.PeakRSSBytes, time.Duration(u.WallSeconds*float64(time.Second)))
		tm.Usage = &u
	})
}

// crashCause waits for the dead plugin to be reaped and says how it ended.
func (s *scheduler) crashCause(proc Process, rpcErr error) string {
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

// failure is Manager.failure for this run.
func (s *scheduler) failure(doing string, err error) string {
	return s.m.failure(s.log, s.r, doing, err)
}

// inputs are the paths of task i's upstream outs. From a remote store they are downloaded
// side by side, TaskParallelism at a time: a join of 1,000 leaves would otherwise wait for
// 1,000 round trips in a row. The error is the run record's sentence.
func (s *scheduler) inputs(ctx context.Context, i int) ([]string, error) {
	deps := s.nodes[i].deps
	paths := make([]string, len(deps))
	errs := make([]error, len(deps))
	get := func(j int) {
		paths[j], errs[j] = s.inputPath(ctx, fmt.Sprintf("%s-%d-input-%d", s.spoolPrefix, i, j), s.nodes[deps[j]].key+"/"+OutName)
	}
	if !s.spooledInputs {
		for j := range deps {
			get(j) // a local path: no I/O
		}
	} else {
		sem := make(chan struct{}, s.m.cfg.TaskParallelism)
		var wg sync.WaitGroup
		for j := range deps {
			wg.Add(1)
			sem <- struct{}{}
			go func() { defer func() { <-sem; wg.Done() }(); get(j) }()
		}
		wg.Wait()
	}
	for j, err := range errs {
		if err != nil {
			return paths, errors.New(s.failure("reading the out of "+s.nodes[deps[j]].ref.Task, err))
		}
	}
	return paths, nil
}

// inputPath is where the plugin reads an upstream out: the object itself for a local store,
// else a copy downloaded to the spool (removed when the run ends).
func (s *scheduler) inputPath(ctx context.Context, p, key string) (string, error) {
	store := s.m.cfg.Store
	if lp, ok := store.(targets.LocalPather); ok {
		return lp.LocalPath(key)
	}
	rc, err := store.Get(ctx, key)
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

// connections are the values of the connections n declares; missing names the first one the
// server does not configure.
func (s *scheduler) connections(n *node) (conns map[string]string, missing string) {
	for _, name := range n.conns {
		v := ""
		if s.m.cfg.Connection != nil {
			v = s.m.cfg.Connection(name)
		}
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
func (s *scheduler) progressOf(p *plugins.TaskProgress) *Progress {
	pr := progressOf(p)
	if pr != nil && s.secrets {
		pr.Status = s.scrub.Replace(pr.Status)
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
func (s *scheduler) outputSize() int64 {
	fi, err := s.procOut.Stat()
	if err != nil {
		return 0
	}
	end := fi.Size()
	for {
		seen := s.outSeen.Load()
		if end <= seen || s.outSeen.CompareAndSwap(seen, end) {
			return end
		}
	}
}

// appendOutput copies what the plugin process printed since start into the task's log: the
// task's own prints when it ran alone, everyone's when tasks ran side by side (nothing is lost,
// though it may be shared). ending, if set, says why the task stopped.
func (s *scheduler) appendOutput(logPath string, start int64, ending string) {
	end := s.outputSize()
	if end <= start && ending == "" {
		return
	}
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		s.log.Warn("appending process output to a task log", "err", err)
		return
	}
	defer f.Close()
	if end > start {
		fmt.Fprintf(f, "--- stdout/stderr of the plugin process ---\n")
		if s.secrets { // scrubbed before anyone can read it live
			b, _ := io.ReadAll(io.NewSectionReader(s.procOut, start, end-start))
			io.WriteString(f, s.scrub.Replace(string(b)))
		} else {
			io.Copy(f, io.NewSectionReader(s.procOut, start, end-start))
		}
	}
	if ending != "" {
		fmt.Fprintf(f, "--- %s ---\n", ending)
	}
}

// pollProgress records what the tasks running in p reported of themselves (one call per
// process and monitor interval, however many tasks it runs).
func (s *scheduler) pollProgress(p Process, running map[string]int) {
	ctx, cancel := context.WithTimeout(context.Background(), s.m.cfg.MonitorInterval)
	defer cancel()
	resp, err := p.Progress(ctx, &plugins.ProgressRequest{})
	if err != nil {
		return // a plugin busy dying: its tasks' outcome says more
	}
	for _, tp := range resp.Tasks {
		if i, ok := running[tp.Key]; ok {
			tp := tp
			s.setTask(i, func(t *TaskState) { t.Progress = s.progressOf(&tp) })
		}
	}
}
