package runs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"nectar/chains"
	"nectar/plugins"
	"nectar/targets"
)

// scheduler drives one run's task graph: tasks whose out exists are skipped (and so is
// everything below them), the rest are handed to a lane (lane.go) in dependency order,
// independent ones side by side. The lane bounds the tasks executing at once
// (TaskParallelism); the scheduler keeps up to commitBacklog times as many in the lane's hands,
// so tasks committing their files do not hold the plugin up.
type scheduler struct {
	m        *Manager
	r        *Run
	log      *slog.Logger
	typ      string
	runID    string
	lane     *lane      // the direct path: tasks execute here
	remote   *remoteRun // the queue path: tasks go to workers
	runConns []string   // every connection the run's tasks declare

	rootAbsent bool   // the run looked for the root's out under its lease: none
	deadRun    string // the run of this key whose server died: its staged files go
	noSync     bool   // the lane syncs tasks' files in batches (commit.go)
	plain      bool   // the graph is the root alone, built from the catalog (plainGraph)
	// startWritten waits for the params and first record the run stores as it starts (drive):
	// the root's out is committed, and the record stored again, only after them. A failed
	// write is found by the root's commit at the latest; the outs of its requirements committed
	// meanwhile are good ones (their keys' own), and the next run finds them done.
	startWritten func() error
	halted       atomic.Bool
	nodes        []node
	deps         edges // each node's requirements (graph indices), in Requires order
	dependents   edges // the nodes requiring each
	// tasks is the run's list (the record's Tasks, the same array) once the walk made it. Its
	// tasks' names, parameters and keys never change after: read here without the run's lock.
	tasks []TaskState
}

// node is the scheduler's state of one task of the graph. The nodes are one slice (not a
// pointer each), and what a task declares of itself is shared by every node that declares the
// same; its names, parameters and key are its task's in the run's list (scheduler.tasks), and
// its edges are in the scheduler's two edge lists, not copies here: a fan-in of 5,000 leaves
// held 1.1 MB of nodes, then 0.7 MB, now 0.16 MB with their edges.
type node struct {
	decl    *taskDecl
	waiting int32 // unfinished deps
	slot    int32 // index in Record.Tasks (and scheduler.tasks); -1 until the walk reaches it
}

// edges are every node's neighbours of one kind in one array, node i's at at[off[i]:off[i+1]]:
// a slice per node was 24 bytes of header, and an array of its own, for each of thousands of
// leaves with one dependent.
type edges struct {
	off []int32
	at  []int32
}

// of is node i's neighbours.
func (e *edges) of(i int) []int32 {
	if i+1 >= len(e.off) {
		return nil
	}
	return e.at[e.off[i]:e.off[i+1]]
}

// linkNodes makes the graph's edges: each node's requirements, in Requires order, and its
// dependents, in graph order. An edge to no node of the graph is an error.
func linkNodes(graph *plugins.GraphResponse) (deps, dependents edges, err error) {
	n := len(graph.Nodes)
	deps.off = make([]int32, n+1)
	for i := range graph.Nodes {
		deps.off[i+1] = deps.off[i] + int32(len(graph.Nodes[i].Requires))
	}
	deps.at = make([]int32, deps.off[n])
	dependents.off = make([]int32, n+1)
	for i := range graph.Nodes {
		for k, d := range graph.Nodes[i].Requires {
			if d < 0 || d >= n {
				return edges{}, edges{}, fmt.Errorf("the plugin returned a bad task graph (dependency %d of %d)", d, i)
			}
			deps.at[int(deps.off[i])+k] = int32(d)
			dependents.off[d+1]++
		}
	}
	for i := range n {
		dependents.off[i+1] += dependents.off[i]
	}
	dependents.at = make([]int32, dependents.off[n])
	fill := slices.Clone(dependents.off[:n])
	for i := range graph.Nodes {
		for _, d := range graph.Nodes[i].Requires {
			dependents.at[fill[d]] = int32(i)
			fill[d]++
		}
	}
	return deps, dependents, nil
}

