package runs

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"nectar/plugins"
	"nectar/server/queue"
)

// The driver's side of the queue path: a run's ready tasks go to the task stream, any worker
// serving the task's queue executes them (worker.go), and what the workers report comes back
// on this server's driver subject (wire.go).

// remoteRun is what the driving server knows of a run's tasks in workers' hands.
type remoteRun struct {
	s  *scheduler
	mu sync.Mutex
	// tasks are what the run knows of each task in its workers' hands, by graph index: from
	// its first send (await) to the end of its dispatch (dispatchQueued), so a few dozen at
	// once whatever the graph's size. What a worker says of a task after is late news (of a
	// message sent again, or of a task finished or given up here), ignored as before.
	tasks   map[int]*remoteTask
	seqs    map[uint64][]int // the tasks in each message (by stream sequence), for max-deliveries advisories
	workers map[string]bool  // workers that hold a lane of this run
	checked map[string]bool  // the queues named by tasks that were looked at for a worker

	outbox     []*outItem // tasks waiting to be published (publishLoop)
	publishing bool       // a publishLoop runs
	batches    int        // messages published: their ids
}

// remoteTask is the state of one task sent to a worker.
type remoteTask struct {
	// waiting is where the task's end goes while it is published and not yet finished; nil
	// once finished or given up here.
	waiting chan taskResult
	// after is, for a task sent again, the stream sequence of its message before: what
	// workers still say of that message (or an older one) is stale.
	after  uint64
	holder string // the worker that holds it now
	// delivery is the last delivery a worker reported; base the attempts recorded before it
	// (a redelivered task numbers its attempts after the lost ones).
	delivery int
	base     int
	taken    bool // a worker has said it holds it
}

func newRemoteRun(s *scheduler) *remoteRun {
	return &remoteRun{s: s, tasks: map[int]*remoteTask{}, seqs: map[uint64][]int{}, workers: map[string]bool{}, checked: map[string]bool{}}
}

// task is task i's state (rr.mu held), or nil for a task not in a worker's hands (not sent
// yet, its dispatch ended, or an index out of the run's graph): a report naming one is ignored.
func (rr *remoteRun) task(i int) *remoteTask { return rr.tasks[i] }

// drop forgets task i once its dispatch ended: it is not sent again.
func (rr *remoteRun) drop(i int) {
	rr.mu.Lock()
	delete(rr.tasks, i)
	rr.mu.Unlock()
}

// waitingTask is task i's state if its end is awaited here (rr.mu held), else nil.
func (rr *remoteRun) waitingTask(i int) *remoteTask {
	if t := rr.task(i); t != nil && t.waiting != nil {
		return t
	}
	return nil
}

// startDriving listens on this server's driver subject for what workers report, and for
// JetStream's word on task messages delivered too often.
func (m *Manager) startDriving() error {
	nc := m.cfg.Queue.Conn()
	sub, err := nc.Subscribe(driverSubject(m.driverID), m.onDriverMsg)
	if err != nil {
		return err
	}
	// A busy driver must not lose what workers report: NATS drops a slow subscriber's messages
	// beyond its pending limits.
	sub.SetPendingLimits(-1, -1)
	stopAdvisories, err := m.cfg.Queue.OnMaxDeliveries(time.Now(), m.onMaxDeliveries)
	if err != nil {
		sub.Unsubscribe()
		return err
	}
	m.stopDriving = func() { sub.Unsubscribe(); stopAdvisories() }
	return nc.Flush()
}

// onDriverMsg routes a worker's report to its run.
func (m *Manager) onDriverMsg(msg *nats.Msg) {
	var d driverMsg
	if err := json.Unmarshal(msg.Data, &d); err != nil {
		m.cfg.Logger.Warn("driver: a malformed message from a worker", "err", err)
		return
	}
	m.route(&d)
	if msg.Reply != "" {
		msg.Respond(nil) // received (a run no longer driven here counts too: its new driver reruns what is missing)
	}
}

