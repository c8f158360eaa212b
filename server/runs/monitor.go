package runs

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/shirou/gopsutil/v4/process"

	"nectar/plugins"
)

// Pricing turns usage into money, after AWS Fargate's model: a price per vCPU-hour and a price
// per GB-hour of memory. Nectar bills the CPU actually used (CPU seconds, not a reservation)
// and the peak resident memory held for the whole wall time of the run (or isolated task).
type Pricing struct {
	VCPUHour float64 `json:"vcpu_hour_usd"`
	GBHour   float64 `json:"gb_hour_usd"`
}

// DefaultPricing is Fargate's Linux/x86 on-demand price in us-east-1.
var DefaultPricing = Pricing{VCPUHour: 0.04048, GBHour: 0.004445}

// Cost is the price of cpuSeconds of CPU and peakRSS bytes held for wall.
func (p Pricing) Cost(cpuSeconds float64, peakRSS uint64, wall time.Duration) float64 {
	return cpuSeconds/3600*p.VCPUHour + float64(peakRSS)/(1<<30)*wall.Hours()*p.GBHour
}

// Usage is what a run, or an isolated task, consumed.
type Usage struct {
	CPUSeconds   float64 `json:"cpu_seconds"`
	PeakRSSBytes uint64  `json:"peak_rss_bytes"`
	WallSeconds  float64 `json:"wall_seconds"`
	CostUSD      float64 `json:"cost_usd"`
}

// Sample is one reading of one plugin process (and its children).
type Sample struct {
	At         time.Time `json:"t"`
	PID        int       `json:"pid"`
	CPUPercent float64   `json:"cpu_percent"`
	RSSBytes   uint64    `json:"rss_bytes"`
}

// TaskMetrics are a task's own figures: usage when it ran in a process of its own, and what
// its DefineMetrics returned last.
type TaskMetrics struct {
	Usage  *Usage          `json:"usage,omitempty"`
	Custom json.RawMessage `json:"custom,omitempty"`
	Error  string          `json:"custom_error,omitempty"`
}

// Metrics is the `metrics` object stored under a run's key; the status answer shows it too.
type Metrics struct {
	Interval  string                 `json:"interval"`
	Pricing   Pricing                `json:"pricing"`
	Summary   Usage                  `json:"summary"`
	Processes int                    `json:"processes"`
	Samples   []Sample               `json:"samples,omitempty"`
	Tasks     map[string]TaskMetrics `json:"tasks,omitempty"` // by task key
}

// meter collects one run's metrics from every process it starts.
type meter struct {
	interval time.Duration
	pricing  Pricing
	started  time.Time

	mu      sync.Mutex
	stopped time.Time // the run's finish; zero while it runs
	m       Metrics
	cpu     float64 // CPU seconds of processes that have ended (exact, from rusage)
	running map[int]float64
	gone    map[int]bool // processes whose final figure is in cpu (no sample may add to it)
	// lanes are the run's usage on workers (the queue path), by lane, as last reported.
	lanes map[string]laneMetrics
}

// laneReport takes a worker's report of one of the run's lanes there: its usage so far, and
// the samples it took since its last report.
func (mt *meter) laneReport(lane string, lm *laneMetrics) {
	mt.mu.Lock()
	defer mt.mu.Unlock()
	if mt.lanes == nil {
		mt.lanes = map[string]laneMetrics{}
	}
	prev := mt.lanes[lane]
	mt.m.Samples = append(mt.m.Samples, lm.Samples...)
	mt.lanes[lane] = laneMetrics{CPUSeconds: max(prev.CPUSeconds, lm.CPUSeconds), PeakRSS: max(prev.PeakRSS, lm.PeakRSS), Processes: max(prev.Processes, lm.Processes)}
	for k, v := range lm.Tasks {
		mt.m.Tasks[k] = v
	}
}

func newMeter(interval time.Duration, pricing Pricing) *meter {
	return &meter{interval: interval, pricing: pricing, started: time.Now(),
		m: Metrics{Interval: interval.String(), Pricing: pricing, Tasks: map[string]TaskMetrics{}}, running: map[int]float64{}, gone: map[int]bool{}}
}

// watch samples p every interval until stop is closed; onSample runs after each reading (the
// scheduler uses it to ask running tasks for their custom metrics).
// base is the CPU the process had used before this run took it (a reused process).
func (mt *meter) watch(p Process, base float64, stop <-chan struct{}, onSample func(Sample)) {
	pid := p.Pid()
	mt.mu.Lock()
	mt.m.Processes++
	delete(mt.gone, pid) // a process this run gave back to the pool and took again
	mt.mu.Unlock()
	t := time.NewTicker(mt.interval)
	defer t.Stop()
	lastCPU := base
	lastAt := time.Now()
	// Made at the first sample: most runs end before it, and making one reads the process's
	// start time from /proc (about 0.1 ms, for every run otherwise).
	var proc *process.Process
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			if proc == nil {
				var err error
				if proc, err = process.NewProcess(int32(pid)); err != nil {
					return
				}
			}
			cpu, rss, ok := readTree(proc)
			if !ok {
				return
			}
			s := Sample{At: now.UTC(), PID: pid, RSSBytes: rss}
			if dt := now.Sub(lastAt).Seconds(); dt > 0 {
				s.CPUPercent = (cpu - lastCPU) / dt * 100
			}
			lastCPU, lastAt = cpu, now
			mt.mu.Lock()
			select {
			case <-stop: // retired while this sample was taken (the pid may be watched again)
				mt.mu.Unlock()
				return
			default:
			}
			if mt.gone[pid] { // ended while this sample was taken: its final figure stands
				mt.mu.Unlock()
				return
			}
			mt.m.Samples = append(mt.m.Samples, s)
			mt.running[pid] = max(cpu-base, 0)
			mt.m.Summary.PeakRSSBytes = max(mt.m.Summary.PeakRSSBytes, rss)
			mt.mu.Unlock()
			if onSample != nil {
				onSample(s)
			}
		}
	}
}

