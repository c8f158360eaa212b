package runs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"nectar/server/queue"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/shirou/gopsutil/v4/process"
)

// The worker monitor (what Flower was to Celery): each worker writes who it is and what it
// does to the workers bucket (queue.Registry) at every heartbeat; any API server lists them.
// A worker not heard of for lostAfter heartbeats is shown lost, never running forever.

// WorkerInfo is a worker's entry in the registry, as GET /api/workers shows it.
type WorkerInfo struct {
	ID      string   `json:"id"`
	Host    string   `json:"host"`
	PID     int      `json:"pid"`
	Version string   `json:"version"`
	Queues  []string `json:"queues"`
	Slots   int      `json:"slots"`
	// Running is the tasks it executes or commits now; Done and Failed count the tasks it
	// finished since it started.
	Running    int       `json:"running"`
	Done       int64     `json:"done"`
	Failed     int64     `json:"failed"`
	CPUPercent float64   `json:"cpu_percent"` // of one core, over the last heartbeat
	RSSBytes   uint64    `json:"rss_bytes"`
	StartedAt  time.Time `json:"started_at"`
	LastSeen   time.Time `json:"last_seen"`
	// Heartbeat is how often it writes its entry.
	Heartbeat string `json:"heartbeat"`
	// State: running; draining (it takes no new task and finishes those in hand); drained
	// (it holds none and takes none); stopped (it exited); lost (not heard of for
	// lostAfter heartbeats: it died, or lost the cluster).
	State string `json:"state"`
}

// Worker states.
const (
	WorkerRunning  = "running"
	WorkerDraining = "draining"
	WorkerDrained  = "drained"
	WorkerStopped  = "stopped"
	WorkerLost     = "lost"
)

// lostAfter is how many heartbeats a worker may miss before it is shown lost.
const lostAfter = 3

// ErrWorkerLost refuses to drain a worker that is not heard of any more, or does not answer.
var ErrWorkerLost = errors.New("worker lost")

// see sets the state to show of an entry read at now. A lost worker's figures of the moment
// are not shown as its present: the tasks it held go to other workers (after
// NECTAR_TASK_ACK_WAIT), where they are counted, and its process may be gone. Its last RSS
// stays: a worker killed for its memory shows what it had.
func (wi *WorkerInfo) see(now time.Time) {
	wi.State = wi.seenAs(now)
	if wi.State == WorkerLost {
		wi.Running, wi.CPUPercent = 0, 0
	}
}

// seenAs is the state to show of an entry read at now.
func (wi *WorkerInfo) seenAs(now time.Time) string {
	beat, err := time.ParseDuration(wi.Heartbeat)
	if err != nil || beat <= 0 {
		beat = time.Minute
	}
	if wi.State != WorkerStopped && now.Sub(wi.LastSeen) > lostAfter*beat {
		return WorkerLost
	}
	return wi.State
}

// version is this binary's version: its module version, or its commit when built from a
// checkout.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v = strings.TrimPrefix(v+" ", "(devel) ") + s.Value[:12]
		}
	}
	return strings.TrimSpace(v)
}

// beat writes the worker's entry now, in state to ("": the state it is in). A stopped
// worker stays stopped.
func (w *Worker) beat(ctx context.Context, to string) {
	if w.registry == nil {
		return
	}
	w.beatMu.Lock() // one entry written at a time, the last state last
	defer w.beatMu.Unlock()
	w.mu.Lock()
	running := 0
	for _, wl := range w.lanes {
		running += wl.inHand
	}
	if to != "" && w.state != WorkerStopped {
		w.state = to
	}
	state := w.state
	w.mu.Unlock()
	info := WorkerInfo{ID: w.id, Host: w.m.host, PID: os.Getpid(), Version: w.version, Queues: w.cfg.Queues, Slots: w.cfg.Slots,
		Running: running, Done: w.doneTasks.Load(), Failed: w.failedTasks.Load(), StartedAt: w.started, LastSeen: time.Now().UTC(),
		Heartbeat: w.cfg.Heartbeat.String(), State: state}
	if w.self != nil {
		if cpu, ok := statCPU(os.Getpid()); ok {
			now := time.Now()
			if !w.lastBeat.IsZero() {
				info.CPUPercent = (cpu - w.lastCPU) / now.Sub(w.lastBeat).Seconds() * 100
			}
			w.lastCPU, w.lastBeat = cpu, now
		}
		if mem, err := w.self.MemoryInfo(); err == nil {
			info.RSSBytes = mem.RSS
		}
	}
	b, _ := json.Marshal(info)
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second) // a cluster down must not hold a stop long
	defer cancel()
	if err := w.registry.Put(pctx, w.id, b); err != nil {
		w.log.Warn("worker: writing its entry in the workers bucket", "err", err)
	}
}