// route hands a worker's report to the run it is about, if this server drives it.
func (m *Manager) route(d *driverMsg) {
	m.mu.Lock()
	rr := m.remote[d.Run]
	m.mu.Unlock()
	if rr == nil {
		return
	}
	switch {
	case d.Update != nil:
		rr.update(d.Worker, *d.Update)
	case d.Result != nil:
		// The result is delivered for sure, the news before it may have been lost in a
		// failover: it names the worker too.
		i := d.Result.Index
		rr.mu.Lock()
		t := rr.task(i)
		if t == nil || d.Result.Seq != 0 && d.Result.Seq <= t.after {
			rr.mu.Unlock()
			return // the end of a message the task was sent again after (or of no task of the run)
		}
		waiting, base := t.waiting != nil, t.base
		rr.mu.Unlock()
		if waiting {
			rr.s.setTask(i, func(t *TaskState) {
				if t.Worker == "" {
					t.Worker = d.Worker
				}
				if len(d.Result.Attempts) > 0 { // this delivery's attempts, whatever news was lost
					t.Attempts = t.Attempts[:min(base, len(t.Attempts))]
					for _, a := range d.Result.Attempts {
						a.Number += base
						t.Attempts = append(t.Attempts, a)
					}
				}
			})
		}
		rr.finish(d.Result.result())
	case d.Metrics != nil:
		rr.s.r.meterOf().laneReport(d.Lane, d.Metrics)
	}
}

// localDriver reports whether subject is this server's driver subject: a worker in this
// process then hands it reports by a call, not through NATS.
func (m *Manager) localDriver(subject string) bool {
	return m.driverID != "" && subject == driverSubject(m.driverID)
}

// localWorker is a worker of this process that has typ's plugin (id "" for any), if any.
func (m *Manager) localWorker(typ, id string) *Worker {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, w := range m.workers {
		if id != "" {
			if w.id == id {
				return w
			}
			continue
		}
		if w.taking() && slices.Contains(w.cfg.Types, typ) {
			return w
		}
	}
	return nil
}

// onMaxDeliveries fails the tasks of the message JetStream stopped delivering: each worker
// that took it was lost before it answered.
func (m *Manager) onMaxDeliveries(seq uint64, deliveries int) {
	m.mu.Lock()
	var rr *remoteRun
	var idxs []int
	for _, r := range m.remote {
		r.mu.Lock()
		if ii, ok := r.seqs[seq]; ok {
			rr, idxs = r, slices.Clone(ii)
		}
		r.mu.Unlock()
		if rr != nil {
			break
		}
	}
	m.mu.Unlock()
	if err := m.cfg.Queue.Delete(context.Background(), seq); err != nil {
		m.cfg.Logger.Warn("deleting a task message past its delivery limit", "seq", seq, "err", err)
	}
	for _, idx := range idxs {
		rr.mu.Lock()
		var worker string
		if t := rr.task(idx); t != nil {
			worker = t.holder
		}
		rr.mu.Unlock()
		msg := fmt.Sprintf("its worker was lost %d times in a row (last %s): the task may be what kills it (memory?); the limit is NECTAR_TASK_DELIVERIES", deliveries, lostWorker(worker))
		rr.s.setTask(idx, func(t *TaskState) { closeLostAttempt(t, lostWorker(worker)+" was lost") })
		rr.finish(taskResult{idx: idx, err: msg, noLog: true})
	}
}