// readTree reads CPU seconds (counted as statCPU does) and RSS of a process and its live
// children.
func readTree(p *process.Process) (cpuSeconds float64, rss uint64, ok bool) {
	cpuSeconds, ok = statCPU(int(p.Pid))
	if !ok {
		return 0, 0, false
	}
	mem, err := p.MemoryInfo()
	if err != nil {
		return 0, 0, false
	}
	rss = mem.RSS
	if kids, err := p.Children(); err == nil {
		for _, k := range kids {
			if c, r, ok := readTree(k); ok {
				cpuSeconds, rss = cpuSeconds+c, rss+r
			}
		}
	}
	return cpuSeconds, rss, true
}

// ended adds the usage of a process this run is done with: cpu is what it used during the run
// (CPU seconds), peak its peak RSS in bytes (0: not known). It is read from /proc while the
// process idles (at the run's end, or before it is stopped), or from wait4 once it has exited.
func (mt *meter) ended(pid int, cpu float64, peak uint64) {
	mt.mu.Lock()
	defer mt.mu.Unlock()
	delete(mt.running, pid)
	mt.gone[pid] = true
	mt.cpu += cpu
	mt.m.Summary.PeakRSSBytes = max(mt.m.Summary.PeakRSSBytes, peak)
}

// idleUsage reads a live process's CPU seconds (with its reaped children's, as wait4 counts
// them), its peak resident memory (the kernel's high-water mark, VmHWM) and its resident
// memory now, from two small files of /proc.
func idleUsage(pid int) (cpu float64, peak, rss uint64, ok bool) {
	u, ok := plugins.ReadUsage(pid)
	return u.CPUSeconds, u.PeakRSS, u.RSS, ok
}

// statCPU is the CPU seconds pid used, with those of the children it has reaped, from
// /proc/<pid>/stat. Samples and the figures at a run's start and end all count this way, so a
// reused process's usage is a plain difference.
func statCPU(pid int) (float64, bool) { return plugins.CPUSeconds(pid) }

// setTask records an isolated task's usage or custom metrics.
func (mt *meter) setTask(key string, f func(*TaskMetrics)) {
	mt.mu.Lock()
	defer mt.mu.Unlock()
	tm := mt.m.Tasks[key]
	f(&tm)
	mt.m.Tasks[key] = tm
}

// snapshot is the metrics so far (final once every process has ended).
// stop ends the run's wall time at at (its finish): the cost no longer grows with every later
// snapshot, so the record, the status answer and the run history all show one figure.
func (mt *meter) stop(at time.Time) {
	mt.mu.Lock()
	if mt.stopped.IsZero() {
		mt.stopped = at
	}
	mt.mu.Unlock()
}

func (mt *meter) snapshot() Metrics {
	m, _ := mt.read(0)
	return m
}

// withoutSamples is snapshot without the samples: what a record, a status answer and a run
// page carry. Copying them to drop them cost every read of a long run's status the whole
// series (16 processes sampled every second for 6 hours: 345,000 samples).
func (mt *meter) withoutSamples() Metrics {
	m, _ := mt.read(-1)
	return m
}

// read is the metrics so far with the samples from the from-th on (none if from < 0), and how
// many samples there are in all.
func (mt *meter) read(from int) (Metrics, int) {
	mt.mu.Lock()
	defer mt.mu.Unlock()
	m := mt.m
	m.Samples = nil
	total := len(mt.m.Samples)
	if from >= 0 && from < total {
		m.Samples = append([]Sample(nil), mt.m.Samples[from:]...)
	}
	m.Tasks = make(map[string]TaskMetrics, len(mt.m.Tasks))
	for k, v := range mt.m.Tasks {
		m.Tasks[k] = v
	}
	cpu := mt.cpu
	for _, c := range mt.running { // still running: the last reading
		cpu += c
	}
	for _, l := range mt.lanes {
		cpu += l.CPUSeconds
		m.Summary.PeakRSSBytes = max(m.Summary.PeakRSSBytes, l.PeakRSS)
		m.Processes += l.Processes
	}
	wall := time.Since(mt.started)
	if !mt.stopped.IsZero() {
		wall = mt.stopped.Sub(mt.started)
	}
	m.Summary.CPUSeconds = cpu
	m.Summary.WallSeconds = wall.Seconds()
	m.Summary.CostUSD = mt.pricing.Cost(cpu, m.Summary.PeakRSSBytes, wall)
	return m, total
}

// customMetrics asks a running task for its metrics and keeps the answer for the next call.
func (l *lane) customMetrics(proc Process, job *taskJob, sample Sample, started time.Time) {
	var prev json.RawMessage
	l.meter.mu.Lock()
	prev = l.meter.m.Tasks[job.Key].Custom
	l.meter.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), l.m.cfg.MonitorInterval)
	defer cancel()
	resp, err := proc.Metrics(ctx, &plugins.MetricsRequest{Task: job.Ref, CPUPercent: sample.CPUPercent,
		RSSBytes: sample.RSSBytes, Elapsed: time.Since(started), Previous: prev})
	l.meter.setTask(job.Key, func(tm *TaskMetrics) {
		switch {
		case err != nil:
			tm.Error = rpcMessage(err)
		case resp.Error != "":
			tm.Error = resp.Error
		default:
			tm.Custom, tm.Error = resp.Value, ""
		}
	})
}
