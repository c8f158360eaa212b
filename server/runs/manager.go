package runs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"nectar/plugins"
	"nectar/server/queue"
	"nectar/targets"
)

// errStaging marks failures of the server's own staging folder (the spool), as opposed to
// the store's: run records say which of the two failed, never the path.
var errStaging = errors.New("staging folder")

// errStartWrites is what a root task's commit (or publish) meets when its run could not store
// the key's params and first record: drive fails the run and logs why, once.
var errStartWrites = errors.New("its run could not store its params and record")

// Process is a running plugin, as plugins/host provides it.
type Process interface {
	plugins.Runner
	Kill()    // graceful, then the process group; waits for the output to drain
	KillNow() // SIGKILL the process group at once
	Exited() bool
	ExitStatus() string
	Pid() int
	// Usage is the ended process's CPU seconds and peak RSS (0: not known; ok false while it runs).
	Usage() (cpuSeconds float64, peakRSS uint64, ok bool)
}

// Starter launches the plugin of a chain type; everything the process writes is appended to
// output (an O_APPEND file the scheduler slices into task logs). Current reports whether p
// still runs the binary now installed for its type (a warm spare may predate a rebuild).
// Start's error text goes into run records, which status URLs show: it must name no file
// (the starter logs the whole cause itself).
type Starter interface {
	Start(chainType string, output *os.File) (Process, error)
	Current(chainType string, p Process) bool
}

// Config sets up a Manager.
type Config struct {
	// Connection is the value of a named connection (NECTAR_CONN_<NAME>), "" when not
	// configured; a task that declares a connection gets only those it declares.
	Connection      func(name string) string
	Store           targets.Store
	Plugins         Starter
	MaxRuns         int // runs executing at once; more wait as PENDING
	MaxQueue        int // PENDING runs allowed; beyond, Submit answers ErrQueueFull
	TaskParallelism int // tasks of one run executing at once
	// MaxTasks bounds a run's task graph (default 100,000): a larger one is refused
	// (ErrGraphTooLarge), and the plugin stops expanding it there.
	MaxTasks int
	Logger   *slog.Logger
	// WorkerWait is how long a run waits for a worker of its chain type to take its graph
	// request when none listens (the queue path; default 2 minutes).
	WorkerWait time.Duration
	// LeaseTTL is how old a run lease may get before its holder counts as dead (default 30s).
	LeaseTTL time.Duration
	// FollowInterval is how often a server polls a run another server executes (default 250ms).
	FollowInterval time.Duration
	// CancelPoll is how often the server executing a run checks for a cancel request left by
	// another server (default 500ms).
	CancelPoll time.Duration
	// TaskTimeout bounds one attempt of a task that declares no timeout (default 1h).
	TaskTimeout time.Duration
	// MonitorInterval is how often plugin processes are sampled (default 1s, at least 100ms).
	MonitorInterval time.Duration
	// Pricing turns usage into a cost (default DefaultPricing).
	Pricing Pricing
	// Observer receives events for operators' metrics (default: none).
	Observer Observer
	// WarmPlugins keeps one plugin process per chain type started ahead of need, so a run
	// does not wait for exec and handshake (~10 ms).
	WarmPlugins bool
	// OnChange is called after every change of a run this server executes (from the moment it
	// holds the run's lease), with the run; it must return at once (the run history marks the
	// run and reads its Snapshot later, in batches). Runs this server only follows are not
	// reported: their own server reports them.
	OnChange func(*Run)
	// Queue, if set, is where this server's runs send their tasks, for workers to execute
	// (worker.go); nil executes them here, in the run's own lane (the direct path).
	Queue *queue.Queue
	// Plain reports whether the catalog lists a task as plain (catalog.Task.Plain), with the
	// connections and queue it names: its graph is built here, with no call to a plugin of
	// this process (nil: every graph is the plugin's).
	Plain func(typ, chain, task string) (conns []string, queue string, ok bool)
}

