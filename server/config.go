package server

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"nectar/server/queue"
	"nectar/server/runs"
	"nectar/server/signing"
	"nectar/targets/open"
)

// Config is read from NECTAR_* environment variables and checked once, at start.
type Config struct {
	Addr            string        // NECTAR_ADDR
	Target          string        // NECTAR_TARGET
	PluginDir       string        // NECTAR_PLUGIN_DIR
	PublicURL       string        // NECTAR_PUBLIC_URL ("" = http://<listen address>)
	SigningKey      []byte        // NECTAR_SIGNING_KEY (nil = random per process)
	URLExpiry       time.Duration // NECTAR_URL_EXPIRY
	MaxRuns         int           // NECTAR_MAX_RUNS
	MaxQueue        int           // NECTAR_MAX_QUEUE
	APITokens       []string      // NECTAR_API_TOKENS
	MetricsPublic   bool          // NECTAR_METRICS_PUBLIC (false: /metrics needs a token too)
	ShutdownGrace   time.Duration // NECTAR_SHUTDOWN_GRACE
	TaskTimeout     time.Duration // NECTAR_TASK_TIMEOUT
	MonitorInterval time.Duration // NECTAR_MONITOR_INTERVAL
	WarmPlugins     bool          // NECTAR_WARM_PLUGINS
	DoneCacheTTL    time.Duration // NECTAR_DONE_CACHE_TTL
	PriceVCPUHour   float64       // NECTAR_PRICE_VCPU_HOUR (USD)
	PriceGBHour     float64       // NECTAR_PRICE_GB_HOUR (USD)
	TaskParallelism int           // NECTAR_TASK_PARALLELISM
	MaxTasks        int           // NECTAR_MAX_TASKS: the largest task graph a run takes
	MaxWait         time.Duration // NECTAR_MAX_WAIT
	LogLevel        string        // NECTAR_LOG_LEVEL
	DatabaseURL     string        // NECTAR_DATABASE_URL: "" (embedded SQLite), sqlite:<file>, postgres://…, or off
	Schedules       bool          // NECTAR_SCHEDULES (false: this server fires no schedule; the API still serves them)
	ScheduleCatchUp int           // NECTAR_SCHEDULE_CATCHUP: missed intervals a catch-up schedule runs at once
	Pprof           string        // NECTAR_PPROF: host:port of net/http/pprof ("" = off)
	TLSCert         string        // NECTAR_TLS_CERT: PEM certificate (chain) of HTTPS ("" = plain HTTP)
	TLSKey          string        // NECTAR_TLS_KEY: its PEM private key

	// Dispatch is how runs reach their tasks' plugins: "queue" (NATS JetStream, to workers) or
	// "direct" (in this process, without a queue: the path before the queue, kept to compare).
	Dispatch       string        // NECTAR_DISPATCH
	NATSURL        string        // NECTAR_NATS_URL: an external cluster ("" = embedded)
	NATSCreds      string        // NECTAR_NATS_CREDS: credentials file
	NATSCA         string        // NECTAR_NATS_TLS_CA
	NATSCert       string        // NECTAR_NATS_TLS_CERT
	NATSKey        string        // NECTAR_NATS_TLS_KEY
	NATSReplicas   int           // NECTAR_NATS_REPLICAS: copies of the task stream on a cluster
	NATSListen     string        // NECTAR_NATS_LISTEN: open the embedded server on host:port
	NATSDir        string        // NECTAR_NATS_DIR: the embedded server's data ("" = beside the local targets)
	TaskDeliveries int           // NECTAR_TASK_DELIVERIES: deliveries of a task whose workers die, before it fails
	TaskAckWait    time.Duration // NECTAR_TASK_ACK_WAIT: a worker silent this long loses its task
	LeaseTTL       time.Duration // NECTAR_LEASE_TTL: a server silent this long loses its runs to another
	WorkerWait     time.Duration // NECTAR_WORKER_WAIT: how long a run waits for a worker of its chain type
	Workers        int           // workers in this process (nectar serve --workers; 0: API only)
	WorkerSlots    int           // NECTAR_WORKER_SLOTS: task messages a worker holds at once (each a batch of a run's tasks)
	WorkerBeat     time.Duration // NECTAR_WORKER_HEARTBEAT: how often a worker writes its entry (lost after 3 missed)
	// WorkerGrace (NECTAR_WORKER_GRACE) is how long the tasks in hand of a stopping
	// `nectar worker` get to finish before they are handed back to the queue; runs.NoGrace
	// (unset): as long as they take.
	WorkerGrace time.Duration
	Queues      []string // NECTAR_QUEUES: the queues this process's workers serve ("" = every chain type's and every queue a task names)

	// Getenv is the environment the store reads its credentials and endpoints from.
	Getenv func(string) string
}

