package runs

import (
	"os"
	"slices"
	"sync"
)

// How many plugin processes a worker holds. A run's lane keeps its process from its first
// task to the run's end, and a graph's process is kept a moment for the run's first task
// (reserved), so a burst of runs waiting in the queue once made a worker with 8 slots run over
// 100 processes, each with its own memory, and every run paid a launch. Now, before the worker
// takes another process, it counts those it holds (in lanes, reserved, waiting in the pool)
// and, at WorkerConfig.Processes or more (NECTAR_MAX_RUNS for the server's workers), frees one
// that nothing is using: a reserved one first, then the process of the lane idle longest (no
// task of its run in hand here), then one of another chain type waiting in the pool. A freed
// process of the wanted type goes to the pool, where the taker finds it warm; another is
// stopped. The cap is soft: when every process is busy the new one is started anyway, so no
// task ever waits for a process; busy processes are those of the messages in hand.

// makeRoom frees a process for one of typ the worker is about to take, if it holds its
// Processes already. self is the lane asking (its own process is gone), nil for a graph.
func (w *Worker) makeRoom(typ string, self *lane) {
	spares, sameType := w.m.spareCounts(typ)
	if sameType > 0 {
		return // the process comes from the pool
	}
	w.mu.Lock()
	held := spares + len(w.reserved)
	var oldest *workerLane
	for _, wl := range w.lanes {
		if wl.lane == self {
			continue
		}
		has, idle := wl.lane.processState()
		if has {
			held++
		}
		if has && idle && wl.inHand == 0 && (oldest == nil || wl.idle.Before(oldest.idle)) {
			oldest = wl
		}
	}
	if held < w.cfg.Processes {
		w.mu.Unlock()
		return
	}
	// A reserved process: its run's first task has not come, and may go to another worker.
	var sp *spare
	var spRun string
	for run, r := range w.reserved {
		if sp == nil || r.since.Before(sp.since) {
			sp, spRun = r, run
		}
	}
	if sp != nil {
		delete(w.reserved, spRun)
		w.mu.Unlock()
		w.m.park(typ, sp)
		return
	}
	var parked *parkedProcess
	if oldest != nil {
		parked = oldest.lane.detach()
	}
	w.mu.Unlock()
	if parked != nil {
		w.m.parkDetached(typ, oldest.lane.typ, parked, oldest.lane.bg)
		return
	}
	w.m.dropSpare(typ) // one of another type, waiting in the pool
}

// holding is how many processes the worker holds in its lanes and reserved for a run's first
// task (the pool's spares are the manager's to count).
func (w *Worker) holding() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(w.reserved)
	for _, wl := range w.lanes {
		if has, _ := wl.lane.processState(); has {
			n++
		}
	}
	return n
}

// roomForSpare reports whether the pool may start a warm spare: always, but on a worker that
// holds its Processes already (in lanes, reserved, and waiting in the pool). A spare taken was
// started again at once, and makeRoom, finding it, freed nothing: a burst of graph requests,
// each reserving its process for its run's first task, had a worker with 8 slots and
// NECTAR_MAX_RUNS=2 run 36 processes at once.
func (m *Manager) roomForSpare() bool {
	m.mu.Lock()
	workers := slices.Clone(m.workers)
	m.mu.Unlock()
	if len(workers) == 0 {
		return true
	}
	held, _ := m.spareCounts("")
	limit := 0
	for _, w := range workers {
		held += w.holding()
		limit += w.cfg.Processes
	}
	return held < limit
}

// processState says whether the lane holds a process, and whether it is free to take: no
// other goroutine is starting or replacing it. It does not wait for the lane's lock.
func (l *lane) processState() (has, free bool) {
	if !l.procMu.TryLock() {
		return true, false
	}
	defer l.procMu.Unlock()
	return l.proc != nil, true
}

// detach takes the lane's process away from it (the caller knows no task of the lane is in
// hand), settled as the run's end would settle it (lane.settle): under the lane's process
// lock, so the lane's end, which takes it too, reports the exact figure. The lane's next task
// takes another process. nil if the lane has none, or is busy with it.
func (l *lane) detach() *parkedProcess {
	if !l.procMu.TryLock() {
		return nil
	}
	defer l.procMu.Unlock()
	p := l.proc
	if p == nil {
		return nil
	}
	l.proc = nil
	l.outMu.Lock()
	out := l.procOut
	l.procOut = nil // the next process brings its own output file
	l.outMu.Unlock()
	l.outSeen.Store(0)
	return l.settle(p, out, !l.tainted.Load() && !l.secrets)
}

// parkedProcess is a process detached from its lane, on its way to the pool or its end.
type parkedProcess struct {
	spare
	rss     uint64
	reuse   bool // it may serve another run
	retired bool // killed and reaped already (lane.retire): only its output file is left
}

// parkDetached gives a process settled by a lane of chain type typ (its end, or a detach) to
// the pool if want is that type and it may serve another run, else stops it and removes its
// output file in the background.
func (m *Manager) parkDetached(want, typ string, pp *parkedProcess, bg *sync.WaitGroup) {
	if want == typ && pp.reuse && m.release(typ, pp.proc, pp.out, pp.cpu0, pp.rss) {
		return
	}
	if pp.retired { // no second kill: its process group id may be another's by now
		closeOutput(pp.out)
		return
	}
	bg.Add(1)
	go func() {
		defer bg.Done()
		pp.proc.KillNow()
		closeOutput(pp.out)
	}()
}

// park gives a reserved process to the pool if want is its chain type, or stops it.
func (m *Manager) park(want string, sp *spare) {
	if want == sp.typ {
		m.giveBack(sp.typ, plannedRun{proc: sp.proc, out: sp.out})
		return
	}
	sp.discard()
}

func closeOutput(f *os.File) {
	if f != nil {
		f.Close()
		os.Remove(f.Name())
	}
}

// spareCounts is the number of processes waiting in the pool, and of those of typ.
func (m *Manager) spareCounts(typ string) (all, ofType int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for t, l := range m.idle {
		all += len(l)
		if t == typ {
			ofType += len(l)
		}
	}
	return all, ofType
}

// dropSpare stops the process that waited longest in the pool among those not of typ.
func (m *Manager) dropSpare(typ string) {
	m.mu.Lock()
	var oldest *spare
	var oldestType string
	for t, l := range m.idle {
		if t != typ && len(l) > 0 && (oldest == nil || l[0].since.Before(oldest.since)) {
			oldest, oldestType = l[0], t
		}
	}
	if oldest != nil {
		m.idle[oldestType] = m.idle[oldestType][1:]
	}
	m.mu.Unlock()
	if oldest != nil {
		oldest.discard()
	}
}
