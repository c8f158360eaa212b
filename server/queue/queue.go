// Package queue is where ready tasks wait for a worker: a NATS JetStream work-queue stream,
// one durable pull consumer per named queue, shared by every worker that serves it.
//
// By default the server embeds a single-node JetStream (in-process connection, data under the
// local targets folder, no port opened unless asked), so one machine needs nothing else and
// runs the very path a cluster runs. With a URL it joins an external cluster instead.
//
// What the queue guarantees, and what it leaves to its users:
//   - a task message is stored (on the cluster's replicas) before Publish returns;
//   - a worker holds a message until it acks it; one that dies, or goes silent for AckWait
//     (workers send in-progress acks while a task runs), loses it to another worker, up to
//     MaxDeliver deliveries, after which OnMaxDeliveries reports it;
//   - a message may thus run twice (a worker that died after its commit, before its ack): the
//     task's out is committed only if absent, which makes the second run a no-op.
package queue

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"nectar/chains"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Names of what the queue creates in JetStream. Deployment files (KEDA's scaler) name them too.
const (
	// TasksStream holds every queue's task messages, on subjects TaskSubject(queue, run).
	TasksStream = "NECTAR_TASKS"
	// ConsumerPrefix + queue name is the durable consumer of one queue.
	ConsumerPrefix = "queue-"
	// AdvisoriesStream keeps JetStream's max-deliveries advisories about task messages for
	// advisoryAge, so a driver cut off when one was sent still gets it when it reconnects.
	AdvisoriesStream = "NECTAR_ADVISORIES"
	subjectPrefix    = "nectar.tasks."
)

// EmbeddedMaxPayload is the largest message the embedded server takes: the task of a join
// lists the keys of its inputs, ~75 bytes each, so a join of 100,000 fits (NATS discourages
// more than 8 MB; a cluster's own max_payload applies to it, 1 MB unless set).
const EmbeddedMaxPayload = 8 << 20

// ErrTooBig is a message over the server's max_payload: no retry helps.
var ErrTooBig = errors.New("message too big")

// Config says where the queue lives and how it treats task messages.
type Config struct {
	// URL of an external NATS cluster (nats://host:4222, comma-separated seeds); "" embeds a
	// single-node JetStream server in this process.
	URL string
	// Creds is a NATS credentials file (user JWT and nkey seed) for URL.
	Creds string
	// CA verifies the cluster's TLS certificate; Cert and Key are this client's own (mutual TLS).
	CA, Cert, Key string
	// Replicas of the task stream on a cluster (1 or 3 in practice; the embedded server: 1).
	Replicas int
	// DataDir is the embedded server's JetStream storage (created if missing).
	DataDir string
	// Listen, if set (host:port), opens the embedded server to other processes: workers and
	// servers on this host may then use it as their URL. "" opens no port.
	Listen string
	// AckWait is how long a worker may stay silent about a task before it is redelivered
	// (workers send in-progress acks every AckWait/3 while a task runs). Default 30s.
	AckWait time.Duration
	// MaxDeliver is how often a task message is delivered before it counts as a task that
	// kills its worker. Default 5.
	MaxDeliver int
	// Name identifies this process in the cluster's connection list (e.g. nectar-worker/host/pid).
	Name   string
	Logger *slog.Logger
}

// Queue is a connection to JetStream with the task stream in place.
type Queue struct {
	cfg      Config
	embedded *server.Server // nil with an external cluster
	nc       *nats.Conn
	js       jetstream.JetStream
	stream   jetstream.Stream

	mu        sync.Mutex
	consumers map[string]jetstream.Consumer
	registry  *Registry
}

// CheckName reports whether name can be a queue's name, and if not, why: the rule tasks
// naming a queue follow (chains.Queuer).
func CheckName(name string) error { return chains.CheckQueueName(name) }

// TaskSubject is the subject of a task of run in queue: a run's messages can be purged alone.
func TaskSubject(queue, run string) string { return subjectPrefix + queue + "." + run }

// Open starts the embedded server or connects to cfg.URL, and makes sure the task stream
// exists with cfg's settings.
func Open(ctx context.Context, cfg Config) (*Queue, error) {
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.MaxDeliver <= 0 {
		cfg.MaxDeliver = 5
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	started := time.Now()
	q := &Queue{cfg: cfg, consumers: map[string]jetstream.Consumer{}}
	opts := []nats.Option{nats.Name(cfg.Name), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				cfg.Logger.Warn("queue: disconnected from NATS; reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { cfg.Logger.Info("queue: reconnected to NATS", "server", nc.ConnectedServerName()) }),
		// What the server refuses asynchronously (a permissions violation, a slow consumer)
		// goes to the log, not to stderr past it.
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			cfg.Logger.Warn("queue: NATS reports an error", "err", err)
		}),
	}
	var err error
	if cfg.URL == "" {
		if cfg.Replicas != 1 {
			return nil, fmt.Errorf("NECTAR_NATS_REPLICAS=%d needs a NATS cluster (NECTAR_NATS_URL); the embedded server keeps 1 copy", cfg.Replicas)
		}
		if q.embedded, err = startEmbedded(cfg); err != nil {
			return nil, err
		}
		opts = append(opts, nats.InProcessServer(q.embedded))
	} else {
		sec, err := securityOptions(cfg)
		if err != nil {
			return nil, err
		}
		opts = append(opts, sec...)
	}
	if q.nc, err = nats.Connect(cfg.URL, opts...); err != nil {
		q.Close()
		return nil, fmt.Errorf("connecting to NATS at %s: %w", redactURL(cfg.URL), err)
	}
	if q.js, err = jetstream.New(q.nc); err != nil {
		q.Close()
		return nil, err
	}
	// A cluster that has just started may have no JetStream leader yet: its API times out.
	err = q.patiently(ctx, started.Add(openPatience), "JetStream not ready yet", func() (err error) {
		if q.stream, err = q.ensureStream(ctx); err == nil {
			err = q.ensureAdvisories(ctx)
		}
		return q.refused(err)
	})
	if err != nil && (errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled)) {
		// Nothing answers JetStream's API: the server runs without it (nats-server -js).
		err = fmt.Errorf("JetStream does not answer at %s after %s: is it enabled (nats-server -js, or jetstream {} in its configuration)? %w",
			redactURL(cfg.URL), openPatience, err)
	}
	if err != nil {
		q.Close()
		return nil, err
	}
	return q, nil
}