// update records a worker's news of a task: only while the task waits here, and only from the
// worker that holds it now (a holder thought lost, and redelivered, may still speak).
func (rr *remoteRun) update(worker string, u taskUpdate) {
	rr.mu.Lock()
	rr.workers[worker] = true // it has a lane of the run: the run's end ends it
	rt := rr.waitingTask(u.Index)
	if rt == nil {
		rr.mu.Unlock()
		return // finished or given up here: late news changes nothing
	}
	if u.Delivery > 0 { // a worker took the task
		if u.Delivery <= rt.delivery || u.Seq != 0 && u.Seq <= rt.after {
			rr.mu.Unlock()
			return
		}
		prev := rt.holder
		rt.taken, rt.holder, rt.delivery = true, worker, u.Delivery
		rr.mu.Unlock()
		rr.s.setTask(u.Index, func(t *TaskState) {
			switch {
			case u.Found: // the lost worker committed the out before it died
				now := time.Now().UTC()
				switch k := len(t.Attempts); {
				case k > 0 && t.Attempts[k-1].FinishedAt == nil:
					t.Attempts[k-1].FinishedAt = &now
				case k == 0 || t.Attempts[k-1].Error != "":
					// Its news was lost with it (sent through a NATS node that died too):
					// the attempt that made the out is known by its out alone.
					started := now
					if t.StartedAt != nil {
						started = *t.StartedAt
					}
					t.Attempts = append(t.Attempts, Attempt{Number: k + 1, StartedAt: started, FinishedAt: &now})
				}
			case u.Delivery > 1:
				closeLostAttempt(t, lostWorker(prev)+" was lost; the task went to another")
			}
			rr.mu.Lock()
			rt.base = len(t.Attempts) // (rt is the task's while it is in hand; after, no one reads it)
			rr.mu.Unlock()
			t.Worker = worker
		})
		return
	}
	if worker != rt.holder {
		rr.mu.Unlock()
		return
	}
	base := rt.base
	rr.mu.Unlock()
	if u.Attempt != nil {
		a := *u.Attempt
		a.Number += base
		u.Attempt = &a
	}
	rr.s.apply(u)
}

// lostWorker names the worker that held a task before it was redelivered.
func lostWorker(id string) string {
	if id == "" {
		return "its worker"
	}
	return "worker " + id
}

// closeLostAttempt ends a task's last attempt, whose worker is gone before the task was
// reported: one still running, or one whose user code had returned but whose files were never
// committed (that worker died in between). No log of it was stored: unless a later attempt
// ends with one, no answer signs a URL to it.
func closeLostAttempt(t *TaskState, why string) {
	if t.Status.Final() { // its result came in meanwhile (the lost holder spoke after all)
		return
	}
	t.LogNotStored = true
	k := len(t.Attempts)
	if k == 0 {
		return
	}
	a := &t.Attempts[k-1]
	switch {
	case a.FinishedAt == nil:
		now := time.Now().UTC()
		a.FinishedAt, a.Error = &now, why
	case a.Error == "":
		a.Error = why + " (before its files were committed)"
	}
}

// finish hands a task's end to the dispatch waiting for it (once).
func (rr *remoteRun) finish(res taskResult) {
	rr.mu.Lock()
	var ch chan taskResult
	if t := rr.waitingTask(res.idx); t != nil {
		ch, t.waiting = t.waiting, nil
	}
	rr.mu.Unlock()
	if ch != nil {
		ch <- res
	}
}

// graphThroughQueue sends a graph request as a message of the chain type's queue, for the
// first worker of that type to take, and waits for its answer (up to Config.WorkerWait);
// waiting is called once the request is queued. A request not answered is deleted, so no late
// worker builds a graph for nobody.
func (m *Manager) graphThroughQueue(ctx context.Context, rec Record, req []byte, waiting func()) ([]byte, error) {
	nc, q := m.cfg.Queue.Conn(), m.cfg.Queue
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	msg := jobMsg{Driver: inbox, Graph: req}
	seq, err := publishPatiently(ctx, q, rec.Type, rec.RunID, rec.RunID+".graph", msg.encode(nil))
	if err != nil {
		return nil, err
	}
	m.cfg.Logger.Info("queue: no worker of this chain type listens; the run's graph request waits in its queue", "run_id", rec.RunID, "queue", rec.Type)
	if waiting != nil {
		waiting()
	}
	wctx, cancel := context.WithTimeout(ctx, m.cfg.WorkerWait)
	defer cancel()
	b, err := gatherParts(wctx, sub, inbox)
	if err != nil { // not answered (nobody came, or the run ended): nobody builds it later
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		q.Delete(dctx, seq)
	}
	if err != nil && ctx.Err() == nil && wctx.Err() != nil {
		return nil, noWorker{fmt.Errorf("no worker with the plugin of chain type %s took the run within %s (NECTAR_WORKER_WAIT): start one (nectar worker), or look at the autoscaler of queue %s", rec.Type, m.cfg.WorkerWait, rec.Type)}
	}
	return b, err
}

