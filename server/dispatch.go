package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"nectar/server/catalog"
	"nectar/server/queue"
	"nectar/server/runs"
	"nectar/targets"
	"nectar/targets/local"
	"nectar/targets/open"
)

// openQueue connects to the task queue cfg names: an external NATS cluster, or a JetStream
// server embedded in this process, its data beside the local targets.
func openQueue(cfg Config, store targets.Store, logger *slog.Logger) (*queue.Queue, *os.File, error) {
	qc := queue.Config{URL: cfg.NATSURL, Creds: cfg.NATSCreds, CA: cfg.NATSCA, Cert: cfg.NATSCert, Key: cfg.NATSKey,
		Replicas: cfg.NATSReplicas, Listen: cfg.NATSListen, AckWait: cfg.TaskAckWait, MaxDeliver: cfg.TaskDeliveries,
		Name: fmt.Sprintf("nectar/%d", os.Getpid()), Logger: logger}
	var lock *os.File
	if cfg.NATSURL == "" {
		var err error
		if qc.DataDir, lock, err = embeddedDir(cfg.NATSDir, store); err != nil {
			return nil, nil, err
		}
	}
	q, err := queue.Open(context.Background(), qc)
	if err != nil {
		if lock != nil {
			lock.Close()
		}
		return nil, nil, err
	}
	return q, lock, nil
}

// embeddedDir is a data folder for the embedded JetStream server that no other process on
// this host uses: servers sharing one local targets folder each take a numbered one, held
// by a lock for as long as they run (a server that restarts takes a free one again, and what a
// dead one left queued runs again harmlessly: its driver's run is taken over and re-queued).
func embeddedDir(base string, store targets.Store) (string, *os.File, error) {
	if base == "" {
		if ls, ok := store.(*local.Store); ok {
			base = filepath.Join(ls.Root(), ".nats")
		} else {
			base = filepath.Join(os.TempDir(), "nectar-nats")
		}
	}
	if err := os.MkdirAll(base, 0o700); err != nil {
		return "", nil, fmt.Errorf("NECTAR_NATS_DIR: %w", err)
	}
	for n := range 256 {
		f, err := os.OpenFile(filepath.Join(base, strconv.Itoa(n)+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return "", nil, fmt.Errorf("NECTAR_NATS_DIR: %w", err)
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			return filepath.Join(base, strconv.Itoa(n)), f, nil
		}
		f.Close()
	}
	return "", nil, fmt.Errorf("NECTAR_NATS_DIR: all 256 data folders under %s are in use", base)
}

// startWorkers starts this process's workers (nectar serve --workers, nectar worker).
func (s *Server) startWorkers() error {
	queues := s.cfg.Queues
	if len(queues) == 0 {
		queues = s.catalog.Queues() // every chain type's, and every queue a task names
	}
	slots := s.cfg.WorkerSlots
	if slots == 0 {
		// As many tasks as this server's runs may hold at once (see runs.commitBacklog).
		slots = s.cfg.MaxRuns * s.cfg.TaskParallelism * 4
	}
	for range s.cfg.Workers {
		w, err := s.runs.StartWorker(s.queue, runs.WorkerConfig{Queues: queues, Types: s.catalog.TypesServed(queues), Slots: slots,
			Processes: s.cfg.MaxRuns, Heartbeat: s.cfg.WorkerBeat})
		if err != nil {
			s.stopWorkers(runs.NoGrace)
			return fmt.Errorf("starting a worker: %w", err)
		}
		s.workers = append(s.workers, w)
	}
	return nil
}

// stopWorkers stops this process's workers; the tasks in hand get grace to finish
// (runs.NoGrace: as long as they take), then go back to the queue for other workers.
func (s *Server) stopWorkers(grace time.Duration) {
	for _, w := range s.workers {
		w.Stop(grace)
	}
	s.workers = nil
}

// closeQueue stops the workers, then the queue.
func (s *Server) closeQueue() {
	s.stopWorkers(s.cfg.WorkerGrace)
	if s.queue != nil {
		s.queue.Close()
	}
	if s.natsLock != nil {
		s.natsLock.Close()
	}
}

// RunWorker runs workers only (nectar worker): they take tasks from the queue at
// cfg.NATSURL, execute them with the plugins of cfg.PluginDir and commit to cfg.Target, until
// ctx ends; then they finish the tasks in hand. It serves no HTTP.
func RunWorker(ctx context.Context, cfg Config, cat *catalog.Catalog, logger *slog.Logger) error {
	if cfg.NATSURL == "" {
		return errors.New("nectar worker takes tasks from a NATS cluster: set NECTAR_NATS_URL (a cluster, or a server's NECTAR_NATS_LISTEN address)")
	}
	if cfg.Workers < 1 {
		cfg.Workers = 1
	}
	store, err := open.Target(ctx, cfg.Target, cfg.Getenv, func(string, time.Duration) string { return "" })
	if err != nil {
		return err
	}
	launcher, err := openLauncher(cfg, cat, store, logger)
	if err != nil {
		return err
	}
	defer launcher.Close()
	q, _, err := openQueue(cfg, store, logger)
	if err != nil {
		return fmt.Errorf("the task queue: %w", err)
	}
	defer q.Close()
	m, err := runs.NewManager(runsConfig(cfg, store, launcher, logger))
	if err != nil {
		return err
	}
	defer m.RemoveSpool() // last: after the workers have stopped and the manager shut down
	s := &Server{cfg: cfg, catalog: cat, runs: m, queue: q, log: logger}
	if err := s.startWorkers(); err != nil {
		m.Shutdown(context.Background())
		return err
	}
	for _, w := range s.workers {
		logger.Info("nectar worker: taking tasks", "worker", w.ID(), "nats", q.ServerName())
	}
	<-ctx.Done()
	if cfg.WorkerGrace < 0 {
		logger.Info("nectar worker: stopping; finishing the tasks in hand")
	} else {
		logger.Info("nectar worker: stopping; finishing the tasks in hand, or handing them back to the queue after NECTAR_WORKER_GRACE", "grace", cfg.WorkerGrace)
	}
	s.stopWorkers(cfg.WorkerGrace)
	return m.Shutdown(context.Background())
}
