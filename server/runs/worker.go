package runs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/shirou/gopsutil/v4/process"

	"nectar/plugins"
	"nectar/server/queue"
	"nectar/targets"
)

// A Worker takes tasks from the queue and executes them in lanes (lane.go), one per run, with
// the plugin processes of the manager's pool; it answers graph requests for the chain types it
// has plugins for, and follows run controls. `nectar serve` runs one in its own process by
// default; `nectar worker` runs one alone.
type Worker struct {
	m    *Manager
	q    *queue.Queue
	id   string
	cfg  WorkerConfig
	log  *slog.Logger
	ctx  context.Context
	stop context.CancelFunc
	done chan struct{}
	// logSub answers for the live logs of this worker's tasks (remotelog.go).
	logSub *nats.Subscription

	mu      sync.Mutex
	lanes   map[string]*workerLane // by run id
	laneSeq int
	stopped map[string]time.Time // runs cancelled or halted lately: their late tasks do not start
	// abandoned are runs whose driver died (another run took the key over): their tasks'
	// ends go nowhere.
	abandoned map[string]time.Time
	bg        sync.WaitGroup // processes being stopped, and lanes being ended, in the background
	closing   bool           // Stop has begun to end the lanes: nothing more goes to bg but kills
	// handingBack is the cause lanes end with once the worker's grace ran out (handBack).
	handingBack error
	// reserved are the processes that built a run's graph here, kept a moment for the run's
	// first task (warm, and no second trip to the pool) in case it comes to this worker.
	reserved map[string]*spare
	subs     []*nats.Subscription
	graphs   []*nats.Subscription // graph requests: a draining worker answers none

	// The worker monitor (workerinfo.go).
	registry               *queue.Registry
	version                string
	started                time.Time
	state                  string // WorkerRunning, ... (guarded by mu)
	doneTasks, failedTasks atomic.Int64
	self                   *process.Process
	beatMu                 sync.Mutex
	lastCPU                float64   // guarded by beatMu
	lastBeat               time.Time // guarded by beatMu
	beatStop, beatDone     chan struct{}
	stopBeat               sync.Once
	reapCtx                context.Context // reapLanes: until Stop (a drain does not end it)
	stopReap               context.CancelFunc

	// Tasks its own process's driver handed over by a call (Manager.takerHere): how many are
	// in hand, whether it still takes them (guarded by mu), and their ends, which Stop waits for.
	hereInHand int
	hereClosed bool
	hereTasks  sync.WaitGroup
}

// WorkerConfig sets up a worker.
type WorkerConfig struct {
	Queues []string // the queues it takes tasks from
	Types  []string // the chain types whose graphs it answers for (it has their plugins)
	Slots  int      // task messages in its hands at once (each a batch of a run's tasks)
	// Processes is how many plugin processes it holds, busy or not, before it frees an idle
	// one for each it takes (workerprocs.go); when all are busy it starts more. Default Slots.
	Processes int
	// Heartbeat is how often it writes its entry in the workers bucket (default 5s).
	Heartbeat time.Duration
}

// workerLane is a run's lane on this worker, with what it reports to the run's driver.
type workerLane struct {
	*lane
	id       string // <worker>/<n>: the run's usage sums its lanes
	ctx      context.Context
	cancel   context.CancelCauseFunc // the run's: a cancel, a halt, its end
	handBack context.CancelCauseFunc // the lane's alone: the worker hands its tasks back
	driver   string
	inHand   int       // tasks taken and not yet reported (guarded by Worker.mu)
	idle     time.Time // when inHand last went to 0 (guarded by Worker.mu)
	samples  int       // samples already sent to the driver (guarded by sendMu)
	sentCPU  float64   // the CPU figure sent last (guarded by sendMu)
	sendMu   sync.Mutex
	stopSend chan struct{}
}

// deliverPatience bounds the tries to hand a task's end to its driver through a failover.
const deliverPatience = time.Minute

// laneIdleTTL is how long a lane whose driver said nothing waits, idle, before it ends on its
// own (its driver died, or lost the run to another server).
const laneIdleTTL = 2 * time.Minute