// ConnectionEnv is the variable that configures connection name: NECTAR_CONN_<NAME>.
func ConnectionEnv(name string) string { return "NECTAR_CONN_" + strings.ToUpper(name) }

// MaxURLExpiry is S3's limit for presigned URLs, applied to every store alike.
const MaxURLExpiry = 7 * 24 * time.Hour

// Defaults are what `make run` uses with no environment set.
func Defaults() Config {
	return Config{
		Addr:            "127.0.0.1:5000",
		Target:          "./local_targets",
		PluginDir:       "./bin/plugins",
		URLExpiry:       600 * time.Second,
		MaxRuns:         2 * runtime.NumCPU(),
		MaxQueue:        64,
		ShutdownGrace:   30 * time.Second,
		TaskTimeout:     time.Hour,
		MonitorInterval: time.Second,
		WarmPlugins:     true,
		MetricsPublic:   true,
		DoneCacheTTL:    10 * time.Second,
		PriceVCPUHour:   runs.DefaultPricing.VCPUHour, // AWS Fargate, Linux/x86, us-east-1
		PriceGBHour:     runs.DefaultPricing.GBHour,
		TaskParallelism: max(8, 8*runtime.NumCPU()), // tasks mostly wait on I/O; parallel fsyncs share journal commits
		MaxTasks:        runs.DefaultMaxTasks,
		MaxWait:         5 * time.Minute,
		LogLevel:        "info",
		Schedules:       true,
		ScheduleCatchUp: 24,
		Dispatch:        "queue",
		NATSReplicas:    1,
		TaskDeliveries:  5,
		TaskAckWait:     30 * time.Second,
		LeaseTTL:        30 * time.Second,
		WorkerWait:      2 * time.Minute,
		WorkerBeat:      5 * time.Second,
		WorkerGrace:     runs.NoGrace,
		Workers:         1,
		Getenv:          os.Getenv,
	}
}