// refused is err, or, when the server refused the request for permissions, an error that
// says so and is not transient: such a request gets no answer, only a timeout, and the reason
// is the connection's last error. Retrying will not help.
func (q *Queue) refused(err error) error {
	if last := q.nc.LastError(); err != nil && errors.Is(last, nats.ErrPermissionViolation) {
		return fmt.Errorf("the NATS user may not use JetStream's API for the streams %s and %s, their consumers, and the bucket KV_%s (grant $JS.API.> for them, and publish and subscribe on nectar.> and _INBOX.>): %w",
			TasksStream, AdvisoriesStream, WorkersBucket, last)
	}
	return err
}

// patiently calls f until it succeeds, fails for good (not transient), ctx ends, or the next
// try would come after until (zero: no limit), logging each retry as doing.
func (q *Queue) patiently(ctx context.Context, until time.Time, doing string, f func() error) error {
	for wait := 250 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		err := f()
		if err == nil || !transient(err) || ctx.Err() != nil || !until.IsZero() && time.Now().Add(wait).After(until) {
			return err
		}
		q.cfg.Logger.Warn("queue: "+doing+"; retrying", "err", err, "in", wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return err
		}
	}
}

// openPatience is how long Open waits for a cluster's JetStream to answer.
const openPatience = 30 * time.Second