// noWorker is graphThroughQueue's error when no worker came: the run fails with its text.
type noWorker struct{ error }

// finishUntaken ends, as not started, the tasks waiting here that no worker has taken (their
// messages were purged).
func (rr *remoteRun) finishUntaken() {
	rr.mu.Lock()
	var idx []int
	for i, t := range rr.tasks {
		if t.waiting != nil && !t.taken {
			idx = append(idx, i)
		}
	}
	rr.mu.Unlock()
	for _, i := range idx {
		rr.finish(taskResult{idx: i, notStarted: true})
	}
}

// cancelGrace is how long a cancelled run waits for its running tasks to answer.
const cancelGrace = 5 * time.Second

// dispatchQueued publishes task job and waits for its end. A task that comes back not
// started while the run goes on (its worker was stopping), or whose end was lost on the way
// (its message is gone from the stream, and no result came), is published again.
func (s *scheduler) dispatchQueued(ctx context.Context, job *taskJob) taskResult {
	rr, i := s.remote, job.Index
	defer rr.drop(i)
	if job.Queue != "" && !s.m.servedHere(job.Queue) {
		s.warnIfUnserved(ctx, job.Queue)
	}
	var seq uint64
	for sends := 1; ; sends++ {
		job.Send = sends
		var res taskResult
		var again bool
		if w := s.m.takerHere(job.queue()); w != nil {
			res = s.runHere(ctx, rr, w, job, seq)
			// Sent again only if its worker handed it back (it was stopping, and says why):
			// one not started for its run's halt or cancel stays so, while the run ends.
			again = res.notStarted && res.err != "" && ctx.Err() == nil && !s.halted.Load()
		} else {
			if job.beforeCommit != nil { // it cannot travel: wait for it here
				if err := job.beforeCommit(); err != nil { // its run says why (drive)
					if ctx.Err() != nil {
						return taskResult{idx: i, notStarted: true}
					}
					return taskResult{idx: i, err: "not sent to a worker: " + errStartWrites.Error(), fatal: true, noLog: true}
				}
				job.beforeCommit = nil
			}
			res, again, seq = s.publishAndWait(ctx, rr, job, seq)
		}
		if !again {
			return res
		}
		if sends >= maxSends {
			// A failure, with why: "not started" would leave the task pending, then
			// cancelled with no reason.
			why := cmp.Or(res.err, "its worker stopped before it started")
			return taskResult{idx: i, err: fmt.Sprintf("sent to workers %d times, and never finished (the last time: %s)", sends, why), attempts: res.attempts, noLog: true}
		}
		s.log.Info("queue: publishing a task again", "task", job.Ref.Task, "index", i, "why", res.err)
		s.setTask(i, func(t *TaskState) {
			closeLostAttempt(t, "sent again: "+cmp.Or(res.err, "its worker stopped before it started"))
		})
	}
}

// warnIfUnserved logs a warning, once per run and queue, when no worker serves the queue a
// task names: the task waits in the stream until one comes, which is what scaling a queue's
// workers from zero needs, but is a mistake when nobody will come. Only a task whose queue is
// unserved waits here, a second at most, and it would wait anyway.
func (s *scheduler) warnIfUnserved(ctx context.Context, name string) {
	rr := s.remote
	rr.mu.Lock()
	done := rr.checked[name]
	rr.checked[name] = true
	rr.mu.Unlock()
	if done {
		return
	}
	for look := 0; ; look++ {
		served, err := s.m.cfg.Queue.Served(ctx, name)
		if served || err != nil {
			return
		}
		if look == 1 {
			s.log.Warn("queue: no worker serves this queue; its tasks wait until one does (nectar worker --queues "+name+")", "queue", name)
			return
		}
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return
		}
	}
}