// StartWorker starts taking tasks of cfg.Queues from q.
func (m *Manager) StartWorker(q *queue.Queue, cfg WorkerConfig) (*Worker, error) {
	if cfg.Slots < 1 {
		cfg.Slots = 1
	}
	if cfg.Processes < 1 {
		cfg.Processes = cfg.Slots
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 5 * time.Second
	}
	for _, name := range cfg.Queues {
		if err := queue.CheckName(name); err != nil {
			return nil, err
		}
	}
	// Its own context: a server shutting down first lets its runs end, which needs the workers.
	ctx, stop := context.WithCancel(context.Background())
	w := &Worker{m: m, q: q, id: m.workerID(), cfg: cfg, ctx: ctx, stop: stop, done: make(chan struct{}),
		lanes: map[string]*workerLane{}, stopped: map[string]time.Time{}, abandoned: map[string]time.Time{}, reserved: map[string]*spare{},
		state: WorkerRunning, beatStop: make(chan struct{}), beatDone: make(chan struct{})}
	w.reapCtx, w.stopReap = context.WithCancel(context.Background())
	w.log = m.cfg.Logger.With("worker", w.id)
	nc := q.Conn()
	sub, err := nc.Subscribe(controlSubject, w.onControl)
	if err != nil {
		stop()
		return nil, err
	}
	w.subs = append(w.subs, sub)
	if sub, err = nc.Subscribe(workerEndSubject(w.id), w.onEnd); err != nil {
		w.unsubscribe()
		stop()
		return nil, err
	}
	w.subs = append(w.subs, sub)
	if sub, err = nc.Subscribe(workerDrainSubject(w.id), w.onDrain); err != nil {
		w.unsubscribe()
		stop()
		return nil, err
	}
	w.subs = append(w.subs, sub)
	for _, typ := range cfg.Types {
		sub, err := nc.QueueSubscribe(graphSubjectPrefix+typ, workerGroup, func(msg *nats.Msg) { go w.onGraph(typ, msg) })
		if err != nil {
			w.unsubscribe()
			stop()
			return nil, err
		}
		w.graphs = append(w.graphs, sub)
	}
	// Live logs are asked for until the last task in hand ends (Stop unsubscribes it last).
	if w.logSub, err = nc.Subscribe(workerLogSubject(w.id), w.onLogRequest); err != nil {
		w.unsubscribe()
		stop()
		return nil, err
	}
	// The subscriptions above are in place before any server hears of this worker.
	if err := nc.Flush(); err != nil {
		w.unsubscribe()
		w.logSub.Unsubscribe()
		stop()
		return nil, err
	}
	if err := w.openRegistry(ctx); err != nil {
		w.unsubscribe()
		w.logSub.Unsubscribe()
		stop()
		close(w.beatDone)
		return nil, err
	}
	go func() {
		defer close(w.done)
		go w.reapLanes(w.reapCtx) // a drained worker still ends the lanes left idle
		if err := q.Consume(ctx, cfg.Queues, cfg.Slots, func(d *queue.Delivery) { w.handle(ctx, d) }); err != nil {
			w.log.Error("worker: the task queue failed; this worker takes no more tasks", "err", err)
			w.beat(context.Background(), WorkerStopped)
		}
	}()
	m.mu.Lock()
	m.workers = append(m.workers, w)
	m.mu.Unlock()
	w.log.Info("worker started", "queues", cfg.Queues, "slots", cfg.Slots)
	return w, nil
}

// workerID names this worker in records and subjects: <host>-<pid>-<random>.
func (m *Manager) workerID() string {
	return fmt.Sprintf("%s-%d-%s", subjectToken(m.host), os.Getpid(), randomID()[:8])
}

// subjectToken makes s usable inside one NATS subject token.
func subjectToken(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	return string(b)
}

// ID is the worker's id, as task records name it.
func (w *Worker) ID() string { return w.id }

func (w *Worker) unsubscribe() {
	for _, s := range w.subs {
		s.Unsubscribe()
	}
	w.unsubscribeGraphs()
}

