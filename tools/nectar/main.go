// Command nectar runs the Nectar server, and runs or scaffolds chains from the shell.
//
//	nectar serve [--workers N]                    serve the API (NECTAR_* environment variables)
//	nectar worker [--queues a,b] [--slots N]      execute tasks from the queue (NECTAR_NATS_URL)
//	nectar run <type>/<chain>/<Task> [k=v ...]    run a task here and print its out
//	nectar new <type> <name>                      write chains/<type>/<name>_chain.go to start from
//	nectar reindex                                rebuild the run history from the store's run records
//	nectar put <file> <path>                      store a source data file in the store
//	nectar dev                                    serve, rebuilding chains on save (make dev)
//	nectar trigger|status|logs|cancel|runs ...    drive a running server (see usage)
//	nectar schedules|backfill ...                 list, pause, resume and backfill schedules
//	nectar version                                print the plugin protocol version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"

	"nectar/plugins"
	"nectar/server"
	"nectar/server/catalog"
	"nectar/server/queue"
)

// init turns the heap profile's sampling off unless NECTAR_PPROF serves it: nobody could
// read the profile, and its table of sampled call stacks (up to 1.4 MB, touched at random)
// was a few percent of a busy server's memory. It runs before main, and before all but the
// first allocations; the sampled ones keep their few entries.
func init() {
	if os.Getenv("NECTAR_PPROF") == "" {
		runtime.MemProfileRate = 0
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { // the first Ctrl-C stops gracefully; a second one ends the program at once
		<-ctx.Done()
		stop()
	}()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil && !errors.Is(err, errHelped) {
		fmt.Fprintln(os.Stderr, "nectar:", err)
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}

const usage = `usage: nectar <command>

commands:
  serve [--workers N]                 serve the HTTP API (see README.md for the NECTAR_* variables),
                                      with N workers in this process (default 1; 0: the API only;
                                      not with NECTAR_DISPATCH=direct)
  worker [--queues a,b] [--slots N]   take tasks from the queue (NECTAR_NATS_URL) and execute
                                      them; no HTTP (default queues: every chain type's and every queue a task names)
  run <type>/<chain>/<Task> [k=v...]  run a task (and what it requires) here, print its out;
                                      same store, plugins and keys as the server
  new <type> <name>                   write chains/<type>/<name>_chain.go, a chain to start from
                                      (and its test)
  reindex                             rebuild the run history (NECTAR_DATABASE_URL) from the
                                      run records in the store (NECTAR_TARGET)
  put <local file> <path>             store a file in NECTAR_TARGET at path, for tasks that read
                                      it with ctx.Source (make demo-data uses it)
  dev                                 serve, and on every save under chains/ regenerate and
                                      rebuild what changed (in the repository; make dev)
  version                             print the plugin protocol version

client commands (a running server: --server or NECTAR_SERVER, default http://127.0.0.1:5000;
--token or NECTAR_TOKEN when it asks for one):
  trigger <type>/<chain>/<Task> [k=v...] [--conf JSON] [--wait] [--force] [--json]
                                      start a run (--wait: follow it to the end)
  status <key | status URL> [--all] [--json]
                                      a run's status and its tasks (--all: every one)
  logs [-f] <key | status URL> [Task] a task's log (-f: follow it while it runs)
  cancel <key | status URL>           stop a run
  runs [k=v...] [--json]              the run history (filters: task=, status=, q=, limit=, ...)
  schedules [--json]                  the schedules: next fire, last interval and its status, paused
  schedules pause|resume <type>/<chain>/<Task>
                                      pause or resume a schedule on every server of the store
  backfill <type>/<chain>/<Task> --from DATE --to DATE [--force] [--wait] [--json]
                                      run every complete interval starting within the dates
  backfill <type>/<chain>/<Task> --stop
                                      stop its backfills on every server (runs started go on)

exit status: 0 done, 1 the run failed or was cancelled (or a local command failed),
2 a usage or connection error
`

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	args = commandFirst(args)
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError("no command given")
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], getenv, stdout, stderr)
	case "worker":
		return worker(ctx, args[1:], getenv, stderr)
	case "run":
		return runTask(ctx, args[1:], getenv, stdout, stderr)
	case "new":
		return newChain(args[1:], stdout)
	case "reindex":
		return reindex(ctx, getenv, stdout, stderr)
	case "put":
		return put(ctx, args[1:], getenv, stdout, stderr)
	case "dev":
		return devCmd(ctx, args[1:], getenv, stdout, stderr)
	case "trigger":
		return trigger(ctx, args[1:], getenv, stdout, stderr)
	case "status":
		return status(ctx, args[1:], getenv, stdout, stderr)
	case "logs":
		return logs(ctx, args[1:], getenv, stdout, stderr)
	case "cancel":
		return cancelRun(ctx, args[1:], getenv, stdout, stderr)
	case "runs":
		return listRuns(ctx, args[1:], getenv, stdout, stderr)
	case "schedules":
		return schedulesCmd(ctx, args[1:], getenv, stdout, stderr)
	case "backfill":
		return backfill(ctx, args[1:], getenv, stdout, stderr)
	case "version":
		fmt.Fprintf(stdout, "nectar plugin protocol %d\n", plugins.ProtocolVersion)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageError("unknown command %q", args[0])
}