// heartbeat writes the worker's entry every cfg.Heartbeat until the worker stops.
func (w *Worker) heartbeat() {
	defer close(w.beatDone)
	t := time.NewTicker(w.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-w.beatStop:
			return
		case <-t.C:
			w.beat(context.Background(), "")
		}
	}
}

// openRegistry makes the worker known to the registry and starts its heartbeat.
func (w *Worker) openRegistry(ctx context.Context) error {
	reg, err := w.q.Registry(ctx)
	if err != nil {
		return err
	}
	w.registry, w.version, w.started = reg, version(), time.Now().UTC()
	w.self, _ = process.NewProcess(int32(os.Getpid()))
	w.beat(ctx, WorkerRunning)
	go w.heartbeat()
	return nil
}

// Drain stops the worker taking tasks; the tasks in hand finish. It returns once its entry
// says draining; it says drained when the last task is reported.
func (w *Worker) Drain() {
	w.mu.Lock()
	if w.state != WorkerRunning {
		w.mu.Unlock()
		return
	}
	w.state = WorkerDraining
	w.mu.Unlock()
	w.log.Info("worker: draining: it takes no new task, and finishes those in hand")
	w.unsubscribeGraphs()
	w.stop() // no more pulls; fetched tasks not started go back
	w.beat(context.Background(), "")
	go func() {
		<-w.done           // every task taken from the queue has been reported
		w.hereTasks.Wait() // and every one handed over by a call (none is taken from now on)
		w.beat(context.Background(), WorkerDrained)
		w.log.Info("worker: drained")
	}()
}

// onDrain follows a drain request from an API server of another process.
func (w *Worker) onDrain(msg *nats.Msg) {
	w.Drain()
	msg.Respond(nil)
}

// Workers lists the workers of the registry, each with the state it is seen in now.
func (m *Manager) Workers(ctx context.Context) ([]WorkerInfo, error) {
	reg, err := m.cfg.Queue.Registry(ctx)
	if err != nil {
		return nil, err
	}
	all, err := reg.All(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	out := make([]WorkerInfo, 0, len(all))
	for _, e := range all {
		if wi, err := workerInfo(e); err == nil {
			wi.see(now)
			out = append(out, wi)
		}
	}
	slices.SortFunc(out, func(a, b WorkerInfo) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// DrainWorker asks worker id to drain, and returns its entry as it then is.
func (m *Manager) DrainWorker(ctx context.Context, id string) (WorkerInfo, error) {
	reg, err := m.cfg.Queue.Registry(ctx)
	if err != nil {
		return WorkerInfo{}, err
	}
	e, err := reg.Get(ctx, id)
	if err != nil {
		return WorkerInfo{}, err
	}
	wi, err := workerInfo(e)
	if err != nil {
		return WorkerInfo{}, fmt.Errorf("worker %s: its entry is unreadable: %w", id, err)
	}
	switch wi.seenAs(time.Now()) {
	case WorkerLost, WorkerStopped:
		return WorkerInfo{}, fmt.Errorf("worker %s is %s (last seen %s): nothing to drain: %w", id, wi.seenAs(time.Now()), wi.LastSeen.Format(time.RFC3339), ErrWorkerLost)
	}
	if w := m.localWorker("", id); w != nil {
		w.Drain()
	} else {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := m.cfg.Queue.Conn().RequestWithContext(rctx, workerDrainSubject(id), nil)
		cancel()
		if err != nil { // stopping (no longer listening), frozen, or cut off
			return WorkerInfo{}, fmt.Errorf("worker %s did not answer the drain (%v): it is stopping, or cut off from the cluster: %w", id, err, ErrWorkerLost)
		}
	}
	if e, err := reg.Get(ctx, id); err == nil {
		if again, err := workerInfo(e); err == nil {
			wi = again
		}
	}
	wi.see(time.Now())
	return wi, nil
}

// workerInfo reads an entry; its last_seen is when the cluster stored it.
func workerInfo(e queue.Entry) (WorkerInfo, error) {
	var wi WorkerInfo
	if err := json.Unmarshal(e.Value, &wi); err != nil {
		return wi, err
	}
	wi.LastSeen = e.Written.UTC()
	return wi, nil
}

func workerDrainSubject(id string) string { return "nectar.worker." + id + ".drain" }

// taking reports whether the worker takes work (not draining, drained or stopped).
func (w *Worker) taking() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state == WorkerRunning
}