// drainSubscriptions ends the control, end and drain subscriptions once the requests already
// on their way are handled: a driver that asks this worker to end a run's lane as it stops
// gets its answer, not its request's timeout (2 s that the run's end would wait). Bounded: a
// handler that does not return does not keep the worker from stopping.
func (w *Worker) drainSubscriptions() {
	var closed []<-chan nats.SubStatus
	for _, s := range w.subs {
		ch := s.StatusChanged(nats.SubscriptionClosed)
		if s.Drain() == nil {
			closed = append(closed, ch)
		}
	}
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for _, ch := range closed {
		select {
		case <-ch:
		case <-deadline.C:
			w.unsubscribe()
			return
		}
	}
	w.unsubscribeGraphs()
}

// unsubscribeGraphs stops answering graph requests.
func (w *Worker) unsubscribeGraphs() {
	w.mu.Lock()
	graphs := w.graphs
	w.graphs = nil
	w.mu.Unlock()
	for _, s := range graphs {
		s.Unsubscribe()
	}
}

// NoGrace is the grace of a Stop that waits for the tasks in hand however long they take.
const NoGrace time.Duration = -1

// errHandedBack is the cause a lane's context ends with when its worker stops before the
// lane's tasks finish: they go back to their driver as not started, to be queued again.
var errHandedBack = errors.New("handed back")

// Stop takes no more tasks, gives those in hand grace to finish (NoGrace: as long as they
// take), hands back the rest (handBack), and ends every lane.
func (w *Worker) Stop(grace time.Duration) {
	w.m.mu.Lock()
	for i, o := range w.m.workers {
		if o == w {
			w.m.workers = append(w.m.workers[:i], w.m.workers[i+1:]...)
			break
		}
	}
	w.m.mu.Unlock()
	w.mu.Lock()
	w.hereClosed = true // no task handed over by a call from now on: hereTasks' Wait follows
	w.mu.Unlock()
	w.beat(context.Background(), WorkerDraining) // it finishes what it holds, then stops
	// No new graph or task; cancels, halts and ends still reach the tasks in hand until they
	// have finished (a cancelled task is finished sooner).
	w.unsubscribeGraphs()
	w.stop()
	finished := make(chan struct{}) // the queue's tasks and those handed over by a call
	go func() { <-w.done; w.hereTasks.Wait(); close(finished) }()
	if grace < 0 {
		<-finished
	} else {
		t := time.NewTimer(grace)
		select {
		case <-finished:
		case <-t.C:
			w.handBack(grace)
			<-finished
		}
		t.Stop()
	}
	w.drainSubscriptions()
	w.mu.Lock()
	w.closing = true // ends asked for from now on find no lane; those asked before are waited for below
	lanes, reserved := w.lanes, w.reserved
	w.lanes, w.reserved = map[string]*workerLane{}, map[string]*spare{}
	w.mu.Unlock()
	for _, sp := range reserved {
		sp.discard()
	}
	for run, wl := range lanes {
		lm := w.endLane(run, wl, false)
		w.toDriver(wl.driver, &driverMsg{Run: run, Worker: w.id, Lane: wl.id, Metrics: lm})
	}
	w.bg.Wait()
	w.logSub.Unsubscribe()
	w.stopReap()
	w.stopBeat.Do(func() { close(w.beatStop) })
	<-w.beatDone
	w.beat(context.Background(), WorkerStopped)
}

// handBack stops the tasks in hand when the worker's grace ran out: the processes of those
// executing are killed and each goes back to its run's server as not started (runJob), which
// queues it again at once (not after NECTAR_TASK_ACK_WAIT) for another worker, while this one
// exits. A task whose code has returned still commits (commitContext): its work is done. A
// lane made from now on starts cut short too.
func (w *Worker) handBack(grace time.Duration) {
	cause := fmt.Errorf("worker %s stopped before the task finished (its grace, NECTAR_WORKER_GRACE=%s, ran out): %w", w.id, grace, errHandedBack)
	w.mu.Lock()
	w.handingBack = cause
	inHand := 0
	for _, wl := range w.lanes {
		inHand += wl.inHand
		wl.handBack(cause)
	}
	w.mu.Unlock()
	if inHand > 0 {
		w.log.Warn("worker: tasks in hand did not finish within the grace; their processes are killed and the tasks handed back to their runs' servers, which queue them again", "grace", grace, "tasks", inHand)
	}
}