// Manager starts runs, joins concurrent requests for the same key, and answers status queries.
type Manager struct {
	id       string // this server, in leases: <host>/<pid>/<random>
	host     string
	cfg      Config
	spool    string
	ownSpool bool // spool is this manager's (spool.go), to remove at shutdown
	slots    chan struct{}
	mu       sync.Mutex
	active   map[string]*Run
	wg       sync.WaitGroup
	launches atomic.Int64
	graphs   atomic.Int64 // graph calls to plugin processes of this manager
	// handedOver counts the tasks its driver handed to a worker of this process by a call.
	handedOver atomic.Int64
	keptBytes  atomic.Int64        // the spool copies of outs the lanes keep (keptOuts)
	pending    int                 // runs waiting for a slot (guarded by mu)
	logs       map[string]*LiveLog // task key -> log of a task running here (guarded by mu)
	idle       map[string][]*spare // chain type -> plugin processes waiting for a run (guarded by mu)
	refills    map[string]bool     // chain types whose spare is being started (guarded by mu)
	draining   bool                // shutting down: no new runs (guarded by mu)
	records    *recordCache        // decoded records of stored runs, for status reads
	ctx        context.Context
	stop       context.CancelCauseFunc
	// The queue path: this server's driver subject, and the runs it drives through it.
	driverID    string
	remote      map[string]*remoteRun // by run id (guarded by mu)
	workers     []*Worker             // the workers of this process (guarded by mu)
	stopDriving func()
}

// NewManager checks cfg and prepares the spool folder where tasks write before commit.
func NewManager(cfg Config) (*Manager, error) {
	if cfg.Store == nil || cfg.Plugins == nil {
		return nil, errors.New("runs: Store and Plugins are required")
	}
	if cfg.MaxRuns < 1 {
		cfg.MaxRuns = 1
	}
	if cfg.MaxQueue < 0 {
		cfg.MaxQueue = 0
	}
	if cfg.TaskParallelism < 1 {
		cfg.TaskParallelism = 1
	}
	if cfg.MaxTasks < 1 {
		cfg.MaxTasks = DefaultMaxTasks
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 30 * time.Second
	}
	if cfg.WorkerWait <= 0 {
		cfg.WorkerWait = 2 * time.Minute
	}
	if cfg.MonitorInterval <= 0 {
		cfg.MonitorInterval = time.Second
	}
	cfg.MonitorInterval = max(cfg.MonitorInterval, 100*time.Millisecond)
	if cfg.Pricing == (Pricing{}) {
		cfg.Pricing = DefaultPricing
	}
	if cfg.Observer == nil {
		cfg.Observer = noObserver{}
	}
	if cfg.TaskTimeout <= 0 {
		cfg.TaskTimeout = time.Hour
	}
	if cfg.CancelPoll <= 0 {
		cfg.CancelPoll = 500 * time.Millisecond
	}
	if cfg.FollowInterval <= 0 {
		cfg.FollowInterval = 250 * time.Millisecond
	}
	// Stage files where the store can rename them into place without a copy.
	var spool string
	ownSpool := false
	if t, ok := cfg.Store.(interface{ TempDir() string }); ok {
		spool = t.TempDir()
	} else {
		dir, err := newSpool()
		if err != nil {
			return nil, err
		}
		spool, ownSpool = dir, true
	}
	ctx, stop := context.WithCancelCause(context.Background())
	host, _ := os.Hostname()
	m := &Manager{
		id:       fmt.Sprintf("%s/%d/%s", host, os.Getpid(), randomID()),
		host:     host,
		cfg:      cfg,
		spool:    spool,
		ownSpool: ownSpool,
		slots:    make(chan struct{}, cfg.MaxRuns),
		active:   map[string]*Run{},
		logs:     map[string]*LiveLog{},
		idle:     map[string][]*spare{},
		refills:  map[string]bool{},
		records:  newRecordCache(recordCacheTasks),
		ctx:      ctx,
		stop:     stop,
	}
	if cfg.Queue != nil {
		m.driverID, m.remote = subjectToken(host)+"-"+randomID()[:12], map[string]*remoteRun{}
		if err := m.startDriving(); err != nil {
			stop(err)
			m.RemoveSpool()
			return nil, fmt.Errorf("listening for workers on the task queue: %w", err)
		}
	}
	go m.reapIdle() // not in wg: Drain waits for runs, and it ends with ctx
	return m, nil
}

// Context ends when the manager shuts down (background work tied to the server stops with it).
func (m *Manager) Context() context.Context { return m.ctx }

// Launches counts the plugin processes put to work for runs: one per run that executes tasks,
// whether its process was started for it, started ahead (a warm spare) or reused from an
// earlier run; spares never used are not counted.
func (m *Manager) Launches() int64 { return m.launches.Load() }

// GraphCalls counts the task graphs asked of plugin processes of this manager (the server's
// own worker's included); a plain task's graph is built without one.
func (m *Manager) GraphCalls() int64 { return m.graphs.Load() }

// HandedOver is how many tasks this manager's runs handed to a worker of this process by a
// call, not through the queue (scheduler.runHere).
func (m *Manager) HandedOver() int64 { return m.handedOver.Load() }

// DefaultMaxTasks is the largest task graph a run takes unless configured otherwise.
const DefaultMaxTasks = 100_000