// taskDecl is what a task declares of itself (its graph node says), the same for every node
// of one task type unless its methods look at its parameters.
type taskDecl struct {
	timeout time.Duration      // 0 = server default
	retry   chains.RetryPolicy // zero = one attempt
	isolate bool               // chains.Isolated: a process per attempt
	metrics bool               // chains.MetricsDefiner
	queue   string             // chains.Queuer: the queue it names; empty: its type's
	conns   []string           // chains.Connector: the connections it may read
}

// declKey tells equal declarations apart (taskDecl holds a slice: not comparable).
type declKey struct {
	timeout          time.Duration
	retry            chains.RetryPolicy
	isolate, metrics bool
	queue, conns     string
}

// buildNodes makes the scheduler's nodes of graph, and its tasks' keys. It makes the chain and
// task names of graph's nodes shared too: each was a string of its own as the graph's JSON was
// decoded.
func buildNodes(typ string, graph *plugins.GraphResponse) ([]node, []string) {
	nodes := make([]node, len(graph.Nodes))
	keys := make([]string, len(graph.Nodes))
	decls := map[declKey]*taskDecl{}
	names := map[string]string{}
	intern := func(s string) string {
		if v, ok := names[s]; ok {
			return v
		}
		names[s] = s
		return s
	}
	for i := range graph.Nodes {
		g := &graph.Nodes[i]
		k := declKey{timeout: g.Timeout, isolate: g.Isolate, metrics: g.Metrics, queue: g.Queue}
		if g.Retry != nil {
			k.retry = *g.Retry
		}
		if len(g.Connections) > 0 {
			k.conns = strings.Join(g.Connections, "\x00")
		}
		d := decls[k]
		if d == nil {
			d = &taskDecl{timeout: k.timeout, retry: k.retry, isolate: k.isolate, metrics: k.metrics, queue: k.queue, conns: g.Connections}
			decls[k] = d
		}
		g.Chain, g.Task = intern(g.Chain), intern(g.Task)
		nodes[i] = node{decl: d, slot: -1}
		keys[i] = Key(typ, g.Chain, g.Task, g.Params)
	}
	return nodes, keys
}

// parallelStatsFrom is the graph size from which the local folder is asked about the outs
// level by level, one asker per CPU, before the walk (scheduler.run). A variable: tests
// lower it to take that path with small graphs.
var parallelStatsFrom = 256

// commitBacklog is how many tasks per execution slot a run holds at once (see scheduler).
const commitBacklog = 4