// handedBack reports whether ctx (a lane's) ended because its worker handed its tasks back.
func handedBack(ctx context.Context) bool { return errors.Is(context.Cause(ctx), errHandedBack) }

// runContextKey finds, in a worker lane's context, its run's: the one a cancel, a halt or
// the run's end stops, which a hand-back does not.
type runContextKey struct{}

// commitContext is ctx for a task's commit: its run's context where ctx is a worker lane's, so
// a hand-back does not cut the commit (the task's code has returned, and its files go to the
// store whole before its worker lets go), while a cancel of the run still does.
func commitContext(ctx context.Context) context.Context {
	if run, ok := ctx.Value(runContextKey{}).(context.Context); ok {
		return run
	}
	return ctx
}

// goBackground counts a goroutine that ends a lane in bg, which Stop waits for, unless Stop
// is past that point (it ends every lane itself): then it reports false.
func (w *Worker) goBackground() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closing {
		return false
	}
	w.bg.Add(1)
	return true
}

// handle executes the tasks of one message side by side in their run's lane, with in-progress
// acks until the driver has every result, then acks it.
func (w *Worker) handle(ctx context.Context, d *queue.Delivery) {
	if ctx.Err() != nil { // stopping: fetched, not started; another worker takes it now
		d.Release()
		return
	}
	var msg jobMsg
	err := msg.decode(d.Data)
	if err == nil && len(msg.Jobs) == 0 && len(msg.Graph) == 0 {
		w.log.Error("worker: a task message with no task; dropped", "queue", d.Queue, "seq", d.Seq)
		d.Ack()
		return
	}
	if err != nil {
		// Another version's message, say: another worker may read it; if none can, its
		// delivery limit fails its tasks (and their run) rather than leaving it waiting.
		w.log.Error("worker: a task message this worker cannot read; handed back", "queue", d.Queue, "seq", d.Seq, "err", err)
		d.Release()
		return
	}
	beat := make(chan struct{})
	defer close(beat)
	go func() { // not redelivered while it runs, however long, nor while its results travel
		t := time.NewTicker(w.q.AckWait() / 3)
		defer t.Stop()
		for {
			select {
			case <-beat:
				return
			case <-t.C:
				d.InProgress()
			}
		}
	}()
	if len(msg.Graph) > 0 { // a run's graph, asked for while no worker of its type listened
		w.answerGraph(d.Queue, msg.Driver, msg.Graph)
		d.Ack()
		return
	}
	for k := range msg.Jobs {
		msg.Jobs[k].Delivery, msg.Jobs[k].Seq = d.Attempt, d.Seq
	}
	if d.Attempt > 1 && len(msg.Jobs) > 1 {
		w.splitLost(&msg)
		d.Ack()
		return
	}
	msg.each(func(job *taskJob) { w.runJob(ctx, &msg, job) })
	d.Ack() // every task's end is with its driver
}

// takeHere reserves room for a task of queueName that this process's driver hands over by a
// call, if the worker takes that queue's tasks and, for limit above 0, holds fewer than limit
// such tasks. runHere must follow a true.
func (w *Worker) takeHere(queueName string, limit int) bool {
	if !slices.Contains(w.cfg.Queues, queueName) {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.hereClosed || w.state != WorkerRunning || limit > 0 && w.hereInHand >= limit {
		return false
	}
	w.hereInHand++
	w.hereTasks.Add(1)
	return true
}

// HeldByCall is how many tasks handed over by a call the worker holds now.
func (w *Worker) HeldByCall() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.hereInHand
}