// graphTooLarge is ErrGraphTooLarge with the sentence that names the task and the limit.
type graphTooLarge string

func (e graphTooLarge) Error() string        { return string(e) }
func (e graphTooLarge) Is(target error) bool { return target == ErrGraphTooLarge }

// Errors of Submit and Cancel.
var (
	// ErrGraphTooLarge refuses a run whose task graph has more tasks than Config.MaxTasks.
	ErrGraphTooLarge = errors.New("task graph too large")
	ErrQueueFull     = errors.New("run queue is full")
	ErrDraining      = errors.New("server is shutting down")
	ErrNotRunning    = errors.New("no run in progress for this key")
	// ErrCancelRequested is Cancel's answer for a run another server executes, which this one
	// does not follow: that server has been left a cancel request (it polls for one).
	ErrCancelRequested = errors.New("cancel requested from the server that runs it")
)

// Submit starts a run for spec, or joins the one already running for the same key (single
// flight: concurrent POSTs execute once). joined reports the latter. A new run is refused with
// ErrQueueFull when MaxQueue runs already wait, and with ErrDraining during shutdown.
func (m *Manager) Submit(spec Spec) (run *Run, joined bool, err error) {
	key := Key(spec.Type, spec.Chain, spec.Task, spec.Params)
	m.mu.Lock()
	defer m.mu.Unlock()
	for {
		r, ok := m.active[key]
		if !ok {
			break
		}
		select {
		case <-r.done:
			// Ended a moment ago and still writing its record: wait for that, then start anew
			// (a failed run POSTed again must run again, not answer its old failure).
			m.mu.Unlock()
			select {
			case <-r.retired:
			case <-time.After(5 * time.Second): // the store is down: answer from the old run
				m.mu.Lock()
				return r, true, nil
			}
			m.mu.Lock()
			continue
		default:
		}
		return r, true, nil
	}
	if m.draining {
		return nil, false, ErrDraining
	}
	if m.pending >= m.cfg.MaxQueue+m.cfg.MaxRuns-m.running() {
		return nil, false, fmt.Errorf("%w (%d runs waiting)", ErrQueueFull, m.pending)
	}
	m.pending++
	ctx, cancel := context.WithCancelCause(m.ctx)
	r := &Run{
		force: spec.Force,
		rec: Record{
			RunID: randomID(), Key: key, Type: spec.Type, Chain: spec.Chain, Task: spec.Task,
			Params: json.RawMessage(spec.Params), Status: Pending, SubmittedAt: time.Now().UTC(),
			Trigger: spec.Trigger, ParamsNotStored: true, // until the run stores them (drive)
		},
		onChange: m.cfg.OnChange,
		planned:  make(chan struct{}),
		queued:   make(chan struct{}),
		done:     make(chan struct{}),
		retired:  make(chan struct{}),
		cancel:   cancel,
	}
	m.active[key] = r
	m.wg.Add(1)
	go m.execute(ctx, r)
	return r, false, nil
}

// running is how many slots are taken (mu held).
func (m *Manager) running() int { return len(m.slots) }

// Running is the number of runs executing now.
func (m *Manager) Running() int { return len(m.slots) }

// QueueDepth is the number of runs waiting for a slot.
func (m *Manager) QueueDepth() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pending
}

// Cancel stops the run in progress for key: its plugin process group is killed, unfinished
// tasks are CANCELLED and no partial out is left. reason goes into the record.
func (m *Manager) Cancel(key, reason string) (*Run, error) {
	r, ok := m.Active(key)
	if !ok {
		// Not executed nor followed here: another server may execute it (its lease says so),
		// and polls for a cancel request.
		err := m.requestCancel(context.Background(), key, reason)
		switch {
		case errors.Is(err, targets.ErrNotExist):
			return nil, ErrNotRunning
		case err != nil:
			return nil, fmt.Errorf("asking the server that runs %s to cancel it: %w", key, targets.Unavailable(err))
		}
		return nil, ErrCancelRequested
	}
	r.mu.Lock()
	remote, final := r.remote, r.rec.Status.Final()
	r.mu.Unlock()
	switch {
	case final:
		return r, nil
	case remote:
		// Another server executes it: leave it a cancel request it polls for; r (which
		// mirrors that run) ends when the run does.
		err := m.requestCancel(context.Background(), key, reason)
		if errors.Is(err, targets.ErrNotExist) {
			return r, nil // no lease: the run has just ended, and r is about to say how
		}
		if err != nil {
			return nil, fmt.Errorf("asking the server that runs %s to cancel it: %w", key, targets.Unavailable(err))
		}
		return r, nil
	}
	r.cancel(errors.New(reason))
	return r, nil
}

