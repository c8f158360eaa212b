package runs

import (
	"context"
	"encoding/json"
	"io"
	"sync"
	"sync/atomic"

	"nectar/targets"
)

// A run: one execution of a task and whatever it requires, with its record as it changes.

// Spec names the task a run is for.
type Spec struct {
	Type, Chain, Task string
	Params            []byte // canonical JSON
	// Force reruns the task even if its out exists (its upstream outs are kept).
	Force bool
	// Trigger says how the run was started (api, cli, ui, schedule, backfill); recorded with it.
	Trigger string
}

// Run is one execution of a task and whatever it requires.
type Run struct {
	mu     sync.Mutex
	rec    Record
	done   chan struct{}
	cancel context.CancelCauseFunc
	force  bool
	remote bool   // another server executes it; this one follows (guarded by mu)
	meter  *meter // set when it starts executing here (guarded by mu)
	// retired is closed when the run has left the active set (its record is stored). Only
	// when the store is down does done come first; a new POST of the key then waits a little
	// for retired, so it starts a new run rather than join this finished one.
	retired chan struct{}
	left    bool // no longer counted as pending (guarded by Manager.mu)
	// lease is the version of the run's lease this server wrote last (Replacer stores): set
	// when taken, then by the heartbeat, then read at release, each after the other.
	lease targets.Info
	// leaseLost is set when another server took the key over: the run stops and writes nothing.
	leaseLost atomic.Bool
	// owned is set once this server holds the run's lease: from then on changes are reported
	// to onChange (guarded by mu).
	owned    bool
	onChange func(*Run)
	ver      uint64 // counts changes (guarded by mu): the recorder writes when it moved

	// planned is closed once the run's task graph was checked, or the run ended without one;
	// queued once it waits for a slot. refusal says why the graph was refused (set before
	// planned is closed).
	planned, queued     chan struct{}
	planOnce, queueOnce sync.Once
	refusal             error
}

// AwaitPlan waits until the run's task graph has been checked, or the run waits in the queue
// for a slot (then the check comes later), or ctx ends. It returns the refusal of a graph over
// the limit (ErrGraphTooLarge), so a POST can answer 400 rather than accept the run.
func (r *Run) AwaitPlan(ctx context.Context) error {
	select {
	case <-r.planned:
		return r.refusal
	case <-r.queued:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Run) markPlanned(refusal error) {
	r.planOnce.Do(func() { r.refusal = refusal; close(r.planned) })
}

func (r *Run) markQueued() { r.queueOnce.Do(func() { close(r.queued) }) }

// version counts the changes of the run's record so far.
func (r *Run) version() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ver
}

// Snapshot is the current record, with the metrics so far (samples are in the metrics object).
func (r *Run) Snapshot() Record {
	r.mu.Lock()
	rec, mt := r.rec.clone(), r.meter
	r.mu.Unlock()
	if mt != nil {
		m := mt.withoutSamples()
		rec.Metrics = &m
	}
	return rec
}

// View is the run's record without its tasks and a window on them (Record.Page): what a status
// answer needs, without copying a big run's every task.
func (r *Run) View(from, limit int) (Record, TaskPage) {
	r.mu.Lock()
	h, page, mt := r.rec.Header(), r.rec.Page(from, limit), r.meter
	r.mu.Unlock()
	if mt != nil {
		m := mt.withoutSamples()
		h.Metrics = &m
	}
	return h, page
}

// Summary is the run's record without its tasks, their counts and the progress it shows (what
// the run history keeps of it), read without copying the tasks.
func (r *Run) Summary() (Record, TaskCounts, *Progress) {
	r.mu.Lock()
	h, counts, pr := r.rec.Header(), r.rec.Counts(), r.rec.Progress()
	mt := r.meter
	r.mu.Unlock()
	if mt != nil {
		m := mt.withoutSamples()
		m.Tasks = nil
		h.Metrics = &m
	}
	if pr != nil {
		c := *pr
		pr = &c
	}
	return h, counts, pr
}