// runHere executes the one task of msg, handed over by this process's driver after takeHere,
// as if delivered once by the queue, and reports its end to the driver (by a call) before it
// returns. runCtx is the run's, in the driver: its cancel reaches the task directly, not only
// through the control message every worker gets.
func (w *Worker) runHere(runCtx context.Context, msg *jobMsg) {
	defer func() {
		w.mu.Lock()
		w.hereInHand--
		w.mu.Unlock()
		w.hereTasks.Done()
	}()
	job := &msg.Jobs[0]
	job.Delivery, job.Seq = 1, 0
	stop := context.AfterFunc(runCtx, func() {
		w.control(controlMsg{Run: job.Run, Action: "cancel", Reason: cancelReason(runCtx)})
	})
	defer stop()
	w.runJob(w.ctx, msg, job)
}

// report hands the end of job to its driver; nobody waits for the ends of an abandoned run.
func (w *Worker) report(msg *jobMsg, job *taskJob, res taskResult) {
	if !w.isAbandoned(msg.run()) {
		r := resultOf(res)
		r.Seq = job.Seq
		w.toDriver(msg.Driver, &driverMsg{Run: msg.run(), Worker: w.id, Result: r})
	}
}

// took tells job's driver that this worker has it (found: its out was already committed).
func (w *Worker) took(msg *jobMsg, job *taskJob, found bool) {
	w.toDriver(msg.Driver, &driverMsg{Run: job.Run, Worker: w.id, Update: &taskUpdate{Index: job.Index, Delivery: job.Delivery, Seq: job.Seq, Worker: w.id, Found: found}})
}

// runJob executes one task of a message and reports its end.
func (w *Worker) runJob(ctx context.Context, msg *jobMsg, job *taskJob) {
	if job.Delivery > 1 {
		if out, found := w.outExists(ctx, job); found {
			// A worker before this one committed it and died before its ack: done, once.
			w.took(msg, job, true)
			w.report(msg, job, foundDone(ctx, w.m.cfg.Store, job.Index, job.Key, out))
			return
		}
	}
	wl, stopped := w.laneFor(msg)
	if stopped { // the run was cancelled or halted: the driver counts it as not started
		w.report(msg, job, taskResult{idx: job.Index, notStarted: true})
		return
	}
	w.took(msg, job, false)
	res := wl.execute(wl.ctx, job)
	if handedBack(wl.ctx) && (res.err != "" || res.notStarted) {
		// Cut short as the worker's grace ran out, or ended some other way meanwhile: when
		// in doubt it goes back (a real failure comes again on the next worker). Not started,
		// as far as the run goes: its driver queues it again at once for another worker, and
		// the attempt cut short stays in its record, with why; unless the run was cancelled
		// or halted here meanwhile, which sends nothing again.
		back := taskResult{idx: job.Index, notStarted: true, attempts: res.attempts}
		if !w.isStopped(msg.run()) {
			back.err = context.Cause(wl.ctx).Error()
		}
		res = back
	}
	switch {
	case res.err == "" && !res.notStarted:
		w.doneTasks.Add(1)
	case res.err != "" && !res.notStarted:
		w.failedTasks.Add(1)
	}
	w.report(msg, job, res)
	w.mu.Lock()
	if wl.inHand--; wl.inHand == 0 {
		wl.idle = time.Now()
	}
	w.mu.Unlock()
}

// isStopped reports whether run was cancelled or halted here.
func (w *Worker) isStopped(run string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.stopped[run]
	return ok
}

// splitLost handles a message of several tasks that comes again (its worker was lost, or
// stopped and handed it back): the tasks committed are reported done, and the others go back
// to the driver, which sends each again in a message of its own. One of them may be what
// killed the worker: it then takes none of these down again. The store is asked with a
// context of its own (this worker may be stopping: a committed task must not pass for not
// started), and the tasks are reported side by side (a driver that is gone costs one wait).
func (w *Worker) splitLost(msg *jobMsg) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	msg.each(func(job *taskJob) {
		out, found := w.outExists(ctx, job)
		w.took(msg, job, found)
		if found {
			w.report(msg, job, foundDone(ctx, w.m.cfg.Store, job.Index, job.Key, out))
		} else {
			w.report(msg, job, taskResult{idx: job.Index, notStarted: true, err: "its batch's worker stopped or was lost"})
		}
	})
}