// Drain stops accepting runs, lets running ones finish until ctx ends, then cancels the rest
// with reason and waits (up to wait) for their records.
func (m *Manager) Drain(ctx context.Context, reason string, wait time.Duration) error {
	m.mu.Lock()
	m.draining = true
	m.mu.Unlock()
	m.dropSpares()
	all := make(chan struct{})
	go func() { m.wg.Wait(); close(all) }()
	select {
	case <-all:
		return nil
	case <-ctx.Done():
	}
	m.stop(errors.New(reason))
	select {
	case <-all:
		return nil
	case <-time.After(wait):
		return errors.New("runs did not stop in time")
	}
}

// Active returns the run in progress for key, if any.
func (m *Manager) Active(key string) (*Run, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.active[key]
	return r, ok
}

// ErrUnknownKey means no run, record or out exists for a key.
var ErrUnknownKey = errors.New("unknown key")

// Lookup answers a status query: the live run if there is one, else the stored record, else
// DONE when only the out exists (the task ran as a dependency of another run). The record may
// be shared with other readers: it must not be modified.
func (m *Manager) Lookup(ctx context.Context, key string) (Record, error) {
	if r, ok := m.Active(key); ok {
		return r.Snapshot(), nil
	}
	rec, _, err := m.lookupStored(ctx, key)
	return rec, err
}

// lookupStored is Lookup of a run not executing here, with the version of the answer (see
// Status).
func (m *Manager) lookupStored(ctx context.Context, key string) (Record, string, error) {
	rec, version, err := m.stored(ctx, key)
	if err != nil {
		return Record{}, "", err
	}
	if !rec.Status.Final() {
		version = "" // its lease decides too: see below
	}
	if !rec.Status.Final() && rec.RunID != "" {
		if l, err := m.readLease(ctx, key); err != nil || !m.fresh(l) {
			if _, ok := m.Active(key); ok { // it just started here
				rec, err := m.Lookup(ctx, key)
				return rec, "", err
			}
			// Its server may have stored the final record and released the lease between our
			// two reads: the record again, then.
			if again, _, err := m.stored(ctx, key); err == nil && (again.Status.Final() || again.RunID != rec.RunID) {
				return again, "", nil
			}
			// No live server holds it, yet the record says it runs: its server died mid-run,
			// last heard of at its lease's heartbeat.
			rec.Interrupted(l.Heartbeat)
		}
	}
	return rec, version, nil
}

// Status is Lookup for a status answer. A run executing here is read from memory; a stored
// one costs a metadata read while its record is cached. The view's Version names the stored
// state the answer comes from: the same version, the same answer (but for the signed URLs'
// times), so the answer may be served again without reading the record (see
// server/answercache.go).
func (m *Manager) Status(ctx context.Context, key string) (StatusView, error) {
	if r, ok := m.Active(key); ok {
		return StatusView{run: r}, nil
	}
	rec, version, err := m.lookupStored(ctx, key)
	if err != nil {
		return StatusView{}, err
	}
	return StatusView{Version: version, rec: rec}, nil
}

// StatusView is a run's state for a status answer: a run executing here, or a stored record
// (held, not captured by a closure: a status read allocated both).
type StatusView struct {
	// Version is "" when the answer may change without a new version (a run executing, or one
	// whose record says it runs).
	Version string
	run     *Run
	rec     Record
}

// Page is the record without its tasks and a window on them (Record.Page).
func (v StatusView) Page(from, limit int) (Record, TaskPage) {
	if v.run != nil {
		return v.run.View(from, limit)
	}
	return v.rec.Header(), v.rec.Page(from, limit)
}

// stored is key's stored record (through the cache), or a DONE one when only its out exists,
// with its version (the record object's, or "out", "out/nolog" when it stores no log).
func (m *Manager) stored(ctx context.Context, key string) (Record, string, error) {
	info, err := m.cfg.Store.Stat(ctx, key+"/"+RecordName)
	if err == nil {
		version := versionOf(info)
		if rec, ok := m.records.get(key, info); ok {
			return rec, version, nil
		}
		rec, lerr := m.records.load(ctx, key, info, func(ctx context.Context) (Record, error) { return m.storedRecord(ctx, key) })
		if lerr == nil {
			return rec, version, nil
		}
		err = lerr // an empty record (what a power loss leaves) counts as absent: its out decides
	}
	if !errors.Is(err, targets.ErrNotExist) {
		return Record{}, "", fmt.Errorf("reading the run record of %s: %w", key, targets.Unavailable(err))
	}
	// Made as another run's dependency: no log is stored if it wrote none.
	done, logFound, err := DoneLog(ctx, m.cfg.Store, key)
	if err != nil {
		return Record{}, "", fmt.Errorf("looking for the out and log of %s: %w", key, targets.Unavailable(err))
	}
	if !done {
		return Record{}, "", ErrUnknownKey
	}
	if !logFound {
		chain := path.Base(path.Dir(path.Dir(key)))
		return Record{Key: key, Status: Done, Tasks: []TaskState{{Chain: chain, Task: taskOfKey(key), Key: key, Status: Done, Cached: true, LogEmpty: true}}}, "out/nolog", nil
	}
	return Record{Key: key, Status: Done}, "out", nil
}