// transient reports whether err may pass once the cluster has elected its leaders, and heard
// from all its nodes (a node restarting, or slow to report, counts as offline for placement).
func transient(err error) bool {
	var api *jetstream.APIError
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled) ||
		errors.As(err, &api) && (api.ErrorCode == errCodeNoPeers || api.ErrorCode == errCodeUnavailable)
}

// JetStream's "no suitable peers for placement", and "JetStream system temporarily
// unavailable" (a cluster without a leader).
const (
	errCodeNoPeers     jetstream.ErrorCode = 10005
	errCodeUnavailable jetstream.ErrorCode = 10008
)

// startEmbedded runs a single-node JetStream server inside this process.
func startEmbedded(cfg Config) (*server.Server, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("the embedded NATS server needs a data folder")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("the embedded NATS server's data folder: %w", err)
	}
	opts := &server.Options{ServerName: "nectar-embedded", JetStream: true, StoreDir: cfg.DataDir,
		DontListen: cfg.Listen == "", NoSigs: true, NoLog: false,
		MaxPayload: EmbeddedMaxPayload}
	if cfg.Listen != "" {
		host, port, err := splitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("NECTAR_NATS_LISTEN=%q: %w", cfg.Listen, err)
		}
		opts.Host, opts.Port = host, port
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("starting the embedded NATS server: %w", err)
	}
	logger := &natsLogger{log: cfg.Logger, fatal: make(chan string, 1)}
	ns.SetLoggerV2(logger, false, false, false)
	go ns.Start()
	// A fatal error (NECTAR_NATS_LISTEN's port taken, say) ends the wait at once: the server
	// never becomes ready, and it says why only in its log.
	for deadline := time.Now().Add(30 * time.Second); !ns.ReadyForConnections(50 * time.Millisecond); {
		select {
		case msg := <-logger.fatal:
			ns.Shutdown()
			if cfg.Listen != "" && strings.HasPrefix(msg, "Error listening on port") {
				return nil, fmt.Errorf("the embedded NATS server (NECTAR_NATS_LISTEN=%s) did not start: %s", cfg.Listen, msg)
			}
			return nil, fmt.Errorf("the embedded NATS server (its data in %s, NECTAR_NATS_DIR) did not start: %s", cfg.DataDir, msg)
		default:
		}
		if time.Now().After(deadline) {
			ns.Shutdown()
			return nil, errors.New("the embedded NATS server did not start within 30s (see the log above)")
		}
	}
	return ns, nil
}

func splitHostPort(addr string) (string, int, error) {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return "", 0, errors.New("want host:port, such as 127.0.0.1:4222")
	}
	var port int
	if _, err := fmt.Sscanf(addr[i+1:], "%d", &port); err != nil || port < 1 || port > 65535 {
		return "", 0, errors.New("want host:port with a port from 1 to 65535")
	}
	return addr[:i], port, nil
}

