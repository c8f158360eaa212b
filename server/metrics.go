package server

import (
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"nectar/server/runs"
)

// promMetrics is what GET /metrics exposes (Prometheus text format, names prefixed nectar_).
// It is the run manager's Observer; gauges read the manager when scraped.
type promMetrics struct {
	registry      *prometheus.Registry
	runs          *prometheus.CounterVec
	runDuration   *prometheus.HistogramVec
	launches      *prometheus.CounterVec
	launchLatency *prometheus.HistogramVec
	storeErrors   *prometheus.CounterVec
	historyErrors prometheus.Counter
}

func newPromMetrics() *promMetrics {
	p := &promMetrics{
		registry: prometheus.NewRegistry(),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nectar_runs_total", Help: "Runs ended, by task and final status.",
		}, []string{"type", "chain", "task", "status"}),
		runDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "nectar_run_duration_seconds", Help: "Run duration from submission to end, by chain and final status.",
			Buckets: []float64{.005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600},
		}, []string{"type", "chain", "status"}),
		launches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nectar_plugin_launches_total", Help: "Plugin processes started, by chain type and result.",
		}, []string{"type", "result"}),
		launchLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "nectar_plugin_launch_seconds", Help: "Time to start a plugin process and connect to it.",
			Buckets: []float64{.002, .005, .01, .015, .02, .03, .05, .1, .25, 1},
		}, []string{"type"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nectar_store_errors_total", Help: "Failures of the target store, by where they happened (run, api).",
		}, []string{"where"}),
	}
	p.historyErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "nectar_history_errors_total", Help: "Failed or dropped writes of the run history (the runs themselves are not affected)."})
	p.registry.MustRegister(p.historyErrors)
	p.registry.MustRegister(p.runs, p.runDuration, p.launches, p.launchLatency, p.storeErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return p
}

// watch registers the gauges that read the run manager at scrape time.
func (p *promMetrics) watch(m *runs.Manager) {
	p.registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "nectar_queue_depth", Help: "Runs waiting for a slot."},
			func() float64 { return float64(m.QueueDepth()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "nectar_runs_running", Help: "Runs executing now."},
			func() float64 { return float64(m.Running()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "nectar_warm_plugins", Help: "Plugin processes started ahead of need, waiting for a run."},
			func() float64 { return float64(m.WarmSpares()) }),
	)
}

func (p *promMetrics) handler() echo.HandlerFunc {
	return echo.WrapHandler(promhttp.HandlerFor(p.registry, promhttp.HandlerOpts{}))
}

func (p *promMetrics) RunFinished(typ, chain, task string, status runs.Status, elapsed time.Duration) {
	p.runs.WithLabelValues(typ, chain, task, string(status)).Inc()
	p.runDuration.WithLabelValues(typ, chain, string(status)).Observe(elapsed.Seconds())
}

func (p *promMetrics) PluginLaunched(typ string, latency time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	} else {
		p.launchLatency.WithLabelValues(typ).Observe(latency.Seconds())
	}
	p.launches.WithLabelValues(typ, result).Inc()
}

func (p *promMetrics) StoreError(where string) { p.storeErrors.WithLabelValues(where).Inc() }

// HistoryError counts a failed or dropped write of the run history.
func (p *promMetrics) HistoryError() { p.historyErrors.Inc() }