// versionOf names the stored record info describes: its size, time and tag, as one string
// (built with one allocation: every status read of a stored run makes one).
func versionOf(info targets.Info) string {
	var b [96]byte
	v := strconv.AppendInt(b[:0], info.Size, 10)
	v = append(v, '/')
	v = strconv.AppendInt(v, info.ModTime.UnixNano(), 10)
	v = append(v, '/')
	return string(append(v, info.ETag...))
}

// Shutdown cancels every run and waits for their records to be written, or for ctx.
func (m *Manager) Shutdown(ctx context.Context) error {
	m.mu.Lock()
	m.draining = true
	m.mu.Unlock()
	m.dropSpares()
	m.stop(errors.New("server shutting down"))
	ch := make(chan struct{})
	go func() {
		m.wg.Wait()
		if m.stopDriving != nil {
			m.stopDriving()
		}
		close(ch)
	}()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// RemoveSpool removes the manager's spool folder, if it made one (spool.go). Call it last,
// once nothing of this process executes tasks: its runs have ended and its workers stopped
// (they run other servers' tasks too).
func (m *Manager) RemoveSpool() {
	if m.ownSpool {
		os.RemoveAll(m.spool)
	}
}

func (m *Manager) execute(ctx context.Context, r *Run) {
	defer m.wg.Done()
	defer r.cancel(nil)
	defer r.markPlanned(nil) // whatever way it ended
	rec := r.Snapshot()
	// run_id is what a run record names when it sends the reader to the server log.
	log := m.cfg.Logger.With("key", rec.Key, "run_id", rec.RunID)

	// A run that will wait for a slot does not hold a waiting process meanwhile.
	// A graph request that waits in the queue for a worker to start may wait minutes: the
	// POST is answered then, and a graph refused later fails the run.
	pl := m.newPlanner(ctx, rec, len(m.slots) < cap(m.slots), func() { r.markPlanned(nil) })
	defer pl.close()
	leased, remote, status, errMsg, finish := m.lead(ctx, r, log, pl)
	m.leavePending(r) // if it never got a slot
	if remote {       // another server executed it; r mirrors its record
		m.retire(r)
		close(r.done)
		return
	}

	// Its record is written below whatever happened, so the history lists it too.
	r.own()
	now := time.Now().UTC()
	r.update(func(rec *Record) {
		rec.Status, rec.Error, rec.FinishedAt = status, errMsg, &now
		if rec.StartedAt == nil {
			rec.StartedAt = &now
		}
	})
	log.Info("run finished", "status", status, "error", errMsg, "elapsed", now.Sub(rec.SubmittedAt))
	m.cfg.Observer.RunFinished(rec.Type, rec.Chain, rec.Task, status, now.Sub(rec.SubmittedAt))
	// Stop the plugin first: its exact usage (from the kernel) goes into the metrics.
	finish()
	if r.leaseLost.Load() {
		// The key is another server's now: its record and lease are not ours to write.
		m.retire(r)
		close(r.done)
		return
	}
	r.mu.Lock()
	if r.meter != nil {
		r.meter.stop(now)
	}
	r.mu.Unlock()
	r.changed() // its usage is final: whoever took the ended run's state takes it again
	var metricsLost atomic.Bool
	putMetrics := func() error {
		if mt := r.metrics(); mt != nil {
			b, err := json.Marshal(mt)
			if err == nil {
				err = m.putMeta(context.Background(), rec.Key+"/"+MetricsName, b)
			}
			if err != nil {
				log.Warn("writing the metrics object; the record says it is missing", "err", err)
				metricsLost.Store(true)
			}
		}
		return nil // the record matters; the metrics object is best effort
	}
	var written targets.Info // the version of the record stored last, for remember
	put := m.recordWriter(leased)
	err := m.together(putMetrics, func() (err error) {
		written, err = put(context.Background(), r)
		return err
	})
	if metricsLost.Load() {
		// Written beside the metrics object, the record promised it: it says it is missing,
		// in memory at once and in the store again (or by persistLater), so that no answer
		// signs a URL to nothing. (A crash between the two writes leaves the promise.)
		r.update(func(rec *Record) { rec.MetricsNotStored = true })
		if err == nil {
			written, err = put(context.Background(), r)
		}
	}
	if err != nil {
		// The store is down: answer from memory meanwhile, and keep trying to write the record.
		log.Error("writing run record; retrying in the background", "err", err)
		close(r.done)
		m.wg.Add(1)
		go m.persistLater(r, leased)
		return
	}
	r.changed() // with the exact usage the record was stored with
	if leased {
		m.releaseLease(r)
	}
	again := releaseMemory(r.taskCount())
	// Waiters answer from memory, which the record cache then takes over (remember). A POST
	// of the key meanwhile waits for retired (Submit). The lease goes
	// first: a client that POSTs again once answered, to any server, must find it released,
	// or that server would follow this finished run and answer its result.
	close(r.done)
	m.remember(r, written)
	m.retire(r)
	again()
}

// lead takes the key's lease and drives the run, or follows the server that holds it.
func (m *Manager) lead(ctx context.Context, r *Run, log *slog.Logger, pl *planner) (leased, remote bool, status Status, errMsg string, finish func()) {
	finish = func() {}
	key := r.Key()
	for {
		held, err := m.acquireLease(ctx, r, r.ID(), key)
		if err != nil {
			if ctx.Err() != nil {
				return false, false, Cancelled, "cancelled before it started", finish
			}
			return false, false, Failed, m.failure(log, r, "taking the run's lease", err), finish
		}
		if held {
			r.own()
			break
		}
		log.Info("another server is running this key; following it")
		pl.unused()
		r.markPlanned(nil) // its graph is that server's to check
		m.leavePending(r)
		r.mu.Lock()
		r.remote = true
		r.mu.Unlock()
		mine := r.Snapshot() // following puts the other run's record in its place
		if m.follow(ctx, r) {
			return false, true, "", "", finish
		}
		// Its server died, or it ended unfinished: this run takes the key over as itself,
		// and drive finds the other one, unfinished, as the key's previous run (deadRun).
		r.update(func(rec *Record) { *rec = mine })
	}
	stop := make(chan struct{})
	beating := make(chan struct{})
	go func() { m.heartbeat(r, key, stop); close(beating) }()
	status, errMsg, finish = m.drive(ctx, r, log, pl)
	close(stop)
	<-beating // no renewal may land after the release
	return true, false, status, errMsg, finish
}

// drive runs the task graph and returns the run's final status and error, and finish, which
// stops the run's plugin processes (the caller runs it after answering the waiters).
func (m *Manager) drive(ctx context.Context, r *Run, log *slog.Logger, pl *planner) (status Status, errMsg string, finish func()) {
	finish = func() {}
	select {
	case m.slots <- struct{}{}:
	default:
		r.markQueued()
		select {
		case m.slots <- struct{}{}:
		case <-ctx.Done():
			// Its record replaces the key's, which it has not read yet: that one goes into
			// its history, as for a run that starts (below).
			m.keepPrevious(r, log)
			return Cancelled, "cancelled before it started: " + cancelReason(ctx), finish
		}
	}
	m.leavePending(r)
	defer func() { <-m.slots }()
	rec := r.Snapshot()
	started := time.Now().UTC()
	r.update(func(rec *Record) { rec.Status, rec.StartedAt = Running, &started })

	unused := pl.unused // whatever path returns before the run takes the process

	// A run joined late, or raced with another that just finished: nothing to execute. The
	// record of the key's previous run, if any, is read alongside: this run's record keeps it.
	var done bool
	var outInfo targets.Info
	var prev *Record
	if err := m.together(
		func() error {
			info, err := m.cfg.Store.Stat(ctx, rec.Key+"/"+OutName)
			switch {
			case errors.Is(err, targets.ErrNotExist):
			case err != nil:
				return fmt.Errorf("looking for the out of %s: %w", rec.Task, err)
			default:
				done, outInfo = true, info
			}
			return nil
		},
		func() error {
			old, err := m.storedRecord(ctx, rec.Key)
			switch {
			case errors.Is(err, targets.ErrNotExist):
				return nil
			case errors.Is(err, errCorrupt): // its history is lost; this run must not be
				log.Warn("the previous run record is unreadable; its history is dropped", "err", err)
				return nil
			case err != nil:
				return fmt.Errorf("reading the previous record of %s: %w", rec.Task, err)
			}
			prev = &old
			return nil
		},
	); err != nil {
		unused()
		return Failed, m.failure(log, r, "looking for the out of "+rec.Task, err), finish
	}
	deadRun := ""
	if prev != nil && !prev.Status.Final() && prev.RunID != rec.RunID {
		deadRun = prev.RunID // we hold the lease: its server died mid-run
	}
	attachPrevious(r, prev)
	if done && !r.force {
		unused()
		// Its out was made as another run's dependency, which stores no log if it wrote none.
		logFound, err := hasLog(ctx, m.cfg.Store, rec.Key, outInfo)
		if err != nil {
			return Failed, m.failure(log, r, "looking for the log of "+rec.Task, err), finish
		}
		// Its params are stored if they are not (as a dependency's, they were only in the record
		// of the run it was made for).
		stored, err := targets.Exists(ctx, m.cfg.Store, rec.Key+"/"+ParamsName)
		if err == nil && !stored {
			stored = m.putMeta(ctx, rec.Key+"/"+ParamsName, rec.Params) == nil
		}
		r.update(func(rec *Record) {
			rec.Tasks = []TaskState{{Chain: rec.Chain, Task: rec.Task, Key: rec.Key, Status: Done, Cached: true, LogEmpty: !logFound}}
			rec.ParamsNotStored = !stored
		})
		return Done, "", finish
	}
	// Independent writes go side by side, and beside the graph call and the root task itself:
	// on S3 each is a round trip, and on the local folder they take a tenth of a trivial run.
	// Only the root's commit waits for them (its out may not appear before its params), and
	// the run's end: a record of this start must not land after the final one. The record says
	// the params are stored only once they are (ParamsNotStored, set since Submit): the first
	// record, written beside them, may still say they are not (the recorder's next write, once
	// both are done, says they are), and no answer, of this server or of one that reads the
	// record, signs a params_url before. The run now executes, so a process is started if none
	// waited.
	wrote := make(chan error, 1)
	go func() {
		wrote <- m.together(
			func() error {
				err := m.putMeta(ctx, rec.Key+"/"+ParamsName, rec.Params)
				if err == nil {
					r.update(func(rec *Record) { rec.ParamsNotStored = false })
				} // else the run fails, and its record sends no reader to them
				return err
			},
			func() error {
				_, err := m.putRecord(ctx, r)
				return err
			},
		)
	}()
	startWritten := sync.OnceValue(func() error {
		if err := <-wrote; err != nil {
			return fmt.Errorf("%w: %w", errStartWrites, err)
		}
		return nil
	})
	defer func() {
		if err := startWritten(); err != nil && status != Cancelled {
			status, errMsg = Failed, m.failure(log, r, "writing the params and record of "+rec.Task, err)
		}
	}()
	pl.start()
	p := pl.take()
	if errors.Is(p.takeErr, errStaging) {
		return Failed, m.failure(log, r, "creating the plugin output file", p.takeErr), finish
	}
	if p.takeErr != nil {
		log.Error("starting plugin", "err", p.takeErr)
		return Failed, p.takeErr.Error(), finish
	}
	m.launches.Add(1)
	s := &scheduler{m: m, r: r, log: log, typ: rec.Type, runID: rec.RunID, deadRun: deadRun, rootAbsent: !done, startWritten: startWritten}
	mt := newMeter(m.cfg.MonitorInterval, m.cfg.Pricing)
	r.mu.Lock()
	r.meter = mt
	r.mu.Unlock()
	s.runConns, s.plain = connectionNames(p.graph), p.plain
	if m.cfg.Queue != nil {
		s.remote = newRemoteRun(s)
		m.mu.Lock()
		m.remote[rec.RunID] = s.remote
		m.mu.Unlock()
		if deadRun != "" {
			s.abandonDeadRun()
		}
		finish = func() { s.endRemote(status == Done && ctx.Err() == nil) }
	} else {
		s.lane = m.newLane(laneConfig{runID: rec.RunID, typ: rec.Type, parallelism: m.cfg.TaskParallelism,
			runConns: s.runConns, log: log, failure: s.failure, report: s.apply, meter: mt}, p.proc, p.out, p.base)
		// Only a process that served a run to its end, with nothing unusual, waits for the next.
		finish = func() { s.lane.end(status == Done && ctx.Err() == nil) }
	}
	if deadRun != "" { // (after its workers were told to drop its tasks: abandonDeadRun)
		m.sweepSpoolOf(deadRun)
	}
	if p.graphErr != nil {
		if ctx.Err() != nil {
			return Cancelled, "cancelled: " + cancelReason(ctx), finish
		}
		return Failed, "building the task graph: " + rpcMessage(p.graphErr), finish
	}
	graph := p.graph
	if graph.OverLimit > 0 {
		msg := fmt.Sprintf("the task graph of %s has more than %d tasks: the limit is NECTAR_MAX_TASKS=%d", rec.Task, graph.OverLimit, m.cfg.MaxTasks)
		r.markPlanned(graphTooLarge(msg))
		return Failed, msg, finish
	}
	// Planned, the run is answered (202) once its params and first record are stored, which
	// went beside the graph call: the params_url and status_url handed out point at objects
	// that exist, for this server's readers and for any other's. The tasks start meanwhile.
	go func() { startWritten(); r.markPlanned(nil) }()
	status, errMsg = s.run(ctx, graph)
	return status, errMsg, finish
}

// attachPrevious makes prev, the key's record before r (nil: none), the first of r's previous
// runs, so that r's record, which replaces it, keeps its history.
func attachPrevious(r *Run, prev *Record) {
	if prev == nil {
		return
	}
	r.update(func(rec *Record) {
		if prev.RunID == rec.RunID {
			return
		}
		rec.Previous = append([]PastRun{prev.Past()}, prev.Previous...)
		if len(rec.Previous) > MaxPrevious {
			rec.Previous = rec.Previous[:MaxPrevious]
		}
	})
}

// keepPrevious reads the key's record and attaches it to r (attachPrevious), for a run that
// ends before it read it. An unreadable record's history is dropped, as when a run starts; a
// store that does not answer is logged, and r's record then replaces it without.
func (m *Manager) keepPrevious(r *Run, log *slog.Logger) {
	if r.leaseLost.Load() {
		return // the key's record is the new holder's: this run writes none
	}
	// As long as a lease's own reads, but a cancel, or a shutdown's drain, waits for it: 10 s
	// at most.
	ctx, cancel := context.WithTimeout(context.Background(), min(m.cfg.LeaseTTL/3, 10*time.Second))
	defer cancel()
	old, err := m.storedRecord(ctx, r.Key())
	switch {
	case errors.Is(err, targets.ErrNotExist):
	case errors.Is(err, errCorrupt):
		log.Warn("the previous run record is unreadable; its history is dropped", "err", err)
	case err != nil:
		log.Warn("reading the previous run record; its history is dropped", "store", m.cfg.Store.String(), "err", err)
	default:
		attachPrevious(r, &old)
	}
}

// failure logs a failure of the store (or of the staging folder) during run r, naming the store
// and the cause, and returns what r's record says instead: a fixed sentence that points to that
// log line. The cause may name the store's endpoint, bucket or folder, and status URLs show
// the record to anyone who holds them.
func (m *Manager) failure(log *slog.Logger, r *Run, doing string, err error) string {
	return m.failureSentence(log, r.ID(), doing, err)
}

// failureSentence is failure for the run of id runID.
func (m *Manager) failureSentence(log *slog.Logger, runID, doing string, err error) string {
	if errors.Is(err, errStaging) {
		log.Error("run failed: the staging folder failed", "while", doing, "spool", m.spool, "err", err)
		return fmt.Sprintf("the server's staging folder failed while %s; see the server log (run %s)", doing, runID)
	}
	m.cfg.Observer.StoreError("run")
	log.Error("run failed: the target store failed", "while", doing, "store", m.cfg.Store.String(), "err", err)
	return fmt.Sprintf("target store unavailable while %s; see the server log (run %s)", doing, runID)
}

// rpcMessage strips gRPC's "rpc error: code = Unknown desc =" wrapping from plugin errors.
func rpcMessage(err error) string {
	msg := err.Error()
	const marker = "desc = "
	if i := strings.Index(msg, marker); i >= 0 {
		return msg[i+len(marker):]
	}
	return msg
}

// leavePending takes r off the queue count once (when it gets a slot or ends without one).
func (m *Manager) leavePending(r *Run) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !r.left {
		r.left = true
		m.pending--
	}
}

// cancelReason says why ctx ended ("cancelled" when no reason was given).
func cancelReason(ctx context.Context) string {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause.Error()
	}
	return "cancelled"
}

// together runs fs, independent calls on the store, and returns their errors joined: side by
// side on a remote store, where each is a round trip of milliseconds, and one after the other
// on the local folder, where each is a few system calls of microseconds and a goroutine's
// hand-off to another thread would cost more than the call (tens of microseconds on a VM).
func (m *Manager) together(fs ...func() error) error {
	errs := make([]error, len(fs))
	if _, local := m.cfg.Store.(targets.LocalPather); local {
		for i, f := range fs {
			errs[i] = f()
		}
		return errors.Join(errs...)
	}
	var wg sync.WaitGroup
	for i, f := range fs {
		wg.Go(func() { errs[i] = f() })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func randomID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}
