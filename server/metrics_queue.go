package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"nectar/server/queue"
	"nectar/server/runs"
)

// queueCollector reads the task queue and the workers bucket when /metrics is scraped: what an
// autoscaler (or an alert) needs to see the cluster from any API server. Depths come from
// JetStream itself, so every server reports the same numbers, whichever drives the runs.
type queueCollector struct {
	q       *queue.Queue
	m       *runs.Manager
	pending *prometheus.Desc
	flight  *prometheus.Desc
	workers *prometheus.Desc
	errs    prometheus.Counter
}

// Metric names of the queue; tools/deploy names them too (a test keeps both in step).
const (
	metricPending  = "nectar_queue_messages_pending"
	metricInFlight = "nectar_queue_messages_in_flight"
	metricWorkers  = "nectar_workers"
)

// workerStates are listed even at zero, so a dashboard's series do not vanish.
var workerStates = []string{runs.WorkerRunning, runs.WorkerDraining, runs.WorkerDrained, runs.WorkerStopped, runs.WorkerLost}

func newQueueCollector(q *queue.Queue, m *runs.Manager) *queueCollector {
	return &queueCollector{q: q, m: m,
		pending: prometheus.NewDesc(metricPending,
			"Messages waiting in a queue for a worker (each one task, a batch of a run's ready tasks, or a graph request of a run with no worker yet): the consumer's lag, what workers scale on.", []string{"queue"}, nil),
		flight: prometheus.NewDesc(metricInFlight,
			"Messages delivered to a worker of a queue and not yet acknowledged.", []string{"queue"}, nil),
		workers: prometheus.NewDesc(metricWorkers,
			"Workers in the workers bucket, by state (lost: not heard of for three heartbeats).", []string{"state"}, nil),
		errs: prometheus.NewCounter(prometheus.CounterOpts{Name: "nectar_queue_scrape_errors_total",
			Help: "Scrapes of /metrics that could not read the task queue or the workers bucket (those series are then missing)."}),
	}
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pending
	ch <- c.flight
	ch <- c.workers
	c.errs.Describe(ch)
}

// scrapeTimeout bounds the JetStream requests of one scrape: a slow cluster makes the queue's
// series go missing (and counts an error) rather than hang the scrape.
const scrapeTimeout = 3 * time.Second

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	if depths, err := c.q.Depths(ctx); err == nil {
		for _, d := range depths {
			ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(d.Pending), d.Queue)
			ch <- prometheus.MustNewConstMetric(c.flight, prometheus.GaugeValue, float64(d.InFlight), d.Queue)
		}
	} else {
		c.errs.Inc()
	}
	if ws, err := c.m.Workers(ctx); err == nil {
		count := map[string]int{}
		for _, w := range ws {
			count[w.State]++
		}
		for _, s := range workerStates {
			ch <- prometheus.MustNewConstMetric(c.workers, prometheus.GaugeValue, float64(count[s]), s)
		}
	} else {
		c.errs.Inc()
	}
	c.errs.Collect(ch)
}