// metrics is the full metrics object (nil if the run did not execute here).
// meterOf is the run's meter (nil before it executes here).
func (r *Run) meterOf() *meter {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.meter
}

func (r *Run) metrics() *Metrics {
	r.mu.Lock()
	mt := r.meter
	r.mu.Unlock()
	if mt == nil {
		return nil
	}
	m := mt.snapshot()
	return &m
}

// Done is closed when the run has ended and its record is stored.
func (r *Run) Done() <-chan struct{} { return r.done }

func (r *Run) update(f func(*Record)) {
	r.mu.Lock()
	f(&r.rec)
	r.ver++
	notify := r.owned && r.onChange != nil
	r.mu.Unlock()
	if notify {
		r.onChange(r)
	}
}

// changed reports the run's current state again (after a change outside its record, such as
// the final usage figures).
func (r *Run) changed() { r.update(func(*Record) {}) }

// own marks the run as executed here: its changes are reported from now on, this one first.
func (r *Run) own() {
	r.update(func(*Record) { r.owned = true })
}

// Key is the run's key.
func (r *Run) Key() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rec.Key
}

// taskCount is the number of tasks in the run's record.
func (r *Run) taskCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.rec.Tasks)
}

// encodeChunk is how many tasks encode copies at a time under the run's lock (64 KB of them:
// each record write of a big run copied 250 KB at a time before); encodeFlush is how much JSON
// it holds before writing it (one small buffer, whatever the run's size).
const (
	encodeChunk = 256
	encodeFlush = 32 << 10
)

// encodeBufs holds encode's buffers: a new one per record write was 36 KB of garbage each
// time, three times per trivial run, whatever the record's size.
var encodeBufs = sync.Pool{New: func() any { b := make([]byte, 0, encodeBufSize); return &b }}

const encodeBufSize = encodeFlush + 4<<10

// encode writes the run's record as JSON, its tasks a chunk at a time: a run of 50,000 tasks is
// neither copied whole (the scheduler would wait on the lock) nor encoded into one buffer (it
// is 15 MB). A record written while the run executes is a moment's picture anyway; the final
// one is written once every task has ended.
func (r *Run) encode(w io.Writer) error {
	r.mu.Lock()
	h, n, mt := r.rec.Header(), len(r.rec.Tasks), r.meter
	r.mu.Unlock()
	if mt != nil {
		m := mt.withoutSamples()
		h.Metrics = &m
	}
	b, err := json.Marshal(h) // without tasks: they follow
	if err != nil {
		return err
	}
	if _, err := w.Write(b[:len(b)-1]); err != nil {
		return err
	}
	if n > 0 {
		io.WriteString(w, `,"tasks":[`)
		bp := encodeBufs.Get().(*[]byte)
		buf := (*bp)[:0]
		defer func() {
			if cap(buf) <= 2*encodeBufSize { // not one a huge task grew
				*bp = buf[:0]
				encodeBufs.Put(bp)
			}
		}()
		for from := 0; from < n; from += encodeChunk {
			r.mu.Lock()
			chunk := cloneTasks(r.rec.Tasks[from:min(from+encodeChunk, len(r.rec.Tasks))])
			r.mu.Unlock()
			for i := range chunk {
				if from+i > 0 {
					buf = append(buf, ',')
				}
				if buf, err = chunk[i].appendJSON(buf, true); err != nil {
					return err
				}
				if len(buf) >= encodeFlush || i == len(chunk)-1 {
					if _, err := w.Write(buf); err != nil {
						return err
					}
					buf = buf[:0]
				}
			}
		}
		io.WriteString(w, "]")
	}
	_, err = io.WriteString(w, "}")
	return err
}

// Ended reports whether the run has its final status (its record may not be stored yet).
func (r *Run) Ended() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rec.Status.Final()
}

// ID is the run's id.
func (r *Run) ID() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rec.RunID
}
