// Package server is the HTTP face of Nectar: the echo v4 app with the catalog, run submission,
// status and download endpoints. Handlers are thin (decode, validate, call, respond); run
// management lives in server/runs, URL signing in server/signing, the task table in
// server/catalog (generated).
package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"nectar/plugins/host"
	"nectar/server/catalog"
	"nectar/server/history"
	"nectar/server/queue"
	"nectar/server/runs"
	"nectar/server/schedules"
	"nectar/server/signing"
	"nectar/server/ui"
	"nectar/targets"
	"nectar/targets/local"
	"nectar/targets/open"
)

// Server wires the store, the plugin launcher, the run manager and the routes.
type Server struct {
	cfg      Config
	log      *slog.Logger
	echo     *echo.Echo
	catalog  *catalog.Catalog
	store    targets.Store
	signer   *signing.Signer
	launcher *host.Launcher
	runs     *runs.Manager
	metrics  *promMetrics
	done     *doneCache
	answers  *answerCache // hot reads' encoded answers (answercache.go)
	// presignFailures counts URLs that could not be signed (the answer went without them).
	presignFailures atomic.Int64
	publicURL       atomic.Pointer[string]
	// history is the run index (nil with NECTAR_DATABASE_URL=off); rebuilding is set while it
	// is being made again from the store at start.
	history      *history.Index
	endedMu      sync.Mutex // orders the history entries of ended runs (New)
	rebuilding   atomic.Bool
	closeHistory sync.Once
	bg           sync.WaitGroup // background work to wait for at Close
	// backfills are the intervals this server's backfills have not started yet: their status
	// URLs answer PENDING meanwhile.
	backfills backfills
	ui        *ui.UI
	sched     *schedules.Scheduler
	schedCtx  context.Context // ends when the server begins to stop: stops the scheduler and backfills
	stopSched context.CancelFunc
	// bgMu guards adding to bg against Close waiting for it: once closing is set, no background
	// work starts (a backfill is then a 503).
	bgMu    sync.Mutex
	closing bool
	// The task queue (NECTAR_DISPATCH=queue) and this process's workers.
	queue    *queue.Queue
	natsLock *os.File // holds the embedded server's data folder
	workers  []*runs.Worker
}