// securityOptions are the credentials and TLS settings for an external cluster.
func securityOptions(cfg Config) ([]nats.Option, error) {
	var opts []nats.Option
	if cfg.Creds != "" {
		if _, err := os.Stat(cfg.Creds); err != nil {
			return nil, fmt.Errorf("NECTAR_NATS_CREDS: %w", err)
		}
		opts = append(opts, nats.UserCredentials(cfg.Creds))
	}
	if cfg.CA == "" && cfg.Cert == "" && cfg.Key == "" {
		return opts, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CA != "" {
		pem, err := os.ReadFile(cfg.CA)
		if err != nil {
			return nil, fmt.Errorf("NECTAR_NATS_TLS_CA: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("NECTAR_NATS_TLS_CA: %s holds no PEM certificate", cfg.CA)
		}
	}
	if (cfg.Cert == "") != (cfg.Key == "") {
		return nil, errors.New("NECTAR_NATS_TLS_CERT and NECTAR_NATS_TLS_KEY go together: set both or neither")
	}
	if cfg.Cert != "" {
		pair, err := tls.LoadX509KeyPair(cfg.Cert, cfg.Key)
		if err != nil {
			return nil, fmt.Errorf("NECTAR_NATS_TLS_CERT/KEY: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return append(opts, nats.Secure(tc)), nil
}

// redactURL drops user:password from a NATS URL for messages.
func redactURL(u string) string {
	var out []string
	for _, part := range strings.Split(u, ",") {
		if at := strings.LastIndexByte(part, '@'); at >= 0 {
			scheme := ""
			if i := strings.Index(part, "://"); i >= 0 && i < at {
				scheme = part[:i+3]
			}
			part = scheme + "***@" + part[at+1:]
		}
		out = append(out, part)
	}
	return strings.Join(out, ",")
}

func (q *Queue) ensureStream(ctx context.Context) (jetstream.Stream, error) {
	sc := jetstream.StreamConfig{
		Name:        TasksStream,
		Description: "Nectar: ready tasks, by queue and run",
		Subjects:    []string{subjectPrefix + ">"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    q.cfg.Replicas,
		// A publish retried after a lost PubAck is stored once.
		Duplicates: 2 * time.Minute,
	}
	if q.embedded != nil {
		// The embedded server's task messages live in memory. Their drivers live in this
		// process, so a message that outlived a crash would belong to a run nobody drives: the
		// run records in the store are what survives, and a restarted server resumes its runs
		// from them and publishes their unfinished tasks again. In memory the stream also costs
		// no file system calls and no block buffers. A file stream left by an earlier version is
		// dropped for the same reason (JetStream cannot change a stream's storage in place).
		sc.Storage = jetstream.MemoryStorage
		if err := q.dropIfStorageDiffers(ctx, TasksStream, sc.Storage); err != nil {
			return nil, err
		}
	}
	if q.embedded == nil {
		info, err := q.js.Stream(ctx, TasksStream)
		if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, err // not knowing what exists, change nothing (Open retries a timeout)
		}
		if err == nil {
			have := info.CachedInfo().Config
			// Who created the stream chose its storage: a process using another's embedded
			// server (NECTAR_NATS_LISTEN) finds it in memory, and keeps it so.
			sc.Storage = have.Storage
			// Every process of a cluster ensures the stream with its own NECTAR_NATS_REPLICAS:
			// one started with a smaller number (a worker left at the default 1) must not shrink
			// the stream the others rely on. Growing it is how an operator raises it.
			if have.Replicas > sc.Replicas {
				q.cfg.Logger.Warn("queue: the task stream keeps its replicas; this process asked for fewer (NECTAR_NATS_REPLICAS)",
					"stream", TasksStream, "replicas", have.Replicas, "asked", sc.Replicas)
				sc.Replicas = have.Replicas
			}
			// Its consumers and the workers bucket follow: JetStream wants a work queue's
			// consumers to have their stream's replicas.
			q.cfg.Replicas = sc.Replicas
		}
	}
	s, err := q.js.CreateOrUpdateStream(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("creating the JetStream stream %s: %w", TasksStream, err)
	}
	return s, nil
}

// Conn is the NATS connection, for requests and events beside the task stream.
func (q *Queue) Conn() *nats.Conn { return q.nc }

// AckWait is how long a worker may stay silent about a task it holds.
func (q *Queue) AckWait() time.Duration { return q.cfg.AckWait }

// Embedded reports whether the queue runs inside this process.
func (q *Queue) Embedded() bool { return q.embedded != nil }

// ClientURL is where other processes reach the embedded server ("" when it opened no port).
func (q *Queue) ClientURL() string {
	if q.embedded == nil || q.cfg.Listen == "" {
		return ""
	}
	return q.embedded.ClientURL()
}

// Publish stores one task message in queue for run; id makes a retried publish a no-op.
// It returns the message's stream sequence (what OnMaxDeliveries reports).
func (q *Queue) Publish(ctx context.Context, queue, run, id string, data []byte) (uint64, error) {
	// The headers (the message id) count against max_payload too: a margin for them.
	if limit := q.nc.MaxPayload() - headerMargin; int64(len(data)) > limit {
		return 0, fmt.Errorf("queueing a task in %s: its message is %d bytes, over the NATS server's max_payload (%d, less %d for headers): raise max_payload in the cluster's configuration: %w", queue, len(data), limit+headerMargin, headerMargin, ErrTooBig)
	}
	// The queue's consumer exists before its first worker does: its lag is what an autoscaler
	// reads to start that worker (made once per queue and process).
	if _, err := q.consumer(ctx, queue); err != nil {
		return 0, fmt.Errorf("queueing a task in %s: %w", queue, err)
	}
	ack, err := q.js.Publish(ctx, TaskSubject(queue, run), data, jetstream.WithMsgID(id))
	if errors.Is(err, nats.ErrMaxPayload) {
		return 0, fmt.Errorf("queueing a task in %s: %w: %w", queue, err, ErrTooBig)
	}
	if err != nil {
		return 0, fmt.Errorf("queueing a task in %s: %w", queue, err)
	}
	return ack.Sequence, nil
}

// headerMargin is what a task message's headers may take of max_payload.
const headerMargin = 1024

// Has reports whether the message of sequence seq is still in the stream (not acked yet).
func (q *Queue) Has(ctx context.Context, seq uint64) (bool, error) {
	_, err := q.stream.GetMsg(ctx, seq)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false, nil
	}
	return false, err
}

// PurgeRun removes the task messages of run not yet taken by a worker (a cancelled run's).
func (q *Queue) PurgeRun(ctx context.Context, run string) error {
	return q.stream.Purge(ctx, jetstream.WithPurgeSubject(subjectPrefix+"*."+run))
}

// Delete removes one task message (one that reached its delivery limit).
func (q *Queue) Delete(ctx context.Context, seq uint64) error {
	err := q.stream.DeleteMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	return err
}

// consumer is queue's durable consumer, created on first use.
func (q *Queue) consumer(ctx context.Context, queue string) (jetstream.Consumer, error) {
	if err := CheckName(queue); err != nil {
		return nil, err
	}
	q.mu.Lock()
	c, ok := q.consumers[queue]
	q.mu.Unlock()
	if ok {
		return c, nil
	}
	// The consumer is shared by every process serving the queue, and the last to start sets
	// its settings: say so when this process changes another's.
	if old, err := q.js.Consumer(ctx, TasksStream, ConsumerPrefix+queue); err == nil {
		if was := old.CachedInfo().Config; was.AckWait != q.cfg.AckWait || was.MaxDeliver != q.cfg.MaxDeliver {
			q.cfg.Logger.Warn("queue: this process changes the settings another process gave the queue's consumer; give every server and worker the same",
				"queue", queue, "NECTAR_TASK_ACK_WAIT", q.cfg.AckWait.String(), "was", was.AckWait.String(),
				"NECTAR_TASK_DELIVERIES", q.cfg.MaxDeliver, "was_deliveries", was.MaxDeliver)
		}
	}
	c, err := q.js.CreateOrUpdateConsumer(ctx, TasksStream, jetstream.ConsumerConfig{
		Durable:       ConsumerPrefix + queue,
		Description:   "Nectar workers serving queue " + queue,
		FilterSubject: subjectPrefix + queue + ".>",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       q.cfg.AckWait,
		MaxDeliver:    q.cfg.MaxDeliver,
		MaxAckPending: -1,
		Replicas:      q.cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("creating the JetStream consumer of queue %s: %w", queue, err)
	}
	q.mu.Lock()
	q.consumers[queue] = c
	q.mu.Unlock()
	return c, nil
}

// Delivery is one task message in a worker's hands.
type Delivery struct {
	msg  jetstream.Msg
	Data []byte
	// Attempt counts deliveries of this message: above 1, a worker before this one took it
	// and never acked it (it died, or went silent for AckWait).
	Attempt int
	// Seq is the message's stream sequence.
	Seq uint64
	// Queue is the queue it came from.
	Queue string
}

// InProgress tells JetStream the task still runs: its AckWait starts again.
func (d *Delivery) InProgress() error { return d.msg.InProgress() }

// Ack removes the message: its task is finished and its result delivered. It does not wait for
// JetStream's confirmation: a lost ack means one more delivery, which finds the out committed.
func (d *Delivery) Ack() error { return d.msg.Ack() }

// Release hands the message back for another worker at once (this one is stopping).
func (d *Delivery) Release() error { return d.msg.Nak() }

// Consume hands task messages of queues to handle, at most slots at a time in all: a message
// is taken only when a slot is free, so a busy worker leaves the next ones to its peers (and no
// message waits in a worker's buffer while its AckWait runs out). handle runs in its own
// goroutine and must Ack or Release its delivery. What the cluster does meanwhile (a node
// restarting, a leader moving, the consumer deleted) is waited out and retried. Consume returns
// when ctx ends, once every handle has returned.
func (q *Queue) Consume(ctx context.Context, queues []string, slots int, handle func(*Delivery)) error {
	if len(queues) == 0 {
		return errors.New("a worker needs at least one queue")
	}
	if slots < 1 {
		return errors.New("a worker needs at least one slot")
	}
	var cons []jetstream.Consumer
	for _, name := range queues {
		// A worker that starts while its cluster elects a leader (or has lost a node) waits
		// for it, as it does once it has started (below), rather than taking no task ever.
		var c jetstream.Consumer
		err := q.patiently(ctx, time.Time{}, "creating the consumer of queue "+name, func() (err error) {
			c, err = q.consumer(ctx, name)
			return q.refused(err)
		})
		switch {
		case ctx.Err() != nil:
			return nil // stopped while it waited: as a stop once it has started
		case err != nil:
			return err
		}
		cons = append(cons, c)
	}
	free := make(chan struct{}, slots)
	for range slots {
		free <- struct{}{}
	}
	share := min(max(1, slots/len(queues)), maxFetch)
	var wg sync.WaitGroup
	defer wg.Wait()
	for i, c := range cons {
		name := queues[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			var backoff time.Duration
			for {
				// One slot at least, and as many free ones as this queue's share: the pull
				// waits (pollWait at most) with that many open, so messages that come
				// meanwhile go straight to the worker, up to that many, with no new request in
				// between. A share, not all: with few slots, every queue gets its turn.
				select {
				case <-free:
				case <-ctx.Done():
					return
				}
				n := 1
			grab:
				for n < share {
					select {
					case <-free:
						n++
					default:
						break grab
					}
				}
				var batch jetstream.MessageBatch
				var err error
				pctx, cancel := context.WithTimeout(ctx, pollWait)
				batch, err = c.Fetch(n, jetstream.FetchContext(pctx))
				got := 0
				if err == nil {
					for msg := range batch.Messages() {
						got++
						d := &Delivery{msg: msg, Data: msg.Data(), Queue: name}
						if md, err := msg.Metadata(); err == nil {
							d.Attempt, d.Seq = int(md.NumDelivered), md.Sequence.Stream
						}
						wg.Add(1)
						go func() {
							defer func() { free <- struct{}{}; wg.Done() }()
							handle(d)
						}()
					}
					err = batch.Error()
				}
				cancel()
				for range n - got {
					free <- struct{}{}
				}
				switch {
				case err == nil, errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
					backoff = 0
					continue
				case ctx.Err() != nil:
					return
				}
				// A node restarting, a leader moving, the connection going to another node,
				// the consumer deleted by hand: none of it ends the worker. Wait, and retry
				// (with the consumer made again if it is gone).
				backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
				q.cfg.Logger.Warn("queue: taking tasks failed; retrying", "queue", name, "err", err, "in", backoff)
				select {
				case <-time.After(backoff):
				case <-ctx.Done():
					return
				}
				if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
					q.mu.Lock()
					delete(q.consumers, name)
					q.mu.Unlock()
					if fresh, err := q.consumer(ctx, name); err == nil {
						c = fresh
					}
				}
			}
		}()
	}
	<-ctx.Done()
	return nil
}

// pollWait bounds one wait for messages of one queue; maxFetch the messages one pull asks for.
const (
	pollWait = time.Second
	maxFetch = 256
)

// maxDeliveriesSubject is where JetStream announces a task message that reached MaxDeliver.
const maxDeliveriesSubject = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + TasksStream + ".*"

// advisoryAge is how long an advisory is kept: longer than any reconnect worth waiting for.
const advisoryAge = time.Hour

// ensureAdvisories captures the max-deliveries advisories in a stream: JetStream sends them on
// plain subjects, which a subscriber that is reconnecting at that moment would never see, and
// its task would wait for a worker forever.
func (q *Queue) ensureAdvisories(ctx context.Context) error {
	storage := q.stream.CachedInfo().Config.Storage
	// Advisories are disposable: a stream of the wrong storage (made by a worker that connected
	// to an embedded server before the server made its own) is simply made again.
	if err := q.dropIfStorageDiffers(ctx, AdvisoriesStream, storage); err != nil {
		return err
	}
	_, err := q.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        AdvisoriesStream,
		Description: "Nectar: JetStream's word on task messages delivered too often",
		Subjects:    []string{maxDeliveriesSubject},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      advisoryAge,
		MaxMsgs:     100_000, // a storm of dying workers does not fill the account
		Discard:     jetstream.DiscardOld,
		Storage:     storage,
		Replicas:    q.stream.CachedInfo().Config.Replicas,
	})
	if err != nil {
		return fmt.Errorf("creating the JetStream stream %s: %w", AdvisoriesStream, err)
	}
	return nil
}

// dropIfStorageDiffers deletes stream name if it exists with another storage than want
// (JetStream cannot change a stream's storage in place).
func (q *Queue) dropIfStorageDiffers(ctx context.Context, name string, want jetstream.StorageType) error {
	info, err := q.js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if info.CachedInfo().Config.Storage == want {
		return nil
	}
	if err := q.js.DeleteStream(ctx, name); err != nil {
		return fmt.Errorf("dropping the %s stream %s to make it again in %s: %w", info.CachedInfo().Config.Storage, name, want, err)
	}
	return nil
}

// maxDeliveries is JetStream's advisory for a message that reached its consumer's MaxDeliver.
type maxDeliveries struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries int    `json:"deliveries"`
}

// OnMaxDeliveries calls f with the stream sequence of each task message delivered MaxDeliver
// times without an ack (its workers died each time), announced since the given time, until
// stop is called. It reads them from AdvisoriesStream with an ordered consumer, which after a
// reconnect resumes where it stopped: an advisory sent meanwhile is late, not lost. A consumer
// that cannot be made yet (a NATS cluster electing its leaders: a server of a 3-node cluster
// gave up at its start after 30 s) is made in the background, retried with backoff: the
// advisories since then are read once it is, and the server starts meanwhile.
func (q *Queue) OnMaxDeliveries(since time.Time, f func(seq uint64, deliveries int)) (stop func(), err error) {
	consume := func() (jetstream.ConsumeContext, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := q.js.OrderedConsumer(ctx, AdvisoriesStream, jetstream.OrderedConsumerConfig{
			DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &since})
		if err != nil {
			return nil, fmt.Errorf("reading the advisories of %s: %w", TasksStream, err)
		}
		cc, err := c.Consume(func(m jetstream.Msg) {
			var a maxDeliveries
			if json.Unmarshal(m.Data(), &a) == nil && a.Stream == TasksStream {
				f(a.StreamSeq, a.Deliveries)
			}
		}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			q.cfg.Logger.Warn("queue: reading the advisories; it resumes where it stopped", "err", err)
		}))
		if err != nil {
			return nil, fmt.Errorf("reading the advisories of %s: %w", TasksStream, err)
		}
		return cc, nil
	}
	first, err := consume()
	if err == nil {
		return first.Stop, nil
	}
	q.cfg.Logger.Warn("queue: cannot read the advisories yet; retrying (a task whose workers keep dying is noticed once it works)", "err", err)
	var mu sync.Mutex
	var cc jetstream.ConsumeContext
	stopped := make(chan struct{})
	go func() {
		for wait := advisoryRetry; ; wait = min(2*wait, 30*time.Second) {
			select {
			case <-stopped:
				return
			case <-time.After(wait):
			}
			c, err := consume()
			if err != nil {
				q.cfg.Logger.Warn("queue: cannot read the advisories yet; retrying", "err", err, "in", min(2*wait, 30*time.Second))
				continue
			}
			mu.Lock()
			defer mu.Unlock()
			select {
			case <-stopped:
				c.Stop()
			default:
				cc = c
				q.cfg.Logger.Info("queue: reading the advisories")
			}
			return
		}
	}()
	return sync.OnceFunc(func() {
		mu.Lock()
		defer mu.Unlock()
		close(stopped)
		if cc != nil {
			cc.Stop()
		}
	}), nil
}

