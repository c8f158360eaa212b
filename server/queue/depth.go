package queue

import (
	"context"
	"fmt"
	"sort"
	"strings"
)

// Depth is what one queue holds: tasks (and graph requests) not yet delivered to a worker, and
// those delivered and not yet acknowledged. Pending is what an autoscaler scales workers on
// (KEDA's nats-jetstream scaler reads the same consumer's lag from the monitoring endpoint).
type Depth struct {
	Queue    string
	Pending  uint64
	InFlight int
}

// Depths lists every queue that has a consumer, by name: one JetStream API request per
// 256 queues, so a scrape of /metrics costs one round trip.
func (q *Queue) Depths(ctx context.Context) ([]Depth, error) {
	lister := q.stream.ListConsumers(ctx)
	var out []Depth
	for info := range lister.Info() {
		name, ok := strings.CutPrefix(info.Name, ConsumerPrefix)
		if !ok {
			continue
		}
		out = append(out, Depth{Queue: name, Pending: info.NumPending, InFlight: info.NumAckPending})
	}
	if err := lister.Err(); err != nil {
		return nil, fmt.Errorf("listing the consumers of %s: %w", TasksStream, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Queue < out[j].Queue })
	return out, nil
}