// takerHere is a worker of this process that takes a task of queue now, without the queue, or
// nil: the task is published. A task goes through the queue so that any worker may take it,
// and a worker in the driver's own process is such a worker: handing the task over by a call
// saves the queue's trips (a publish, a delivery, an ack: a third of a trivial
// task's cost, and most of a single run's wait) and loses nothing, as the run's state is this
// process's anyway (a driver that dies ends its run whatever ran where). A worker of this
// process takes up to TaskParallelism tasks that way, then the rest are published for any
// worker: a run whose tasks outnumber this server's slots still spreads over the others. When
// no other process can reach the queue (embedded, with no NECTAR_NATS_LISTEN), nothing bounds
// the hand-over: no other worker would take what is published, and what bounds a worker's
// slots by default bounds these tasks as well (MaxRuns runs, each with at most commitBacklog
// times TaskParallelism tasks in hand). A worker returned has reserved the room: runHere
// must follow.
func (m *Manager) takerHere(queueName string) *Worker {
	limit := m.cfg.TaskParallelism
	if m.cfg.Queue.Embedded() && m.cfg.Queue.ClientURL() == "" {
		limit = 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, w := range m.workers {
		if w.takeHere(queueName, limit) {
			return w
		}
	}
	return nil
}

// servedHere reports whether a worker of this process takes queueName's tasks (it reserves
// nothing).
func (m *Manager) servedHere(queueName string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, w := range m.workers {
		if slices.Contains(w.cfg.Queues, queueName) {
			return true
		}
	}
	return false
}

// runHere executes job on w, a worker of this process that took it (takerHere), and returns
// its end. after is the sequence of the task's message before, if it was published: what
// workers still say of that message is stale.
func (s *scheduler) runHere(ctx context.Context, rr *remoteRun, w *Worker, job *taskJob, after uint64) taskResult {
	i := job.Index
	ch := rr.await(i, after)
	rr.mu.Lock()
	rr.tasks[i].taken = true // in this process's hands from now on: a halt's purge does not end it (await made the entry)
	rr.mu.Unlock()
	s.m.handedOver.Add(1)
	msg := &jobMsg{Driver: driverSubject(s.m.driverID), Parallelism: s.m.cfg.TaskParallelism, RunConns: s.runConns,
		Jobs: []taskJob{*job}}
	w.runHere(ctx, msg)
	select {
	case res := <-ch: // its worker reported it by a call, before runHere returned
		return res
	case <-ctx.Done():
		return s.cancelled(ctx, rr, i, ch)
	default: // no end reported (the run was taken for abandoned): it goes again
		rr.forget(i)
		return taskResult{idx: i, notStarted: true, err: "its worker in this process did not report it"}
	}
}

// maxSends bounds how often one task is published.
const maxSends = 5

// await registers task i as sent (again, after the message of sequence after, if any) and
// returns where its end will come.
func (rr *remoteRun) await(i int, after uint64) chan taskResult {
	ch := make(chan taskResult, 1)
	rr.mu.Lock()
	defer rr.mu.Unlock()
	t := rr.tasks[i]
	if t == nil {
		t = &remoteTask{}
		rr.tasks[i] = t
	}
	// A new message (or hand-over) counts its deliveries from 1; holder and base stay, for
	// what the worker before may still report.
	t.after, t.waiting, t.taken, t.delivery = after, ch, false, 0
	return ch
}

// forget gives up waiting for task i's end here.
func (rr *remoteRun) forget(i int) {
	rr.mu.Lock()
	if t := rr.task(i); t != nil {
		t.waiting = nil
	}
	rr.mu.Unlock()
}

// publishAndWait publishes the task once and waits for its end; again says it should be
// published once more. after is the sequence of the task's message before (0: none), seq
// this one's.
func (s *scheduler) publishAndWait(ctx context.Context, rr *remoteRun, job *taskJob, after uint64) (res taskResult, again bool, seq uint64) {
	i := job.Index
	ch := rr.await(i, after)
	forget := func() { rr.forget(i) }
	q := s.m.cfg.Queue
	var err error
	seq, err = rr.publish(ctx, job)
	if err != nil {
		forget()
		if ctx.Err() != nil {
			return taskResult{idx: i, notStarted: true}, false, seq
		}
		s.log.Error("run failed: the task queue failed", "task", job.Ref.Task, "err", err)
		return taskResult{idx: i, err: fmt.Sprintf("the task queue is unavailable; see the server log (run %s)", job.Run), fatal: true, noLog: true}, false, seq
	}
	rr.mu.Lock()
	rr.seqs[seq] = append(rr.seqs[seq], i)
	rr.mu.Unlock()
	defer func() {
		rr.mu.Lock()
		if rest := slices.DeleteFunc(rr.seqs[seq], func(j int) bool { return j == i }); len(rest) > 0 {
			rr.seqs[seq] = rest
		} else {
			delete(rr.seqs, seq)
		}
		rr.mu.Unlock()
	}()
	watch := time.NewTicker(max(q.AckWait(), time.Second))
	defer watch.Stop()
	missing := 0
	for {
		select {
		case res := <-ch:
			// Not started while the run goes on: its worker was stopping, or had the run as
			// halted by another worker's failure (then the run halts here too).
			return res, res.notStarted && ctx.Err() == nil && !s.halted.Load(), seq
		case <-ctx.Done():
			return s.cancelled(ctx, rr, i, ch), false, seq
		case <-watch.C:
		}
		if present, err := q.Has(ctx, seq); err != nil || present {
			missing = 0
			continue
		}
		// Acked, yet no end came: give its result a moment more, then look at the store.
		if missing++; missing < 2 {
			continue
		}
		forget()
		if out, err := s.m.cfg.Store.Stat(ctx, job.Key+"/"+OutName); err == nil {
			return foundDone(ctx, s.m.cfg.Store, i, job.Key, out), false, seq
		}
		if s.halted.Load() { // purged
			return taskResult{idx: i, notStarted: true}, false, seq
		}
		return taskResult{idx: i, err: "its worker's answer was lost", noLog: true}, true, seq
	}
}

// outItem is a task waiting in a run's outbox, with where its message's sequence goes.
type outItem struct {
	job  *taskJob
	done chan published
}

type published struct {
	seq uint64
	err error
}

// maxBatch bounds the tasks of one message. A message holds no more tasks than the run runs
// at once on one worker (its task parallelism) either: the tasks of a wide run spread over the
// workers, a message's worth each, however heavy they are.
const maxBatch = 32

// publish sends job to its queue and returns the stream sequence of its message. The tasks of
// a run that are ready at the same moment (the leaves of a fan-in, the tasks a batch of
// results frees) share one message: what the queue costs is per message (a publish, a stored
// message, a delivery, an ack), so a run of many small tasks pays it once per batch. A task
// sent again (Send above 1) goes in a message of its own, so that a task that kills its workers
// takes no other down with it twice.
func (rr *remoteRun) publish(ctx context.Context, job *taskJob) (uint64, error) {
	it := &outItem{job: job, done: make(chan published, 1)}
	rr.mu.Lock()
	rr.outbox = append(rr.outbox, it)
	start := !rr.publishing
	rr.publishing = true
	rr.mu.Unlock()
	if start {
		go rr.publishLoop(ctx)
	}
	p := <-it.done
	return p.seq, p.err
}

// publishLoop publishes the outbox, a batch at a time, until it is empty. Tasks added while a
// batch is on its way make the next one: batches form by themselves, with no waiting.
func (rr *remoteRun) publishLoop(ctx context.Context) {
	for {
		rr.mu.Lock()
		batch := rr.takeBatch()
		if len(batch) == 0 {
			rr.publishing = false
			rr.mu.Unlock()
			return
		}
		rr.batches++
		id := fmt.Sprintf("%s.b%d", rr.s.runID, rr.batches)
		rr.mu.Unlock()
		seq, err := rr.publishBatch(ctx, id, batch)
		if errors.Is(err, queue.ErrTooBig) && len(batch) > 1 { // big parameters: one by one
			for k, it := range batch {
				seq, err := rr.publishBatch(ctx, fmt.Sprintf("%s.%d", id, k), batch[k:k+1])
				it.done <- published{seq, err}
			}
			continue
		}
		for _, it := range batch {
			it.done <- published{seq, err}
		}
	}
}

// takeBatch takes the first task of the outbox, and the tasks for the same queue after it, up
// to maxBatch (guarded by rr.mu).
func (rr *remoteRun) takeBatch() []*outItem {
	if len(rr.outbox) == 0 {
		return nil
	}
	first := rr.outbox[0]
	batch := []*outItem{first}
	rest := make([]*outItem, 0, len(rr.outbox)-1)
	for _, it := range rr.outbox[1:] {
		if first.job.Send == 1 && it.job.Send == 1 && it.job.queue() == first.job.queue() && len(batch) < rr.batchMax() {
			batch = append(batch, it)
		} else {
			rest = append(rest, it)
		}
	}
	rr.outbox = rest
	return batch
}

// batchMax is the most tasks one message of the run holds.
func (rr *remoteRun) batchMax() int { return max(1, min(maxBatch, rr.s.m.cfg.TaskParallelism)) }

// publishBatch publishes one message with batch's tasks.
func (rr *remoteRun) publishBatch(ctx context.Context, id string, batch []*outItem) (uint64, error) {
	s := rr.s
	msg := jobMsg{Driver: driverSubject(s.m.driverID), Parallelism: s.m.cfg.TaskParallelism, RunConns: s.runConns,
		Jobs: make([]taskJob, len(batch))}
	for k, it := range batch {
		msg.Jobs[k] = *it.job
	}
	return publishPatiently(ctx, s.m.cfg.Queue, batch[0].job.queue(), s.runID, id, msg.encode(nil))
}

// publishPatiently publishes a task message, retrying through a cluster's failover (a node
// gone, a leader being elected) for up to publishPatience; the message id makes a retry that
// follows a lost acknowledgement a no-op.
func publishPatiently(ctx context.Context, q *queue.Queue, queueName, run, id string, b []byte) (uint64, error) {
	deadline := time.Now().Add(publishPatience)
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		seq, err := q.Publish(pctx, queueName, run, id, b)
		cancel()
		if err == nil || ctx.Err() != nil || errors.Is(err, queue.ErrTooBig) || time.Now().After(deadline) {
			return seq, err
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// publishPatience bounds the retries of one publish.
const publishPatience = 30 * time.Second

// cancelled is the end of task i of a cancelled run: a task no worker took is purged from the
// stream (watchCancel); one that runs gets the cancel and answers within moments.
func (s *scheduler) cancelled(ctx context.Context, rr *remoteRun, i int, ch chan taskResult) taskResult {
	rr.mu.Lock()
	t := rr.tasks[i] // (await made it: the dispatch has not ended)
	taken := t.taken
	if !taken {
		t.waiting = nil
	}
	rr.mu.Unlock()
	if !taken {
		return taskResult{idx: i, notStarted: true}
	}
	select {
	case res := <-ch:
		return res
	case <-time.After(cancelGrace):
		rr.forget(i)
		return taskResult{idx: i, err: "cancelled: " + cancelReason(ctx) + " (its worker did not answer)", fatal: true, noLog: true}
	}
}

// watchCancel tells the workers when the run is cancelled, and drops its tasks not taken
// yet, until stop is closed.
func (s *scheduler) watchCancel(ctx context.Context, stop <-chan struct{}) {
	select {
	case <-stop:
		return
	case <-ctx.Done():
	}
	s.control("cancel", cancelReason(ctx))
	pctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.m.cfg.Queue.PurgeRun(pctx, s.runID); err != nil {
		s.log.Warn("dropping the queued tasks of a cancelled run", "err", err)
	}
}

// abandonDeadRun clears the way for this run, which took its key over from a server that died
// mid-run (s.deadRun): the dead run's task messages no worker took yet are purged (this run
// publishes what is still to do), and the workers stop the dead run's tasks in hand and keep
// their ends (nobody waits for them: they would hold a slot while looking for the dead driver).
// A task that committed meanwhile is found by this run's walk of the graph, which follows.
func (s *scheduler) abandonDeadRun() {
	s.controlRun(s.deadRun, "abandon", "its server stopped; run "+s.runID+" took the key over")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.m.cfg.Queue.PurgeRun(ctx, s.deadRun); err != nil {
		s.log.Warn("dropping the queued tasks of the run taken over", "dead_run", s.deadRun, "err", err)
	}
}

// control sends every worker a control of this run.
func (s *scheduler) control(action, reason string) { s.controlRun(s.runID, action, reason) }

// controlRun sends every worker a run control.
func (s *scheduler) controlRun(run, action, reason string) {
	b, _ := json.Marshal(controlMsg{Run: run, Action: action, Reason: reason})
	if err := s.m.cfg.Queue.Conn().Publish(controlSubject, b); err != nil {
		s.log.Warn("telling the workers to "+action+" a run", "err", err)
	}
}

// endRemote asks every worker that held a lane of the run to end it, and adds their final
// usage to the run's metrics. A worker that does not answer is gone: its usage stays as last
// reported.
func (s *scheduler) endRemote(reuse bool) {
	rr := s.remote
	s.m.mu.Lock()
	delete(s.m.remote, s.runID)
	s.m.mu.Unlock()
	rr.mu.Lock()
	var workers []string
	for w := range rr.workers {
		workers = append(workers, w)
	}
	rr.mu.Unlock()
	b, _ := json.Marshal(endMsg{Run: s.runID, Reuse: reuse})
	var wg sync.WaitGroup
	for _, w := range workers {
		if lw := s.m.localWorker("", w); lw != nil { // in this process: a call
			if lm, lane := lw.end(s.runID, reuse); lm != nil {
				s.r.meterOf().laneReport(lane, lm)
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			reply, err := s.m.cfg.Queue.Conn().Request(workerEndSubject(w), b, 2*time.Second)
			if err != nil {
				return
			}
			var d driverMsg
			if json.Unmarshal(reply.Data, &d) == nil && d.Metrics != nil {
				s.r.meterOf().laneReport(d.Lane, d.Metrics)
			}
		}()
	}
	wg.Wait()
}

// graphRemote asks a worker with the chain type's plugin for rec's task graph.
func (m *Manager) graphRemote(ctx context.Context, rec Record, waiting func()) plannedRun {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.WorkerWait+graphTimeout)
	defer cancel()
	greq := plugins.GraphRequest{Root: rec.rootRef(), MaxTasks: m.cfg.MaxTasks}
	if w := m.localWorker(rec.Type, ""); w != nil {
		// A worker of this process answers by a call: a graph is the same from any worker.
		// A plain task's needs no call at all. (With no worker here, the request is also what
		// finds out whether any worker serves the type: it is always sent.)
		if g := m.plainGraph(rec); g != nil {
			return plannedRun{graph: g, plain: true}
		}
		return w.graph(ctx, rec.RunID, rec.Type, &greq)
	}
	req, _ := json.Marshal(graphRequest{Run: rec.RunID, Req: greq})
	b, err := requestParts(ctx, m.cfg.Queue.Conn(), graphSubjectPrefix+rec.Type, req)
	if errors.Is(err, nats.ErrNoResponders) {
		// No worker with the plugin listens (none started yet, or scaled to zero): the
		// request waits in the stream for the first one.
		b, err = m.graphThroughQueue(ctx, rec, req, waiting)
	}
	var nw noWorker
	if errors.As(err, &nw) {
		return plannedRun{takeErr: nw.error}
	}
	if err != nil {
		return plannedRun{graphErr: err}
	}
	var ans graphAnswer
	if err := json.Unmarshal(b, &ans); err != nil {
		return plannedRun{graphErr: fmt.Errorf("a malformed graph from a worker: %w", err)}
	}
	switch {
	case ans.TakeErr != "":
		return plannedRun{takeErr: errors.New(ans.TakeErr)}
	case ans.GraphErr != "":
		return plannedRun{graphErr: errors.New(ans.GraphErr)}
	}
	var g plugins.GraphResponse
	if err := plugins.DecodeGraph(ans.Graph, &g); err != nil {
		return plannedRun{graphErr: fmt.Errorf("a malformed graph from worker %s: %w", ans.Worker, err)}
	}
	return plannedRun{graph: &g}
}