// advisoryRetry is the first wait before OnMaxDeliveries asks again (a variable: tests).
var advisoryRetry = time.Second

// Depth is a queue's backlog: messages waiting for a worker, and taken but not acked.
func (q *Queue) Depth(ctx context.Context, queue string) (pending, inFlight int, err error) {
	c, err := q.consumer(ctx, queue)
	if err != nil {
		return 0, 0, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return 0, 0, err
	}
	return int(info.NumPending), info.NumAckPending, nil
}

// Served reports whether a worker is pulling from queue now (or holds its tasks): its consumer
// exists and has pull requests waiting or messages in hand. Workers poll without pause while
// they have free slots, so a false answer twice a moment apart means nobody serves it.
func (q *Queue) Served(ctx context.Context, queue string) (bool, error) {
	c, err := q.stream.Consumer(ctx, ConsumerPrefix+queue)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return false, err
	}
	return info.NumWaiting > 0 || info.NumAckPending > 0, nil
}

// Close drains the connection and stops the embedded server.
func (q *Queue) Close() error {
	if q.nc != nil {
		q.nc.Close()
	}
	if q.embedded != nil {
		q.embedded.Shutdown()
		q.embedded.WaitForShutdown()
	}
	return nil
}

// natsLogger sends the embedded server's warnings and errors to the server's log, and its
// first fatal error to fatal: nats-server reports one only by logging it.
type natsLogger struct {
	log   *slog.Logger
	fatal chan string // capacity 1
}

func (l *natsLogger) Noticef(string, ...any) {}
func (l *natsLogger) Debugf(string, ...any)  {}
func (l *natsLogger) Tracef(string, ...any)  {}
func (l *natsLogger) Warnf(format string, v ...any) {
	l.log.Warn("embedded NATS: " + fmt.Sprintf(format, v...))
}
func (l *natsLogger) Errorf(format string, v ...any) {
	l.log.Error("embedded NATS: " + fmt.Sprintf(format, v...))
}
func (l *natsLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error("embedded NATS (fatal): " + msg)
	select {
	case l.fatal <- msg:
	default:
	}
}

// ServerName is the NATS server this connection is on now.
func (q *Queue) ServerName() string { return q.nc.ConnectedServerName() }