// foundDone is the result of task idx (at key) whose out, described by out, another execution
// committed: it stored no log if it wrote none, and no answer may link one (if the store
// cannot say, none is linked).
func foundDone(ctx context.Context, store targets.Store, idx int, key string, out targets.Info) taskResult {
	logged, err := hasLog(ctx, store, key, out)
	return taskResult{idx: idx, logEmpty: err != nil || !logged}
}

// outExists reports whether job's out is in the store, and what the store says of it.
func (w *Worker) outExists(ctx context.Context, job *taskJob) (targets.Info, bool) {
	out, err := w.m.cfg.Store.Stat(ctx, job.Key+"/"+OutName)
	return out, err == nil
}

// laneFor is the lane of msg's run on this worker, made at its first task, with the task
// added to it; stopped (and no lane) if the run was cancelled or halted.
func (w *Worker) laneFor(msg *jobMsg) (_ *workerLane, stopped bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	run := msg.run()
	if _, ok := w.stopped[run]; ok {
		return nil, true
	}
	wl, ok := w.lanes[run]
	if !ok {
		// Not the worker's context: a worker that stops lets the tasks in hand finish. The
		// run's context (cancel, halt, the run's end) holds the lane's, which a hand-back ends.
		runCtx, cancel := context.WithCancelCause(context.Background())
		ctx, handBack := context.WithCancelCause(context.WithValue(runCtx, runContextKey{}, runCtx))
		if w.handingBack != nil { // taken as the worker's grace ran out: it starts nothing
			handBack(w.handingBack)
		}
		w.laneSeq++
		wl = &workerLane{ctx: ctx, cancel: cancel, handBack: handBack, driver: msg.Driver, stopSend: make(chan struct{}), id: fmt.Sprintf("%s/%d", w.id, w.laneSeq)}
		log := w.log.With("run_id", run)
		report := func(u taskUpdate) {
			u.Worker = w.id
			w.toDriver(msg.Driver, &driverMsg{Run: run, Worker: w.id, Update: &u})
		}
		wl.lane = w.m.newLane(laneConfig{runID: run, typ: msg.Jobs[0].Type, parallelism: msg.Parallelism, runConns: msg.RunConns,
			log: log, failure: func(doing string, err error) string { return w.m.failureSentence(log, run, doing, err) },
			report: report, meter: newMeter(w.m.cfg.MonitorInterval, w.m.cfg.Pricing), bg: &w.bg}, nil, nil, 0)
		wl.lane.makeRoom = func() { w.makeRoom(wl.lane.typ, wl.lane) }
		if sp := w.reserved[run]; sp != nil { // the process that built the graph
			delete(w.reserved, run)
			wl.lane.procOut = sp.out
			wl.lane.adopt(sp.proc, sp.cpu0)
			wl.lane.proc = sp.proc
		}
		w.lanes[run] = wl
		go w.sendMetrics(run, wl)
	}
	wl.inHand++
	wl.lane.tasks.Add(1) // under w.mu, while the lane is in the map: before any end's Wait
	return wl, false
}

// sendMetrics reports the lane's usage to its driver every monitor interval.
func (w *Worker) sendMetrics(run string, wl *workerLane) {
	t := time.NewTicker(w.m.cfg.MonitorInterval)
	defer t.Stop()
	for {
		select {
		case <-wl.stopSend:
			return
		case <-t.C:
			w.flushMetrics(run, wl)
		}
	}
}

// flushMetrics sends the lane's usage, with the samples taken since the last report, if it
// changed.
func (w *Worker) flushMetrics(run string, wl *workerLane) {
	lm, changed := wl.metricsSince()
	if !changed {
		return
	}
	w.toDriver(wl.driver, &driverMsg{Run: run, Worker: w.id, Lane: wl.id, Metrics: lm})
}

// toDriver sends d to the server on subject: a result is delivered for sure (the worker acks
// its task message after), the rest is news that may be lost. A server of this process gets
// it by a call.
func (w *Worker) toDriver(subject string, d *driverMsg) {
	if w.m.localDriver(subject) {
		w.m.route(d)
		return
	}
	b, _ := json.Marshal(d)
	if d.Result == nil {
		w.q.Conn().Publish(subject, b)
		return
	}
	// Delivered even while this worker stops: its driver waits for it.
	ctx, cancel := context.WithTimeout(context.Background(), deliverPatience)
	defer cancel()
	deliver(ctx, w.q.Conn(), subject, b)
}