func (s *scheduler) run(ctx context.Context, graph *plugins.GraphResponse) (Status, string) {
	if len(graph.Nodes) == 0 {
		return Failed, "the plugin returned an empty task graph"
	}
	var err error
	if s.deps, s.dependents, err = linkNodes(graph); err != nil {
		return Failed, err.Error()
	}
	var keys []string // the tasks' keys, until the walk puts them in the run's list
	s.nodes, keys = buildNodes(s.typ, graph)

	// A remote store answers in milliseconds, not microseconds: ask about every out at once,
	// TaskParallelism at a time. On the local folder each answer is a stat of a few
	// microseconds, but a big graph's stats, one after the other, held its first task back
	// (50 ms for 5,000 leaves): one asker per CPU, level by level from the root, so that
	// exactly the outs the walk looks at are asked about (none under a task whose out exists).
	var known []bool
	var logs []outLog // (on a store whose outs say whether a log goes with them)
	_, local := s.m.cfg.Store.(targets.LocalPather)
	if !local || len(s.nodes) >= parallelStatsFrom {
		if local {
			known, logs, err = s.outsExist(ctx, keys, runtime.GOMAXPROCS(0), true)
		} else {
			known, logs, err = s.outsExist(ctx, keys, s.m.cfg.TaskParallelism, false)
		}
		if err != nil {
			return Failed, s.failure("looking for the outs of the task graph", err)
		}
	}

	// Walk from the root; a task whose out exists is done and its own requirements are not needed.
	tasks := make([]TaskState, 0, len(s.nodes)) // grown by append, a big graph left 1.5 MB of garbage
	var ready []int
	var unsure []int // the cached tasks whose log is to be looked for (lookForLogs)
	var walk func(i int) error
	walk = func(i int) (err error) {
		n := &s.nodes[i]
		if n.slot >= 0 {
			return nil
		}
		var done bool
		switch {
		case known != nil:
			done = known[i]
		case i == 0 && s.rootAbsent:
		default:
			if done, err = targets.Exists(ctx, s.m.cfg.Store, keys[i]+"/"+OutName); err != nil {
				return err
			}
		}
		if i == 0 && s.r.force {
			done = false // ?force=true: rerun the named task; its upstream outs are kept
		}
		n.slot = int32(len(tasks))
		ref := &graph.Nodes[i].TaskRef
		st := TaskState{Chain: ref.Chain, Task: ref.Task, Key: keys[i], Params: ref.Params, Status: Pending}
		if s.remote != nil {
			st.Queue = n.decl.queue // where it waits for a worker
		}
		if done {
			st.Status, st.Cached = Done, true
			switch {
			case logs == nil || logs[i] == outLogUnknown:
				unsure = append(unsure, int(n.slot))
			case logs[i] == outLogNone:
				st.LogEmpty = true
			}
		}
		tasks = append(tasks, st)
		if done {
			return nil
		}
		for _, d := range s.deps.of(i) {
			if err := walk(int(d)); err != nil {
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
	for i, n := range s.nodes {
		if n.slot < 0 || tasks[n.slot].Cached {
			continue
		}
		deps := s.deps.of(i)
		if len(deps) == 0 {
			continue
		}
		req := make([]int, len(deps))
		for k, d := range deps {
			req[k] = int(s.nodes[d].slot)
		}
		tasks[n.slot].Requires = req
	}
	if err := s.lookForLogs(ctx, tasks, unsure); err != nil {
		return Failed, s.failure("looking for the logs of the tasks already done", err)
	}
	s.tasks = tasks
	s.r.update(func(rec *Record) { rec.Tasks = tasks })
	stopRecorder := s.startRecorder()
	defer stopRecorder()

	toRun := 0
	for _, t := range tasks {
		if !t.Cached {
			toRun++
		}
	}
	// Many tasks: the lane makes their files durable in batches; a few: each plugin syncs its
	// own out (commit.go). A remote store's PUT is the durable write.
	_, folders := s.m.cfg.Store.(targets.Folders)
	s.noSync = !folders || toRun >= batchSyncFrom

	if s.remote != nil {
		stop := make(chan struct{})
		defer close(stop)
		go s.watchCancel(ctx, stop)
	}
	results := make(chan taskResult)
	running := 0
	var firstErr string
	stopped := false
	for len(ready) > 0 || running > 0 {
		for !stopped && running < commitBacklog*s.m.cfg.TaskParallelism && len(ready) > 0 {
			i := ready[0]
			ready = ready[1:]
			running++
			go func() {
				growStack()
				results <- s.dispatch(ctx, i)
			}()
		}
		if stopped {
			ready = nil
		}
		if running == 0 {
			break
		}
		res := <-results
		running--
		n := &s.nodes[res.idx]
		if res.notStarted {
			continue
		}
		if res.err == "" {
			s.setTask(res.idx, func(t *TaskState) {
				t.Status, t.FinishedAt, t.LogEmpty, t.LogNotStored = Done, timePtr(time.Now().UTC()), res.logEmpty, false
				if len(res.artifacts) > 0 {
					t.Artifacts = res.artifacts
				}
			})
			for _, d := range s.dependents.of(res.idx) {
				dn := &s.nodes[d]
				if dn.slot < 0 || s.status(int(d)) != Pending {
					continue
				}
				if dn.waiting--; dn.waiting == 0 {
					ready = append(ready, int(d))
				}
			}
			continue
		}
		status := Failed
		if ctx.Err() != nil {
			status = Cancelled
		}
		s.setTask(res.idx, func(t *TaskState) {
			t.Status, t.Error, t.FinishedAt = status, res.err, timePtr(time.Now().UTC())
			// A result with no attempts of its own (a worker of an older version that failed
			// before executing says nothing of its log) keeps what a lost attempt said.
			t.LogNotStored = res.noLog || len(res.attempts) == 0 && t.LogNotStored
		})
		if firstErr == "" {
			firstErr = fmt.Sprintf("%s failed: %s", s.tasks[n.slot].Task, res.err)
		}
		if status == Failed { // a cancelled run's tasks not started end CANCELLED, below
			s.markUpstreamFailed(res.idx)
		}
		if res.fatal || ctx.Err() != nil {
			stopped = true
			s.halt()
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
		switch st := s.status(i); {
		case st == Pending: // (one handed back, or sent again, may have had attempts: no log of them)
			s.setTask(i, func(t *TaskState) { t.Status, t.Error, t.LogNotStored = Cancelled, "not started: "+firstErr, true })
		case !st.Final(): // a worker had it, and the run ended without its result
			s.setTask(i, func(t *TaskState) {
				closeLostAttempt(t, "the run ended first")
				t.Status, t.Error = Cancelled, "not finished: "+firstErr
			})
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
		if s.startWritten != nil {
			s.startWritten() // an older record must not land last; a failure fails the run (drive)
		}
		for {
			if s.r.leaseLost.Load() { // the key is another server's: so is its record
				return
			}
			if v := s.r.version(); v != written {
				start := time.Now()
				if _, err := s.m.putRecord(context.Background(), s.r); err != nil {
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

// outsExist asks the store, askers at a time, which tasks of the graph have an out: all of
// them at once, or byLevel, the root first, then the requirements of each task whose out is
// missing (or that ?force reruns), as the walk in run goes.
func (s *scheduler) outsExist(ctx context.Context, keys []string, askers int, byLevel bool) (known []bool, logs []outLog, err error) {
	known = make([]bool, len(s.nodes))
	if _, marks := s.m.cfg.Store.(targets.MetaCommitter); marks {
		logs = make([]outLog, len(s.nodes))
	}
	ask := func(level []int) error {
		return sideBySide(askers, len(level), func(k int) error {
			i := level[k]
			if i == 0 && s.rootAbsent {
				return nil
			}
			info, err := s.m.cfg.Store.Stat(ctx, keys[i]+"/"+OutName)
			switch {
			case errors.Is(err, targets.ErrNotExist):
				return nil
			case err != nil:
				return err
			}
			known[i] = true
			if logs != nil { // what the out says of its log: lookForLogs need not ask
				if logged, ok := logOfOut(info); ok {
					logs[i] = outLogNone
					if logged {
						logs[i] = outLogStored
					}
				}
			}
			return nil
		})
	}
	if !byLevel {
		all := make([]int, len(s.nodes))
		for i := range all {
			all[i] = i
		}
		if err := ask(all); err != nil {
			return nil, nil, err
		}
		return known, logs, nil
	}
	asked := make([]bool, len(s.nodes))
	asked[0] = true
	for level := []int{0}; len(level) > 0; {
		if err := ask(level); err != nil {
			return nil, nil, err
		}
		var next []int
		for _, i := range level {
			if known[i] && (i != 0 || !s.r.force) {
				continue // done: what it requires is not needed
			}
			for _, d := range s.deps.of(i) { // (linkNodes checked them)
				if !asked[d] {
					asked[d] = true
					next = append(next, int(d))
				}
			}
		}
		level = next
	}
	return known, logs, nil
}

// outLog is what a found out's metadata says of its log (outlog.go).
type outLog uint8

const (
	outLogUnknown outLog = iota // not said (no metadata): lookForLogs asks
	outLogStored
	outLogNone
)

// lookForLogs marks the cached tasks (of slots cached) whose log is not stored (LogEmpty): a
// task that wrote no log stores none (commitDone), and no answer may sign a URL to it. Side by
// side, as outsExist asks: one stat each on the local folder, a round trip each on S3 for the
// outs whose metadata did not say (outlog.go).
func (s *scheduler) lookForLogs(ctx context.Context, tasks []TaskState, cached []int) error {
	if len(cached) == 0 {
		return nil
	}
	askers := s.m.cfg.TaskParallelism
	if _, local := s.m.cfg.Store.(targets.LocalPather); local {
		askers = runtime.GOMAXPROCS(0)
	}
	return sideBySide(askers, len(cached), func(k int) error {
		t := &tasks[cached[k]]
		found, err := targets.Exists(ctx, s.m.cfg.Store, t.Key+"/"+LogName)
		t.LogEmpty = !found
		return err
	})
}

// sideBySide calls ask(0..n-1), askers at a time, and returns the first error. The first
// failure ends the asking: a store that does not answer would otherwise cost each of
// thousands of tasks its own timeout.
func sideBySide(askers, n int, ask func(k int) error) error {
	var first atomic.Pointer[error]
	var next atomic.Int64
	var wg sync.WaitGroup
	for range max(1, min(askers, n)) {
		wg.Go(func() {
			for k := int(next.Add(1) - 1); k < n && first.Load() == nil; k = int(next.Add(1) - 1) {
				if err := ask(k); err != nil {
					first.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	wg.Wait()
	if err := first.Load(); err != nil {
		return *err
	}
	return nil
}

func (s *scheduler) status(i int) Status {
	slot := s.nodes[i].slot
	s.r.mu.Lock() // a read: no new version, nothing to report
	defer s.r.mu.Unlock()
	return s.r.rec.Tasks[slot].Status
}

func (s *scheduler) setTask(i int, f func(*TaskState)) {
	slot := s.nodes[i].slot
	s.r.update(func(rec *Record) { f(&rec.Tasks[slot]) })
}

// markUpstreamFailed marks every pending task that depends on i, transitively.
func (s *scheduler) markUpstreamFailed(i int) {
	for _, d := range s.dependents.of(i) {
		if s.nodes[d].slot < 0 || s.status(int(d)) != Pending {
			continue
		}
		cause := s.tasks[s.nodes[i].slot].Task
		s.setTask(int(d), func(t *TaskState) { t.Status, t.Error = UpstreamFailed, "requires "+cause+", which did not finish" })
		s.markUpstreamFailed(int(d))
	}
}

// dispatch hands task i to the lane and waits for its end.
func (s *scheduler) dispatch(ctx context.Context, i int) taskResult {
	d, t := s.nodes[i].decl, &s.tasks[s.nodes[i].slot]
	job := &taskJob{Run: s.runID, Type: s.typ, Index: i, Ref: plugins.TaskRef{Chain: t.Chain, Task: t.Task, Params: t.Params},
		Key: t.Key, Timeout: d.timeout, Retry: d.retry,
		Isolate: d.isolate, Metrics: d.metrics, Conns: d.conns, Queue: d.queue, NoSync: s.noSync, DeadRun: s.deadRun,
		FolderMade: i == 0, // the root's folder was made by the run's lease
		Plain:      s.plain}
	if i == 0 {
		job.beforeCommit = s.startWritten
	}
	if deps := s.deps.of(i); len(deps) > 0 {
		job.Inputs = make([]string, len(deps))
		for k, d := range deps {
			job.Inputs[k] = s.tasks[s.nodes[d].slot].Key
		}
	}
	if s.remote != nil {
		return s.dispatchQueued(ctx, job)
	}
	s.lane.tasks.Add(1)
	return s.lane.execute(ctx, job)
}

// halt stops the tasks in hand that have not started executing.
func (s *scheduler) halt() {
	s.halted.Store(true)
	if s.remote == nil {
		s.lane.halt()
		return
	}
	s.control("halt", "")
	go func() { // and those not taken yet
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.m.cfg.Queue.PurgeRun(ctx, s.runID); err != nil {
			s.log.Warn("dropping the queued tasks of a halted run", "err", err)
			return
		}
		s.remote.finishUntaken()
	}()
}

// apply records what a lane reports of task i.
func (s *scheduler) apply(u taskUpdate) {
	s.setTask(u.Index, func(t *TaskState) {
		if u.Started != nil && !t.Status.Final() {
			t.Status, t.StartedAt = Running, u.Started
		}
		if a := u.Attempt; a != nil {
			if k := len(t.Attempts); k > 0 && t.Attempts[k-1].Number == a.Number {
				t.Attempts[k-1] = *a
			} else {
				t.Attempts = append(t.Attempts, *a)
			}
		}
		if u.Progress != nil {
			t.Progress = u.Progress
		}
	})
}

// failure is Manager.failure for this run.
func (s *scheduler) failure(doing string, err error) string {
	return s.m.failure(s.log, s.r, doing, err)
}

// connectionNames are every connection the tasks of graph declare.
func connectionNames(graph *plugins.GraphResponse) []string {
	if graph == nil {
		return nil
	}
	seen := map[string]bool{}
	var names []string
	for _, n := range graph.Nodes {
		for _, c := range n.Connections {
			if !seen[c] {
				seen[c] = true
				names = append(names, c)
			}
		}
	}
	return names
}
