package history

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// Index is the write side in front of a Driver: runs report changes with Changed and POSTs
// count with Hit, both at the cost of a map update; a background loop writes what changed
// every FlushInterval, one transaction per batch. A run never waits for the database, and a
// failing write is logged, counted (OnError) and retried with the next batch, never returned to
// the run: the index can always be rebuilt from the store.
type Index struct {
	d       Driver
	log     *slog.Logger
	onError func()

	mu      sync.Mutex
	changed map[string]func() Entry // run id -> the run's current state, read at flush time
	hits    map[string]int64        // key -> POSTs since the last flush
	flushMu sync.Mutex              // one flush at a time

	stop    chan struct{}
	stopped chan struct{}

	counts counts // CountByStatus's answers
}

// FlushInterval is how often changes reach the database: the lag of the runs list behind the
// runs, and the rate of writes whatever the rate of changes.
const FlushInterval = 200 * time.Millisecond

// maxPending bounds what waits for a database that keeps failing; beyond it, changes are
// dropped (and counted): the index is rebuilt from the store when it matters.
const maxPending = 100_000

// NewIndex starts the write loop. onError is called once per failed write (for /metrics).
func NewIndex(d Driver, log *slog.Logger, onError func()) *Index {
	if onError == nil {
		onError = func() {}
	}
	ix := &Index{d: d, log: log, onError: onError, changed: map[string]func() Entry{}, hits: map[string]int64{},
		stop: make(chan struct{}), stopped: make(chan struct{})}
	go ix.loop()
	return ix
}

// Driver is the database behind the index (for reads).
func (ix *Index) Driver() Driver { return ix.d }

// Changed notes that run runID changed; state is called at the next flush for its state then
// (so a run changing a thousand times between flushes costs one row write).
func (ix *Index) Changed(runID string, state func() Entry) {
	ix.mu.Lock()
	if len(ix.changed) < maxPending {
		ix.changed[runID] = state
	} else if _, ok := ix.changed[runID]; ok {
		ix.changed[runID] = state
	} else {
		ix.mu.Unlock()
		ix.onError()
		return
	}
	ix.mu.Unlock()
}

// Hit counts one POST that joined the latest run of key or found its out done.
func (ix *Index) Hit(key string) {
	ix.mu.Lock()
	if len(ix.hits) < maxPending || ix.hits[key] > 0 {
		ix.hits[key]++
	}
	ix.mu.Unlock()
}

func (ix *Index) loop() {
	defer close(ix.stopped)
	t := time.NewTicker(FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ix.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := ix.Flush(ctx); err != nil {
				ix.log.Warn("run history: write failed; retrying with the next batch", "db", ix.d.Name(), "err", err)
			}
			cancel()
		}
	}
}

// Flush writes what changed since the last flush. Entries that fail are kept for the next one
// (unless a newer change replaced them meanwhile).
func (ix *Index) Flush(ctx context.Context) error {
	ix.flushMu.Lock()
	defer ix.flushMu.Unlock()
	ix.mu.Lock()
	changed, hits := ix.changed, ix.hits
	ix.changed, ix.hits = map[string]func() Entry{}, map[string]int64{}
	ix.mu.Unlock()
	if len(changed) == 0 && len(hits) == 0 {
		return nil
	}
	entries := make([]Entry, 0, len(changed))
	for _, state := range changed {
		entries = append(entries, state())
	}
	hitList := make([]Hit, 0, len(hits))
	for k, n := range hits {
		hitList = append(hitList, Hit{Key: k, N: n})
	}
	// Rows first: a hit on a run written in this batch finds it.
	err := ix.d.Upsert(ctx, entries)
	if err == nil {
		err = ix.d.AddHits(ctx, hitList)
		if err != nil {
			ix.requeue(nil, hits)
		}
	} else {
		ix.requeue(changed, hits)
	}
	if err != nil {
		ix.onError()
	}
	return err
}

func (ix *Index) requeue(changed map[string]func() Entry, hits map[string]int64) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for id, state := range changed {
		if _, newer := ix.changed[id]; !newer && len(ix.changed) < maxPending {
			ix.changed[id] = state
		}
	}
	for k, n := range hits {
		ix.hits[k] += n
	}
}

// Close writes what is pending and stops the loop; the driver stays open (its owner closes it).
func (ix *Index) Close(ctx context.Context) error {
	select {
	case <-ix.stop:
		return errors.New("run history: closed twice")
	default:
	}
	close(ix.stop)
	<-ix.stopped
	return ix.Flush(ctx)
}