// metricsSince is the lane's usage, with the samples not sent yet; changed says whether it
// moved since the last call.
func (wl *workerLane) metricsSince() (lm *laneMetrics, changed bool) {
	wl.sendMu.Lock()
	defer wl.sendMu.Unlock()
	m, total := wl.meter.read(wl.samples) // (the samples sent already are not copied again)
	changed = total > wl.samples || m.Summary.CPUSeconds != wl.sentCPU || len(m.Tasks) > 0
	lm = &laneMetrics{CPUSeconds: m.Summary.CPUSeconds, PeakRSS: m.Summary.PeakRSSBytes, Processes: m.Processes,
		Samples: m.Samples, Tasks: m.Tasks}
	wl.samples, wl.sentCPU = total, m.Summary.CPUSeconds
	return lm, changed
}

// onEnd ends a run's lane at its driver's word and answers with the lane's final usage.
func (w *Worker) onEnd(msg *nats.Msg) {
	var e endMsg
	if json.Unmarshal(msg.Data, &e) != nil {
		return
	}
	if !w.goBackground() { // stopped: Stop ended every lane
		msg.Respond(nil)
		return
	}
	go func() { // a lane may wait for a task to stop: other end requests do not wait behind it
		defer w.bg.Done()
		lm, lane := w.end(e.Run, e.Reuse)
		b, _ := json.Marshal(driverMsg{Run: e.Run, Worker: w.id, Lane: lane, Metrics: lm})
		msg.Respond(b)
	}()
}

// end ends run's lane here, if any, and returns its final usage and its id. Tasks of the run
// that come later do not start.
func (w *Worker) end(run string, reuse bool) (*laneMetrics, string) {
	w.mu.Lock()
	wl := w.lanes[run]
	delete(w.lanes, run)
	w.stopped[run] = time.Now()
	w.mu.Unlock()
	if wl == nil {
		return nil, ""
	}
	return w.endLane(run, wl, reuse), wl.id
}

// endLane ends wl once its tasks have returned, and returns its final usage. A task still in
// hand (its run ended without it: cancelled, failed) is stopped first.
func (w *Worker) endLane(run string, wl *workerLane, reuse bool) *laneMetrics {
	close(wl.stopSend)
	wl.halt()
	wl.cancel(errors.New("the run ended"))
	wl.lane.end(reuse)
	lm, _ := wl.metricsSince()
	return lm
}

// onControl follows a driver's cancel or halt of a run.
func (w *Worker) onControl(msg *nats.Msg) {
	var c controlMsg
	if json.Unmarshal(msg.Data, &c) != nil {
		return
	}
	w.control(c)
}

// control follows a cancel, halt or abandon of a run.
func (w *Worker) control(c controlMsg) {
	w.mu.Lock()
	wl := w.lanes[c.Run]
	w.stopped[c.Run] = time.Now() // its tasks that come later do not start
	if c.Action == "abandon" {
		w.abandoned[c.Run] = time.Now()
	}
	w.mu.Unlock()
	if wl == nil {
		return
	}
	switch c.Action {
	case "cancel":
		wl.halt()
		wl.cancel(errors.New(c.Reason))
	case "halt":
		wl.halt()
	case "abandon":
		w.log.Info("worker: stopping the tasks of a run whose server stopped", "run_id", c.Run, "why", c.Reason)
		if w.goBackground() {
			go func() {
				defer w.bg.Done()
				w.end(c.Run, false)
			}()
		}
	}
}

// isAbandoned says whether run's driver is gone for good (see abandoned).
func (w *Worker) isAbandoned(run string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.abandoned[run]
	return ok
}

// onGraph answers a run's graph request from another process.
func (w *Worker) onGraph(typ string, msg *nats.Msg) {
	w.answerGraph(typ, msg.Reply, msg.Data)
}