// New checks the configuration against the world (store, plugin folder) and builds the server.
func New(cfg Config, cat *catalog.Catalog, logger *slog.Logger) (*Server, error) {
	if !cfg.MetricsPublic && len(cfg.APITokens) == 0 {
		// ConfigFromEnv refuses this too; a Config built in code must not open /metrics by accident.
		return nil, errors.New("NECTAR_METRICS_PUBLIC=false puts /metrics behind the bearer tokens, but NECTAR_API_TOKENS is not set")
	}
	if cfg.TLSCert != "" || cfg.TLSKey != "" {
		// Checked here, not in ConfigFromEnv: a worker reads the same environment (one
		// ConfigMap) but serves no HTTP, and need not see the certificate.
		if _, err := loadKeyPair(cfg.TLSCert, cfg.TLSKey); err != nil {
			return nil, err
		}
	}
	s := &Server{cfg: cfg, log: logger, catalog: cat, done: newDoneCache(cfg.DoneCacheTTL, 100_000), answers: newAnswerCache()}
	if cfg.PublicURL != "" {
		s.setPublicURL(cfg.PublicURL)
	}
	// The store's presigner reads s.signer only when a URL is made, so the store can come first.
	store, err := open.Target(context.Background(), cfg.Target, cfg.Getenv, s.downloadURL)
	if err != nil {
		return nil, err
	}
	s.store = store
	key := cfg.SigningKey
	if key == nil {
		if ls, ok := store.(*local.Store); ok {
			if key, err = localSigningKey(ls.Root()); err != nil {
				return nil, fmt.Errorf("NECTAR_SIGNING_KEY is not set and %w", err)
			}
		}
	}
	if key != nil {
		if s.signer, err = signing.New(key); err != nil {
			return nil, fmt.Errorf("NECTAR_SIGNING_KEY: %w", err)
		}
	} else {
		s.signer = signing.NewRandom()
		logger.Warn("NECTAR_SIGNING_KEY is not set: using a random key, so status and download URLs stop working when the server restarts")
	}
	launcher, err := openLauncher(cfg, cat, store, logger)
	if err != nil {
		return nil, err
	}
	s.launcher = launcher
	for _, t := range cat.Tasks() {
		for _, name := range t.Connections {
			if cfg.Getenv(ConnectionEnv(name)) == "" {
				logger.Info("a task declares a connection this server does not configure: its runs will fail until it is set",
					"task", t.Type+"/"+t.Chain+"/"+t.Name, "connection", name, "set", ConnectionEnv(name))
			}
		}
	}
	// Fire is called only once Run starts, below, when s.runs exists.
	s.sched, err = schedules.New(schedules.Config{Catalog: cat, Store: store, Fire: s.fireInterval,
		CatchUp: cfg.ScheduleCatchUp, Firing: cfg.Schedules, Logger: logger})
	if err != nil {
		launcher.Close()
		return nil, err
	}
	s.metrics = newPromMetrics()
	db, rebuild, err := openHistory(context.Background(), cfg.DatabaseURL, store)
	if err != nil {
		launcher.Close()
		return nil, fmt.Errorf("NECTAR_DATABASE_URL: %w", err)
	}
	var onChange func(*runs.Run)
	if db != nil {
		s.history = history.NewIndex(db, logger, s.metrics.HistoryError)
		onChange = func(r *runs.Run) {
			if r.Ended() {
				// Its entry is taken now (its last changes are few): held until the next
				// flush, the run and its every task stayed live beside the next run's. One
				// at a time, so that the entry noted last is the one taken last.
				s.endedMu.Lock()
				defer s.endedMu.Unlock()
				e := liveEntry(r)
				s.history.Changed(r.ID(), func() history.Entry { return e })
				return
			}
			s.history.Changed(r.ID(), func() history.Entry { return liveEntry(r) })
		}
	}
	if cfg.Dispatch == "queue" {
		if s.queue, s.natsLock, err = openQueue(cfg, store, logger); err != nil {
			launcher.Close()
			if db != nil {
				s.history.Close(context.Background())
				db.Close()
			}
			return nil, fmt.Errorf("the task queue: %w", err)
		}
	}
	rc := runsConfig(cfg, store, launcher, logger)
	rc.Queue, rc.OnChange, rc.Observer, rc.Plain = s.queue, onChange, s.metrics, plainTasks(cat)
	rc.MaxRuns, rc.MaxQueue, rc.MaxTasks = cfg.MaxRuns, cfg.MaxQueue, cfg.MaxTasks
	s.runs, err = runs.NewManager(rc)
	if err == nil && s.queue != nil {
		err = s.startWorkers()
	}
	if err != nil {
		launcher.Close()
		s.closeQueue()
		if s.runs != nil {
			s.runs.Shutdown(context.Background())
			s.runs.RemoveSpool()
		}
		if db != nil {
			s.history.Close(context.Background())
			db.Close()
		}
		return nil, err
	}
	if rebuild {
		// A new or outdated index is made again from the store while the server serves; the
		// runs list says so meanwhile (data.rebuilding).
		s.rebuilding.Store(true)
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			defer s.rebuilding.Store(false)
			if _, err := RebuildHistory(s.runs.Context(), store, db, logger); err != nil {
				s.metrics.HistoryError()
				logger.Error("run history: rebuild failed; `nectar reindex` makes it again", "err", err)
			}
		}()
	}
	s.metrics.watch(s.runs)
	if s.queue != nil {
		s.metrics.registry.MustRegister(newQueueCollector(s.queue, s.runs))
	}
	s.schedCtx, s.stopSched = context.WithCancel(s.runs.Context())
	if s.ui, err = ui.New(uiBackend{s}, logger); err != nil {
		return nil, fmt.Errorf("web UI: %w", err)
	}
	s.echo = s.routes()
	return s, nil
}