// ConfigFromEnv reads the environment through getenv and reports every bad variable at once.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	c := Defaults()
	c.Getenv = getenv
	var errs []error
	bad := func(name, value, why string) {
		errs = append(errs, fmt.Errorf("%s=%q: %s", name, value, why))
	}
	str := func(name string, dst *string) {
		if v := getenv(name); v != "" {
			*dst = v
		}
	}
	str("NECTAR_ADDR", &c.Addr)
	str("NECTAR_TARGET", &c.Target)
	str("NECTAR_PLUGIN_DIR", &c.PluginDir)
	str("NECTAR_PUBLIC_URL", &c.PublicURL)
	str("NECTAR_LOG_LEVEL", &c.LogLevel)
	str("NECTAR_PPROF", &c.Pprof)
	str("NECTAR_TLS_CERT", &c.TLSCert)
	str("NECTAR_TLS_KEY", &c.TLSKey)

	if _, err := splitHostPort(c.Addr); err != nil {
		bad("NECTAR_ADDR", c.Addr, "want host:port, such as 127.0.0.1:5000")
	}
	if c.Pprof != "" {
		// The profiles show the process's memory and code paths: loopback only, on purpose.
		host, err := splitHostPort(c.Pprof)
		if ip := net.ParseIP(host); err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
			bad("NECTAR_PPROF", c.Pprof, "want a loopback host:port, such as 127.0.0.1:6060")
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("NECTAR_TLS_CERT and NECTAR_TLS_KEY go together: set both or neither"))
	}
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			bad("NECTAR_PUBLIC_URL", c.PublicURL, "want an http(s) origin such as https://nectar.example.com")
		}
		c.PublicURL = strings.TrimSuffix(c.PublicURL, "/")
	}
	if v := getenv("NECTAR_SIGNING_KEY"); v != "" {
		key, err := decodeKey(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("NECTAR_SIGNING_KEY: %v", err)) // never echo a secret
		}
		c.SigningKey = key
	}
	dur := func(name string, dst *time.Duration, lo, hi time.Duration) {
		v := getenv(name)
		if v == "" {
			return
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			if n, nerr := strconv.Atoi(v); nerr == nil { // plain seconds
				d, err = time.Duration(n)*time.Second, nil
			}
		}
		switch {
		case err != nil:
			bad(name, v, "not a duration (such as 600s or 10m)")
		case d < lo || d > hi:
			bad(name, v, fmt.Sprintf("must be between %s and %s", lo, hi))
		default:
			*dst = d
		}
	}
	if _, err := open.StoreTimeout(getenv); err != nil { // read where the store is opened
		errs = append(errs, err)
	}
	dur("NECTAR_URL_EXPIRY", &c.URLExpiry, time.Second, MaxURLExpiry)
	dur("NECTAR_MAX_WAIT", &c.MaxWait, 0, time.Hour)
	num := func(name string, dst *int, lo, hi int) {
		v := getenv(name)
		if v == "" {
			return
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			bad(name, v, fmt.Sprintf("want a whole number from %d to %d", lo, hi))
			return
		}
		*dst = n
	}
	num("NECTAR_MAX_RUNS", &c.MaxRuns, 1, 10000)
	num("NECTAR_MAX_QUEUE", &c.MaxQueue, 0, 1000000)
	dur("NECTAR_SHUTDOWN_GRACE", &c.ShutdownGrace, 0, time.Hour)
	dur("NECTAR_TASK_TIMEOUT", &c.TaskTimeout, time.Second, 30*24*time.Hour)
	dur("NECTAR_MONITOR_INTERVAL", &c.MonitorInterval, 100*time.Millisecond, time.Hour)
	dur("NECTAR_DONE_CACHE_TTL", &c.DoneCacheTTL, 0, time.Hour)
	price := func(name string, dst *float64) {
		v := getenv(name)
		if v == "" {
			return
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
			bad(name, v, "want a price in USD, 0 or more (such as 0.04048)")
			return
		}
		*dst = f
	}
	if v := getenv("NECTAR_WARM_PLUGINS"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			bad("NECTAR_WARM_PLUGINS", v, "want true or false")
		}
		c.WarmPlugins = b
	}
	price("NECTAR_PRICE_VCPU_HOUR", &c.PriceVCPUHour)
	price("NECTAR_PRICE_GB_HOUR", &c.PriceGBHour)
	if v := getenv("NECTAR_API_TOKENS"); v != "" {
		for i, tok := range strings.Split(v, ",") {
			tok = strings.TrimSpace(tok)
			if len(tok) < 16 {
				// Never echo a token, not even a bad one.
				errs = append(errs, fmt.Errorf("NECTAR_API_TOKENS: token %d is %d characters; use at least 16 (openssl rand -hex 16)", i+1, len(tok)))
				continue
			}
			c.APITokens = append(c.APITokens, tok)
		}
	}
	if v := getenv("NECTAR_METRICS_PUBLIC"); v != "" {
		b, err := strconv.ParseBool(v)
		switch {
		case err != nil:
			bad("NECTAR_METRICS_PUBLIC", v, "want true or false")
		case !b && getenv("NECTAR_API_TOKENS") == "":
			// With no token to ask for, the guard lets every request through: /metrics would
			// stay public while the operator believes it is not.
			bad("NECTAR_METRICS_PUBLIC", v, "false puts /metrics behind the bearer tokens, but NECTAR_API_TOKENS is not set")
		default:
			c.MetricsPublic = b
		}
	}
	num("NECTAR_TASK_PARALLELISM", &c.TaskParallelism, 1, 10000)
	num("NECTAR_MAX_TASKS", &c.MaxTasks, 1, 10_000_000)
	if v := getenv("NECTAR_DATABASE_URL"); v != "" {
		switch {
		case v == "off", strings.HasPrefix(v, "postgres://"), strings.HasPrefix(v, "postgresql://"):
		case strings.HasPrefix(v, "sqlite:") && len(v) > len("sqlite:"):
		default:
			// Only the scheme: the rest may hold a password.
			scheme, _, _ := strings.Cut(v, ":")
			errs = append(errs, fmt.Errorf("NECTAR_DATABASE_URL: scheme %q: want postgres://user:password@host:5432/db, sqlite:<file>, or off (unset: an embedded SQLite file beside the local targets)", clipScheme(scheme)))
		}
		c.DatabaseURL = v
	}
	if v := getenv("NECTAR_SCHEDULES"); v != "" {
		switch strings.ToLower(v) {
		case "on", "true", "1":
			c.Schedules = true
		case "off", "false", "0":
			c.Schedules = false
		default:
			bad("NECTAR_SCHEDULES", v, "want on or off")
		}
	}
	num("NECTAR_SCHEDULE_CATCHUP", &c.ScheduleCatchUp, 1, 10000)
	str("NECTAR_DISPATCH", &c.Dispatch)
	if c.Dispatch != "queue" && c.Dispatch != "direct" {
		bad("NECTAR_DISPATCH", c.Dispatch, "want queue or direct")
	}
	str("NECTAR_NATS_URL", &c.NATSURL)
	str("NECTAR_NATS_CREDS", &c.NATSCreds)
	str("NECTAR_NATS_TLS_CA", &c.NATSCA)
	str("NECTAR_NATS_TLS_CERT", &c.NATSCert)
	str("NECTAR_NATS_TLS_KEY", &c.NATSKey)
	str("NECTAR_NATS_LISTEN", &c.NATSListen)
	str("NECTAR_NATS_DIR", &c.NATSDir)
	if c.NATSURL != "" {
		for i, u := range strings.Split(c.NATSURL, ",") {
			if !strings.HasPrefix(u, "nats://") && !strings.HasPrefix(u, "tls://") {
				// Only the scheme: the rest may hold a password.
				scheme, _, _ := strings.Cut(u, ":")
				errs = append(errs, fmt.Errorf("NECTAR_NATS_URL: scheme %q: want nats://host:4222 or tls://host:4222, comma-separated", clipScheme(scheme)))
				break
			}
			// Nor the parser's reason, which quotes the URL (a password with a "/" in it).
			if _, err := url.Parse(u); err != nil {
				errs = append(errs, fmt.Errorf("NECTAR_NATS_URL: URL %d is not a URL: percent-encode a user's or password's reserved characters, or use NECTAR_NATS_CREDS", i+1))
				break
			}
		}
		if c.NATSListen != "" {
			bad("NECTAR_NATS_LISTEN", c.NATSListen, "opens the embedded NATS server, but NECTAR_NATS_URL names an external one")
		}
	}
	if c.NATSListen != "" {
		if _, err := splitHostPort(c.NATSListen); err != nil {
			bad("NECTAR_NATS_LISTEN", c.NATSListen, "want host:port, such as 127.0.0.1:4222")
		}
	}
	num("NECTAR_NATS_REPLICAS", &c.NATSReplicas, 1, 5)
	num("NECTAR_TASK_DELIVERIES", &c.TaskDeliveries, 1, 100)
	dur("NECTAR_TASK_ACK_WAIT", &c.TaskAckWait, time.Second, time.Hour)
	dur("NECTAR_LEASE_TTL", &c.LeaseTTL, time.Second, time.Hour)
	dur("NECTAR_WORKER_WAIT", &c.WorkerWait, time.Second, 24*time.Hour)
	num("NECTAR_WORKER_SLOTS", &c.WorkerSlots, 1, 100000)
	dur("NECTAR_WORKER_HEARTBEAT", &c.WorkerBeat, 100*time.Millisecond, time.Hour)
	dur("NECTAR_WORKER_GRACE", &c.WorkerGrace, 0, 30*24*time.Hour)
	if v := getenv("NECTAR_QUEUES"); v != "" {
		for _, q := range strings.Split(v, ",") {
			q = strings.TrimSpace(q)
			if err := queue.CheckName(q); err != nil {
				errs = append(errs, fmt.Errorf("NECTAR_QUEUES: %w", err))
				continue
			}
			c.Queues = append(c.Queues, q)
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("NECTAR_LOG_LEVEL", c.LogLevel, "want debug, info, warn or error")
	}
	return c, errors.Join(errs...)
}

// splitHostPort is net.SplitHostPort with a port a listener can open (0 to 65535, or a service
// name), so that a typo is refused here, with the other mistakes, not when the server listens.
func splitHostPort(v string) (host string, err error) {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return "", err
	}
	if n, err := strconv.Atoi(port); err == nil && (n < 0 || n > 65535) {
		return "", fmt.Errorf("port %d is not from 0 to 65535", n)
	} else if err != nil {
		if _, err := net.LookupPort("tcp", port); err != nil { // a service name, such as http
			return "", fmt.Errorf("port %q is neither a number nor a known service", port)
		}
	}
	return host, nil
}

func decodeKey(v string) ([]byte, error) {
	if b, err := hex.DecodeString(v); err == nil && len(b) >= signing.MinKeyLen {
		return b, nil
	}
	if b, err := base64.StdEncoding.DecodeString(v); err == nil && len(b) >= signing.MinKeyLen {
		return b, nil
	}
	return nil, fmt.Errorf("want at least %d random bytes, hex or base64 encoded (openssl rand -hex 32)", signing.MinKeyLen)
}

func clipScheme(s string) string {
	if len(s) > 20 || strings.ContainsAny(s, "@/") {
		return "?"
	}
	return s
}