// errHelped ends a command whose help was asked for (-h) and printed: exit status 0.
var errHelped = errors.New("help printed")

// parseFlags parses a command's flags. A mistake is a usage error that names the flags the
// command takes, not the flag package's dump; -h prints them.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(stdout)
		fmt.Fprintf(stdout, "usage: nectar %s [flags]\n", fs.Name())
		fs.PrintDefaults()
		return errHelped
	}
	if err != nil {
		var names []string
		fs.VisitAll(func(f *flag.Flag) { names = append(names, "--"+f.Name) })
		return usageError("%s: %v (it takes %s)", fs.Name(), err, strings.Join(names, ", "))
	}
	return nil
}

// serverValuedFlags are serve's and worker's flags that take a value.
var serverValuedFlags = []string{"workers", "queues", "slots"}

// commandFirst moves the command to the front when flags come before it (nectar --server URL
// status KEY): flags go anywhere. The flags that take a value as the next argument are the
// client's (parseClientArgs); a command's own flags come after it.
func commandFirst(args []string) []string {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "-h" || a == "--help" || !strings.HasPrefix(a, "-") || a == "-" {
			if i == 0 {
				return args
			}
			return append(append([]string{a}, args[:i]...), args[i+1:]...)
		}
		name, _, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		_, valued := (&clientOpts{}).valued()[name]
		if (valued || slices.Contains(serverValuedFlags, name)) && !hasVal {
			i++ // its value
		}
	}
	return nil // flags alone: the command is missing (run says so)
}

func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := server.ConfigFromEnv(getenv)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "workers in this process (0: the API only)")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("serve takes no arguments, got %q", fs.Arg(0))
	}
	if cfg.Workers < 0 {
		return usageError("--workers %d: want 0 or more", cfg.Workers)
	}
	if cfg.Workers != 1 && cfg.Dispatch != "queue" {
		return usageError("--workers %d: workers take tasks from the queue, and NECTAR_DISPATCH=direct has none; unset it", cfg.Workers)
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	srv, err := server.New(cfg, catalog.Generated(), logger)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		srv.Close(context.Background())
		return fmt.Errorf("NECTAR_ADDR=%s: %w", cfg.Addr, err)
	}
	scheme := "http"
	if cfg.TLSCert != "" {
		scheme = "https"
	}
	fmt.Fprintf(stdout, "nectar: serving on %s://%s (targets: %s)\n", scheme, ln.Addr(), srv.Store())
	return srv.Serve(ctx, ln)
}

// worker runs workers only: nectar worker [--queues a,b] [--slots N].
func worker(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := server.ConfigFromEnv(getenv)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	queues := fs.String("queues", strings.Join(cfg.Queues, ","), "the queues to take tasks from, comma-separated (default: every chain type's and every queue a task names)")
	fs.IntVar(&cfg.WorkerSlots, "slots", cfg.WorkerSlots, "task messages held at once, each a batch of a run's tasks (default: NECTAR_WORKER_SLOTS, else NECTAR_MAX_RUNS × NECTAR_TASK_PARALLELISM × 4)")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("worker takes no arguments, got %q", fs.Arg(0))
	}
	cfg.Queues = nil
	for _, q := range strings.Split(*queues, ",") {
		if q = strings.TrimSpace(q); q == "" {
			continue
		}
		if err := queue.CheckName(q); err != nil {
			return usageError("--queues: %v", err)
		}
		cfg.Queues = append(cfg.Queues, q)
	}
	if cfg.WorkerSlots < 0 {
		return usageError("--slots %d: want 1 or more", cfg.WorkerSlots)
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	return server.RunWorker(ctx, cfg, catalog.Generated(), logger)
}

func reindex(ctx context.Context, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := server.ConfigFromEnv(getenv)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	n, err := server.Reindex(ctx, cfg, logger)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "nectar: run history rebuilt: %d runs\n", n)
	return nil
}