// openLauncher prepares the plugins of cfg.PluginDir: each chain type's binary checked against
// its sha256 (which also warms the hash cache, so the first run pays nothing), their source
// reads served from store.
func openLauncher(cfg Config, cat *catalog.Catalog, store targets.Store, logger *slog.Logger) (*host.Launcher, error) {
	launcher, err := host.NewLauncher(cfg.PluginDir, logger)
	if err != nil {
		return nil, fmt.Errorf("NECTAR_PLUGIN_DIR: %w", err)
	}
	launcher.SetHost(storeHost{store})
	for _, t := range cat.Types() {
		f, err := launcher.Verify(t)
		if err != nil {
			launcher.Close()
			return nil, fmt.Errorf("NECTAR_PLUGIN_DIR: chain type %s: %w", t, err)
		}
		f.Close()
	}
	return launcher, nil
}

// runsConfig is what a server and a worker alike give their run manager.
func runsConfig(cfg Config, store targets.Store, launcher *host.Launcher, logger *slog.Logger) runs.Config {
	return runs.Config{
		Connection:      func(name string) string { return cfg.Getenv(ConnectionEnv(name)) },
		MonitorInterval: cfg.MonitorInterval,
		Pricing:         runs.Pricing{VCPUHour: cfg.PriceVCPUHour, GBHour: cfg.PriceGBHour},
		Store:           store,
		Plugins:         starter{launcher, logger},
		TaskTimeout:     cfg.TaskTimeout,
		WarmPlugins:     cfg.WarmPlugins,
		TaskParallelism: cfg.TaskParallelism,
		LeaseTTL:        cfg.LeaseTTL,
		WorkerWait:      cfg.WorkerWait,
		Logger:          logger,
	}
}

// plainTasks answers runs.Config.Plain from the catalog the server was built with.
func plainTasks(cat *catalog.Catalog) func(typ, chain, task string) ([]string, string, bool) {
	return func(typ, chain, task string) ([]string, string, bool) {
		t, ok := cat.Task(typ, chain, task)
		if !ok || !t.Plain {
			return nil, "", false
		}
		return slices.Clone(t.Connections), t.Queue, true
	}
}

// localSigningKey keeps a generated key beside the local data (mode 0600), so the default setup
// needs no secret and its URLs survive restarts.
func localSigningKey(root string) ([]byte, error) {
	path := filepath.Join(root, ".signing-key")
	if b, err := os.ReadFile(path); err == nil {
		key, err := hex.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(key) < signing.MinKeyLen {
			return nil, fmt.Errorf("%s is not a hex key of at least %d bytes: delete it to make a new one", path, signing.MinKeyLen)
		}
		return key, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	key := make([]byte, signing.MinKeyLen)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) { // another server made it first
		return localSigningKey(root)
	}
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", path, err)
	}
	_, err = f.WriteString(hex.EncodeToString(key) + "\n")
	if err = errors.Join(err, f.Sync(), f.Close()); err != nil {
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	return key, nil
}

// starter adapts the host launcher to what the run manager needs.
type starter struct {
	l   *host.Launcher
	log *slog.Logger
}

// Start logs why a plugin did not start, and returns an error fit for a run record (which
// status URLs show): the launcher's errors name the plugin folder.
func (s starter) Start(chainType string, output *os.File) (runs.Process, error) {
	p, err := s.l.Start(chainType, output)
	if err == nil {
		return p, nil
	}
	s.log.Error("starting a plugin", "type", chainType, "err", err)
	switch {
	case errors.Is(err, host.ErrTampered):
		return nil, fmt.Errorf("%w: rebuild with `make build` (the server log names the file)", host.ErrTampered)
	case errors.Is(err, host.ErrNoPlugin):
		return nil, fmt.Errorf("%w: run `make build` (the server log names the file)", host.ErrNoPlugin)
	}
	return nil, errors.New("the plugin process did not start (the server log says why)")
}

func (s starter) Current(chainType string, p runs.Process) bool {
	hp, ok := p.(*host.Process)
	return ok && s.l.Current(chainType, hp)
}

// StartSchedules fires the declared schedules (unless NECTAR_SCHEDULES=off) until the server
// stops. Serve calls it once it listens, so that a server that cannot start fires nothing (its
// runs would be cancelled, and their intervals counted as fired).
func (s *Server) StartSchedules() {
	s.background(func() { s.sched.Run(s.schedCtx) })
}

