package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// WorkersBucket is the JetStream key-value bucket where workers say who they are and what
// they do, one key per worker, rewritten at each heartbeat (what Flower showed of Celery).
const WorkersBucket = "NECTAR_WORKERS"

// workerEntryAge is how long an entry outlives its worker's last heartbeat: a worker that
// vanished is listed (lost) for that long, then forgotten.
const workerEntryAge = 24 * time.Hour

// ErrNoWorker is a worker id the registry does not hold.
var ErrNoWorker = errors.New("no such worker")

// Registry is the workers bucket.
type Registry struct{ kv jetstream.KeyValue }

// Registry opens the workers bucket, making it on first use.
func (q *Queue) Registry(ctx context.Context) (*Registry, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.registry != nil {
		return q.registry, nil
	}
	cfg := jetstream.KeyValueConfig{
		Bucket:      WorkersBucket,
		Description: "Nectar workers: who they are, what they serve and do, when last heard of",
		History:     1,
		TTL:         workerEntryAge,
		Replicas:    q.cfg.Replicas,
	}
	// As Open does: a cluster that has a node restarting may not place the bucket's replicas
	// for a moment.
	var kv jetstream.KeyValue
	err := q.patiently(ctx, time.Now().Add(openPatience), "the workers bucket cannot be opened yet", func() (err error) {
		kv, err = q.js.CreateOrUpdateKeyValue(ctx, cfg)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("opening the JetStream bucket %s: %w", WorkersBucket, err)
	}
	q.registry = &Registry{kv: kv}
	return q.registry, nil
}

// Put stores worker id's entry.
func (r *Registry) Put(ctx context.Context, id string, entry []byte) error {
	_, err := r.kv.Put(ctx, id, entry)
	return err
}

// Entry is a worker's entry, and when the cluster stored it (one clock for every worker: a
// worker host's own clock may be off).
type Entry struct {
	Value   []byte
	Written time.Time
}

// Get is worker id's entry.
func (r *Registry) Get(ctx context.Context, id string) (Entry, error) {
	e, err := r.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
		return Entry{}, fmt.Errorf("worker %q: %w", id, ErrNoWorker)
	}
	if err != nil {
		return Entry{}, err
	}
	return Entry{Value: e.Value(), Written: e.Created()}, nil
}

// All is every worker's entry.
func (r *Registry) All(ctx context.Context) ([]Entry, error) {
	ids, err := r.kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, id := range ids {
		e, err := r.Get(ctx, id)
		if errors.Is(err, ErrNoWorker) { // deleted since the listing
			continue
		}
		if err != nil { // a list missing workers would show them gone: say it could not be read
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}