// answerGraph builds the graph that request (a graphRequest) asks for, and sends the answer to
// subject.
func (w *Worker) answerGraph(typ, subject string, request []byte) {
	var gr graphRequest
	ans := graphAnswer{Worker: w.id}
	if err := json.Unmarshal(request, &gr); err != nil {
		ans.GraphErr = "a malformed graph request"
	} else if !slices.Contains(w.cfg.Types, typ) {
		ans.TakeErr = fmt.Sprintf("worker %s has no plugin of chain type %s", w.id, typ)
	} else {
		// Not the worker's context: a graph asked for before a drain is answered.
		ctx, cancel := context.WithTimeout(context.Background(), graphTimeout)
		p := w.graph(ctx, gr.Run, typ, &gr.Req)
		cancel()
		switch {
		case p.takeErr != nil:
			ans.TakeErr = p.takeErr.Error()
		case p.graphErr != nil:
			ans.GraphErr = p.graphErr.Error()
		default:
			ans.Graph, _ = json.Marshal(p.graph)
		}
	}
	b, _ := json.Marshal(ans)
	if err := respondParts(w.q.Conn(), subject, b); err != nil {
		w.log.Warn("answering a graph request", "err", err)
	}
}

// graph builds run's task graph in a process of the pool. The process is then kept for the
// run's first task here, for reserveFor at most, and goes back to the pool if none comes.
func (w *Worker) graph(ctx context.Context, run, typ string, req *plugins.GraphRequest) plannedRun {
	var p plannedRun
	w.makeRoom(typ, nil)
	if p.proc, p.out, p.base, p.takeErr = w.m.takePlugin(typ); p.takeErr != nil {
		w.log.Error("starting plugin", "err", p.takeErr)
		return plannedRun{takeErr: p.takeErr}
	}
	w.m.graphs.Add(1)
	p.graph, p.graphErr = p.proc.Graph(ctx, req)
	if p.graphErr != nil {
		go w.m.giveBack(typ, p)
		return plannedRun{graphErr: errors.New(rpcMessage(p.graphErr))}
	}
	sp := &spare{proc: p.proc, out: p.out, cpu0: p.base, since: time.Now(), typ: typ}
	w.mu.Lock()
	old := w.reserved[run]
	w.reserved[run] = sp
	w.mu.Unlock()
	if old != nil {
		w.m.giveBack(typ, plannedRun{proc: old.proc, out: old.out})
	}
	time.AfterFunc(reserveFor, func() {
		w.mu.Lock()
		unused := w.reserved[run] == sp
		if unused {
			delete(w.reserved, run)
		}
		w.mu.Unlock()
		if unused {
			w.m.giveBack(typ, plannedRun{proc: sp.proc, out: sp.out})
		}
	})
	return plannedRun{graph: p.graph}
}

// reserveFor is how long a graph's process waits for the run's first task. A variable: a test
// holds the reservations for its whole length.
var reserveFor = 2 * time.Second

// graphTimeout bounds a graph request (user code builds the graph).
const graphTimeout = 5 * time.Minute

// reapLanes ends lanes left idle past laneIdleTTL (their driver went away without a word), and
// forgets old cancels.
func (w *Worker) reapLanes(ctx context.Context) {
	t := time.NewTicker(laneIdleTTL / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var old map[string]*workerLane
		w.mu.Lock()
		for run, wl := range w.lanes {
			if wl.inHand == 0 && time.Since(wl.idle) > laneIdleTTL {
				if old == nil {
					old = map[string]*workerLane{}
				}
				old[run] = wl
				delete(w.lanes, run)
			}
		}
		for run, at := range w.stopped {
			if time.Since(at) > laneIdleTTL {
				delete(w.stopped, run)
			}
		}
		for run, at := range w.abandoned {
			if time.Since(at) > laneIdleTTL {
				delete(w.abandoned, run)
			}
		}
		w.mu.Unlock()
		for run, wl := range old {
			lm := w.endLane(run, wl, false)
			w.toDriver(wl.driver, &driverMsg{Run: run, Worker: w.id, Lane: wl.id, Metrics: lm})
		}
	}
}