// background runs f in the background, waited for by Close; it reports false, running nothing,
// once the server is stopping.
func (s *Server) background(f func()) bool {
	s.bgMu.Lock()
	defer s.bgMu.Unlock()
	if s.closing {
		return false
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		f()
	}()
	return true
}

// stopBackground stops the scheduler and refuses new background work.
func (s *Server) stopBackground() {
	s.bgMu.Lock()
	s.closing = true
	s.bgMu.Unlock()
	s.stopSched()
}

// Handler is the HTTP handler (tests serve it with httptest).
func (s *Server) Handler() http.Handler { return s.echo }

// Runs is the run manager (tests read its launch count).
func (s *Server) Runs() *runs.Manager { return s.runs }

// Store is the target store.
func (s *Server) Store() targets.Store { return s.store }

func (s *Server) setPublicURL(u string) { s.publicURL.Store(&u) }

// SetPublicURL sets the origin used in status and download URLs when NECTAR_PUBLIC_URL is unset
// (Serve does it from the listener; tests from httptest).
func (s *Server) SetPublicURL(u string) {
	if s.cfg.PublicURL == "" {
		s.setPublicURL(strings.TrimSuffix(u, "/"))
	}
}

func (s *Server) base() string {
	if p := s.publicURL.Load(); p != nil {
		return *p
	}
	return "http://" + s.cfg.Addr
}

// statusURL is the signed capability URL of a run's status.
func (s *Server) statusURL(key string) string {
	chain := key + "/" + runs.OutName
	exp, sig := s.signer.Sign(signing.PurposeStatus, chain, s.cfg.URLExpiry)
	// What url.Values.Encode gives (keys in order; the expiry and the hex signature need no
	// escaping), without its map and sort: a status answer builds several of these.
	return s.base() + "/api/chainstatus?chain=" + url.QueryEscape(chain) + "&expires=" + exp + "&signature=" + sig
}

// downloadURL is the local store's presigner: the server serves /api/download itself.
func (s *Server) downloadURL(key string, expiry time.Duration) string {
	exp, sig := s.signer.Sign(signing.PurposeDownload, key, expiry)
	return s.base() + "/api/download/" + key + "?expires=" + exp + "&signature=" + sig
}

// Serve answers on ln until ctx ends, then shuts down: no new requests, running runs are
// cancelled and their records written.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	scheme := "http://"
	var tlsConfig *tls.Config
	if s.cfg.TLSCert != "" {
		certs, err := newCertReloader(s.cfg.TLSCert, s.cfg.TLSKey, func(err error) { s.log.Warn(err.Error()) })
		if err != nil {
			return err
		}
		scheme = "https://"
		tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.GetCertificate}
	}
	s.SetPublicURL(scheme + ln.Addr().String())
	if s.cfg.Pprof != "" {
		pctx, stopPprof := context.WithCancel(context.Background())
		defer stopPprof()
		if err := s.servePprof(pctx); err != nil {
			return fmt.Errorf("NECTAR_PPROF=%s: %w", s.cfg.Pprof, err)
		}
	}
	s.StartSchedules()
	srv := &http.Server{
		Handler:           s.echo,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		TLSConfig:         tlsConfig,
	}
	errc := make(chan error, 1)
	go func() {
		if tlsConfig != nil {
			errc <- srv.ServeTLS(ln, "", "") // the certificate comes from GetCertificate; HTTP/2 too
			return
		}
		errc <- srv.Serve(ln)
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	// Graceful: refuse new runs (503) but keep answering status while running runs get up to
	// NECTAR_SHUTDOWN_GRACE to finish; then cancel the rest, recording why, and stop.
	s.log.Info("shutting down: no new runs; waiting for running ones", "grace", s.cfg.ShutdownGrace)
	s.stopBackground() // no schedule fires and no backfill starts during the grace period
	graceCtx, cancelGrace := context.WithTimeout(context.Background(), s.cfg.ShutdownGrace)
	defer cancelGrace()
	reason := fmt.Sprintf("server shutting down: the run did not finish within the %s grace period", s.cfg.ShutdownGrace)
	err := s.runs.Drain(graceCtx, reason, 20*time.Second)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = errors.Join(err, srv.Shutdown(shutdownCtx), s.Close(shutdownCtx))
	return err
}

