package runs

import (
	"bytes"
	"context"
	"errors"
	"time"

	"nectar/targets"
)

// How a run's record and params reach the store, and what happens once the final record is
// there: the run is remembered for the reads that follow and retired; a final record the
// store refused is retried until it lands.

// remember puts a run's stored final record in the record cache: status reads of a run this
// server has just executed need no decode. The run no longer changes: its tasks are shared.
// A big run's is left to its first reader: kept for every fan-in this server executes, they
// would hold memory that few reads use (a read decodes it once, then it is cached).
//
// It is kept as the version the write stored (written), not as one a stat finds now: another
// server may have rewritten the record meanwhile (a forced rerun of the key there), and its
// version would be answered with this run. A store that cannot say what it stored (neither
// targets.Volatile nor targets.InfoPutter) leaves the record to its first reader.
func (m *Manager) remember(r *Run, written targets.Info) {
	if written.ETag == "" && written.ModTime.IsZero() { // (a size alone tells no version)
		return
	}
	r.mu.Lock()
	if len(r.rec.Tasks) > rememberTasks {
		r.mu.Unlock()
		return
	}
	rec := r.rec
	rec.Previous = append([]PastRun(nil), r.rec.Previous...)
	mt := r.meter
	r.mu.Unlock()
	if mt != nil {
		m := mt.withoutSamples()
		rec.Metrics = &m
	}
	m.records.put(rec.Key, written, rec)
}

// rememberTasks is the most tasks a run may have for remember to cache its record.
const rememberTasks = 1000

// retire removes a run whose record is stored: status queries now read the store.
func (m *Manager) retire(r *Run) {
	m.mu.Lock()
	if m.active[r.rec.Key] == r {
		delete(m.active, r.rec.Key)
	}
	m.mu.Unlock()
	close(r.retired)
}

// persistLater retries the final record with backoff until it lands or the server stops; the
// run stays answerable from memory until then.
func (m *Manager) persistLater(r *Run, leased bool) {
	defer m.wg.Done()
	defer m.retire(r)
	wait := time.Second
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-time.After(wait):
		}
		if _, err := m.recordWriter(leased)(context.Background(), r); err == nil {
			r.changed()
			if leased {
				m.releaseLease(r)
			}
			return
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// putRecord stores the run's record as it is now, and returns the version stored where the
// store can tell (targets.Volatile, targets.InfoPutter; zero otherwise).
func (m *Manager) putRecord(ctx context.Context, r *Run) (targets.Info, error) {
	key := r.Key() + "/" + RecordName
	if v, ok := m.cfg.Store.(targets.Volatile); ok {
		return v.WriteVolatile(key, r.encode)
	}
	var buf bytes.Buffer
	if err := r.encode(&buf); err != nil {
		return targets.Info{}, err
	}
	if ip, ok := m.cfg.Store.(targets.InfoPutter); ok {
		return ip.PutInfo(ctx, key, &buf)
	}
	return targets.Info{}, m.cfg.Store.Put(ctx, key, &buf)
}

// recordWriter is how a run's final record is stored: in place of the key's record by a run
// that held the key's lease (putRecord), else only where the key has none (putRecordIfAbsent).
func (m *Manager) recordWriter(leased bool) func(context.Context, *Run) (targets.Info, error) {
	if leased {
		return m.putRecord
	}
	return m.putRecordIfAbsent
}

// putRecordIfAbsent stores the record of a run that never held its key's lease (it could not
// be taken: the store failed, or the run was cancelled first) only if the key has no record.
// The key's record is not this run's to replace: it may be another server's live run's, or
// the run before's with its history (which this run never read), and a record retried until
// the store came back (persistLater) could land over a later run's. Where the key has one, the
// run's end is told by its answers and the run history alone; nothing is written, and the
// returned Info is zero.
func (m *Manager) putRecordIfAbsent(ctx context.Context, r *Run) (targets.Info, error) {
	key := r.Key() + "/" + RecordName
	var buf bytes.Buffer
	if err := r.encode(&buf); err != nil {
		return targets.Info{}, err
	}
	if buf.Len() > targets.MaxCreateSize { // (params near the body limit): refused every time, never retried
		m.cfg.Logger.Warn("the record of a run that never held its key's lease is too big to create; not stored", "key", r.Key(), "run_id", r.ID(), "bytes", buf.Len())
		return targets.Info{}, nil
	}
	err := m.cfg.Store.CreateIfAbsent(ctx, key, &buf)
	if errors.Is(err, targets.ErrExist) {
		m.cfg.Logger.Warn("a run that never held its key's lease leaves the key's record as it is", "key", r.Key(), "run_id", r.ID())
		return targets.Info{}, nil
	}
	return targets.Info{}, err
}

// PutParams stores key's params (the canonical JSON), as a run does when it starts.
func (m *Manager) PutParams(ctx context.Context, key string, canon []byte) error {
	return m.putMeta(ctx, key+"/"+ParamsName, canon)
}

// putMeta stores a small derived object (a record, params, metrics, a lease): atomically, and
// without waiting for the disk where the store allows it (targets.Volatile).
func (m *Manager) putMeta(ctx context.Context, key string, b []byte) error {
	if v, ok := m.cfg.Store.(targets.Volatile); ok {
		return v.PutVolatile(key, b)
	}
	return m.cfg.Store.Put(ctx, key, bytes.NewReader(b))
}