// Close cancels running runs, waits for their records, writes the last changes to the run
// history, and removes the plugin socket folder and, if every run has ended, the spool.
func (s *Server) Close(ctx context.Context) error {
	s.stopBackground()
	err := s.runs.Shutdown(ctx)
	s.closeQueue() // after the runs: they end through the workers
	s.bg.Wait()
	if err == nil { // else runs may still write there: the next server to start sweeps it
		s.runs.RemoveSpool()
	}
	s.closeHistory.Do(func() {
		if s.history == nil {
			return
		}
		// The history is derived data: a last write that fails is logged, not a failed close.
		if herr := errors.Join(s.history.Close(ctx), s.history.Driver().Close()); herr != nil {
			s.metrics.HistoryError()
			s.log.Warn("run history: closing", "err", herr)
		}
	})
	return errors.Join(err, s.launcher.Close())
}

// History is the run index (nil when NECTAR_DATABASE_URL=off).
func (s *Server) History() *history.Index { return s.history }

func (s *Server) routes() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.JSONSerializer = plainJSON{}
	e.HTTPErrorHandler = s.errorHandler
	e.Pre(requestID) // before routing, so that every answer, a 404 too, carries the id
	e.Use(middleware.BodyLimit("1M"))
	// The recovered panic, with its stack, goes to errorHandler, which logs it with the request
	// id (echo's own logger would print it apart from every other log line).
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{DisableStackAll: true,
		LogErrorFunc: func(_ echo.Context, err error, stack []byte) error {
			return fmt.Errorf("panic: %w\n%s", err, stack)
		}}))

	api := e.Group("/api")
	api.GET("/chains", s.listTypes)
	api.GET("/chains/:type", s.listChains)
	api.GET("/chains/:type/:chain", s.listTasks)
	api.GET("/chains/:type/:chain/:task", s.describeTask)
	// One route per generated task; the parameterised route only answers 404 for the rest.
	auth := s.requireToken
	for _, t := range s.catalog.Tasks() {
		path := "/chains/" + t.Type + "/" + t.Chain + "/" + t.Name
		api.POST(path, s.submit(t), auth)
		api.DELETE(path, s.cancelByKey(t), auth)
	}
	api.POST("/chains/:type/:chain/:task", s.unknownTask, auth)
	api.DELETE("/chains/:type/:chain/:task", s.unknownTask, auth)
	api.GET("/openapi.json", func(c echo.Context) error {
		return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, []byte(catalog.OpenAPI))
	})
	api.GET("/schedules", s.listSchedules)
	api.GET("/schedules/:type/:chain/:task", s.getSchedule)
	api.POST("/schedules/:type/:chain/:task/pause", s.pauseSchedule(true), auth)
	api.POST("/schedules/:type/:chain/:task/resume", s.pauseSchedule(false), auth)
	api.POST("/schedules/:type/:chain/:task/backfill", s.backfill, auth)
	api.DELETE("/schedules/:type/:chain/:task/backfill", s.stopBackfills, auth)
	api.GET("/workers", s.listWorkers)
	api.POST("/workers/:id/drain", s.drainWorker, auth)
	api.GET("/runs", s.listRuns)
	api.GET("/runs/:run_id", s.getRun)
	api.GET("/chainstatus", s.status)
	api.DELETE("/chainstatus", s.status, auth) // the signed status URL cancels its run
	api.GET("/chainlog", s.taskLog)
	api.GET("/download/*", s.download)
	api.HEAD("/download/*", s.download)
	if s.cfg.MetricsPublic {
		e.GET("/metrics", s.metrics.handler())
	} else {
		e.GET("/metrics", s.metrics.handler(), auth)
	}
	e.GET("/healthz", func(c echo.Context) error { return respond(c, http.StatusOK, "ok", nil) })
	s.ui.Register(e)
	return e
}
