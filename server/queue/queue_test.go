package queue

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"nectar/server/queue/natstest"
	"nectar/tools/lockedbuf"

	"github.com/nats-io/nats.go/jetstream"
)

// embedded opens a queue on an embedded server in a temporary folder.
func embedded(t *testing.T, cfg Config) *Queue {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	q, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// consume runs Consume in the background until the test ends (or stop is called).
func consume(t *testing.T, q *Queue, queues []string, slots int, handle func(*Delivery)) (stop func()) {
	t.Helper()
	return consumeErr(t, q, queues, slots, handle, func(err error) { t.Errorf("Consume: %v", err) })
}

// consumeErr is consume with onErr for what Consume returns.
func consumeErr(t *testing.T, q *Queue, queues []string, slots int, handle func(*Delivery), onErr func(error)) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- q.Consume(ctx, queues, slots, handle) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				onErr(err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func publish(t *testing.T, q *Queue, queue, run string, n int) []uint64 {
	t.Helper()
	var seqs []uint64
	for i := range n {
		// Message ids are the stream's: unique across queues and runs.
		seq, err := q.Publish(context.Background(), queue, run, fmt.Sprintf("%s/%s-%d", queue, run, i), []byte(fmt.Sprintf("%s-%d", run, i)))
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	return seqs
}

func TestEmbeddedServerOpensNoPortUnlessAsked(t *testing.T) {
	q := embedded(t, Config{})
	if !q.Embedded() || q.ClientURL() != "" || q.embedded.Addr() != nil {
		t.Fatalf("embedded server without Listen: client URL %q, address %v; want no port", q.ClientURL(), q.embedded.Addr())
	}

	// With Listen, a second process on the host (here a second client) uses it as its URL.
	addr := freeAddr(t)
	host := embedded(t, Config{Listen: addr})
	if host.ClientURL() != "nats://"+addr {
		t.Fatalf("ClientURL = %q, want nats://%s", host.ClientURL(), addr)
	}
	worker, err := Open(context.Background(), Config{URL: host.ClientURL()})
	if err != nil {
		t.Fatal(err)
	}
	defer worker.Close()
	publish(t, host, "q", "r1", 1)
	got := make(chan string, 1)
	consume(t, worker, []string{"q"}, 1, func(d *Delivery) { d.Ack(); got <- string(d.Data) })
	select {
	case s := <-got:
		if s != "r1-0" {
			t.Fatalf("got %q", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the worker on the listening server's URL got nothing")
	}
}

// The embedded server keeps task messages in memory: a restarted one holds no task of the
// drivers that died with it (their runs resume from the records and publish again), and a file
// stream an earlier version left in the data folder is dropped, messages and all.
func TestARestartedEmbeddedServerHoldsNoTaskOfDeadDrivers(t *testing.T) {
	dir := t.TempDir()
	q, err := Open(context.Background(), Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	publish(t, q, "q", "r1", 3)
	if n := streamMsgsOf(t, q, TasksStream); n != 3 {
		t.Fatalf("%d messages in the stream, want 3", n)
	}
	// What an earlier version left: the same stream on disk, with a message in it.
	ctx := context.Background()
	if err := q.js.DeleteStream(ctx, TasksStream); err != nil {
		t.Fatal(err)
	}
	// (The deleted stream's folder may still be on its way out: on a busy machine the create
	// then fails for a moment, "error creating store for stream".)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		_, err := q.js.CreateStream(ctx, jetstream.StreamConfig{Name: TasksStream, Subjects: []string{subjectPrefix + ">"},
			Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
	publish(t, q, "q", "r2", 1)
	q.Close()

	q = embedded(t, Config{DataDir: dir})
	info, err := q.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Storage != jetstream.MemoryStorage || info.State.Msgs != 0 {
		t.Errorf("after a restart: %s storage, %d messages; want memory and none", info.Config.Storage, info.State.Msgs)
	}
	publish(t, q, "q", "r3", 1)
	got := make(chan string, 1)
	consume(t, q, []string{"q"}, 2, func(d *Delivery) { d.Ack(); got <- string(d.Data) })
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("a task published after the restart was not delivered")
	}
}

// A worker that dies holding a task (its connection gone, no ack) loses it to another worker
// after AckWait, and the new delivery says it is the second.
func TestATaskOfAWorkerThatDiedIsRedelivered(t *testing.T) {
	addr := freeAddr(t)
	host := embedded(t, Config{Listen: addr, AckWait: time.Second})
	dying, err := Open(context.Background(), Config{URL: host.ClientURL(), AckWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	publish(t, host, "q", "r1", 1)
	took := make(chan struct{})
	consumeErr(t, dying, []string{"q"}, 1, func(d *Delivery) {
		close(took)
		dying.nc.Close() // dies mid-task: no ack, no in-progress
	}, func(err error) {
		if !strings.Contains(err.Error(), "connection closed") {
			t.Errorf("Consume of the dead worker: %v, want connection closed", err)
		}
	})
	select {
	case <-took:
	case <-time.After(10 * time.Second):
		t.Fatal("the first worker got nothing")
	}

	got := make(chan *Delivery, 1)
	start := time.Now()
	consume(t, host, []string{"q"}, 1, func(d *Delivery) { d.Ack(); got <- d })
	select {
	case d := <-got:
		if d.Attempt != 2 || string(d.Data) != "r1-0" {
			t.Fatalf("redelivered %q as attempt %d, want r1-0 as attempt 2", d.Data, d.Attempt)
		}
		t.Logf("redelivered after %s", time.Since(start).Round(time.Millisecond))
	case <-time.After(15 * time.Second):
		t.Fatal("the task of the dead worker was never redelivered")
	}
}

// A task that runs for several AckWaits is not redelivered while its worker sends in-progress
// acks.
func TestInProgressKeepsALongTaskWithItsWorker(t *testing.T) {
	q := embedded(t, Config{AckWait: 500 * time.Millisecond})
	publish(t, q, "q", "r1", 1)
	var deliveries atomic.Int32
	finished := make(chan struct{})
	handle := func(d *Delivery) {
		deliveries.Add(1)
		if d.Attempt > 1 {
			t.Errorf("redelivered while its worker was alive (attempt %d)", d.Attempt)
			d.Ack()
			return
		}
		for range 10 { // 2 s: four AckWaits
			time.Sleep(200 * time.Millisecond)
			if err := d.InProgress(); err != nil {
				t.Error(err)
			}
		}
		d.Ack()
		close(finished)
	}
	consume(t, q, []string{"q"}, 4, handle) // free slots: a redelivery would be taken at once
	select {
	case <-finished:
	case <-time.After(15 * time.Second):
		t.Fatal("the long task never finished")
	}
	time.Sleep(time.Second) // an ack lost would show as a redelivery now
	if n := deliveries.Load(); n != 1 {
		t.Fatalf("delivered %d times, want 1", n)
	}
}

// A task whose workers all die before an ack stops after MaxDeliver deliveries, and the
// advisory names its sequence.
func TestATaskThatKeepsKillingItsWorkerIsReported(t *testing.T) {
	q := embedded(t, Config{AckWait: 300 * time.Millisecond, MaxDeliver: 3})
	reported := make(chan [2]uint64, 1)
	stop, err := q.OnMaxDeliveries(time.Now(), func(seq uint64, n int) { reported <- [2]uint64{seq, uint64(n)} })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	seq := publish(t, q, "q", "r1", 1)[0]
	var deliveries atomic.Int32
	consume(t, q, []string{"q"}, 1, func(d *Delivery) { deliveries.Add(1) }) // never acks
	select {
	case r := <-reported:
		if r[0] != seq || r[1] != 3 {
			t.Fatalf("advisory for seq %d after %d deliveries, want seq %d after 3", r[0], r[1], seq)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("no max-deliveries advisory after %d deliveries", deliveries.Load())
	}
	time.Sleep(time.Second)
	if n := deliveries.Load(); n != 3 {
		t.Fatalf("delivered %d times, want 3 (MaxDeliver)", n)
	}
	if err := q.Delete(context.Background(), seq); err != nil {
		t.Fatal(err)
	}
	if pending, inFlight, err := q.Depth(context.Background(), "q"); err != nil || pending+inFlight != 0 {
		t.Fatalf("after Delete: pending %d, in flight %d, err %v; want an empty queue", pending, inFlight, err)
	}
}

// An advisory sent while nobody listened (a driver reconnecting) is still reported: JetStream's
// advisories are kept in a stream, read from the time the listener asks for.
func TestAMaxDeliveriesAdvisoryOutlivesAListenersAbsence(t *testing.T) {
	q := embedded(t, Config{AckWait: 300 * time.Millisecond, MaxDeliver: 2})
	since := time.Now()
	seq := publish(t, q, "q", "r1", 1)[0]
	var deliveries atomic.Int32
	stopConsume := consume(t, q, []string{"q"}, 1, func(d *Delivery) { deliveries.Add(1) }) // never acks
	waitFor(t, func() bool { return streamMsgsOf(t, q, AdvisoriesStream) == 1 })
	stopConsume()
	reported := make(chan uint64, 1)
	stop, err := q.OnMaxDeliveries(since, func(s uint64, _ int) { reported <- s })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	select {
	case got := <-reported:
		if got != seq {
			t.Fatalf("advisory for seq %d, want %d", got, seq)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the advisory sent before anyone listened was not reported")
	}
	// One asking from now on hears nothing of it.
	later, err := q.OnMaxDeliveries(time.Now(), func(s uint64, _ int) { reported <- s })
	if err != nil {
		t.Fatal(err)
	}
	defer later()
	select {
	case got := <-reported:
		t.Fatalf("an advisory from before the listener asked: seq %d", got)
	case <-time.After(500 * time.Millisecond):
	}
}

// A driver that cannot read the advisories when it starts (a cluster electing its leaders;
// here, the stream is not there yet) starts anyway and reads them once it can, from the time
// it asked: an advisory of that time is reported.
func TestMaxDeliveriesAdvisoriesAreReadOnceTheyCanBe(t *testing.T) {
	defer func(d time.Duration) { advisoryRetry = d }(advisoryRetry)
	advisoryRetry = 100 * time.Millisecond
	q := embedded(t, Config{AckWait: 300 * time.Millisecond, MaxDeliver: 2})
	ctx := context.Background()
	if err := q.js.DeleteStream(ctx, AdvisoriesStream); err != nil {
		t.Fatal(err)
	}
	reported := make(chan uint64, 1)
	stop, err := q.OnMaxDeliveries(time.Now(), func(s uint64, _ int) { reported <- s })
	if err != nil {
		t.Fatalf("OnMaxDeliveries with no advisories stream: %v; want it to retry in the background", err)
	}
	defer stop()
	time.Sleep(300 * time.Millisecond) // a few tries fail meanwhile
	if err := q.ensureAdvisories(ctx); err != nil {
		t.Fatal(err)
	}
	seq := publish(t, q, "q", "r1", 1)[0]
	consume(t, q, []string{"q"}, 1, func(d *Delivery) {}) // never acks
	select {
	case got := <-reported:
		if got != seq {
			t.Fatalf("advisory for seq %d, want %d", got, seq)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no advisory reported after the stream came")
	}
}

// A process whose NATS user is refused part of JetStream's API is told what to grant, at the
// first refusal (it comes as a timeout, which a process waiting for its cluster would
// otherwise retry): Open, refused a stream; a worker's Consume, refused its queue's consumer.
func TestAUserWithoutPermissionsIsToldWhatToGrant(t *testing.T) {
	for _, c := range []struct {
		name    string
		deny    string // publish subjects denied, as a NATS list's items
		consume bool   // refused by Consume; else by Open
	}{
		{"a stream", `"$JS.API.STREAM.CREATE.NECTAR_ADVISORIES", "$JS.API.STREAM.UPDATE.NECTAR_ADVISORIES"`, false},
		{"a consumer", `"$JS.API.CONSUMER.CREATE.NECTAR_TASKS.>", "$JS.API.CONSUMER.DURABLE.CREATE.NECTAR_TASKS.>"`, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			cluster, err := natstest.Start(1, natstest.WithConfig(`authorization { users = [
  { user: limited, password: pw, permissions: { publish: { deny: [`+c.deny+`] } } }
] }`))
			if err != nil {
				t.Fatal(err)
			}
			defer cluster.Stop()
			url := strings.Replace(cluster.URL(), "nats://", "nats://limited:pw@", 1)
			start := time.Now()
			q, err := Open(context.Background(), Config{URL: url})
			if c.consume {
				if err != nil {
					t.Fatal(err)
				}
				defer q.Close()
				start = time.Now()
				ended := make(chan error, 1)
				go func() { ended <- q.Consume(context.Background(), []string{"q"}, 1, func(d *Delivery) { d.Ack() }) }()
				select {
				case err = <-ended:
				case <-time.After(openPatience):
					t.Fatal("Consume as a user refused its consumer is still retrying")
				}
			} else if err == nil {
				q.Close()
			}
			if err == nil || !strings.Contains(err.Error(), "may not use JetStream's API for the streams NECTAR_TASKS and NECTAR_ADVISORIES") ||
				!strings.Contains(err.Error(), "permissions violation") {
				t.Fatalf("refused %s: %v", c.name, err)
			}
			if took := time.Since(start); took > openPatience/2 {
				t.Errorf("refused after %s; want at the first refusal, not after retrying", took)
			}
		})
	}
}

func streamMsgsOf(t *testing.T, q *Queue, name string) uint64 {
	t.Helper()
	s, err := q.js.Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestAWorkerTakesOnlyItsQueues(t *testing.T) {
	q := embedded(t, Config{})
	publish(t, q, "gpu", "r1", 2)
	publish(t, q, "testchains", "r1", 3)
	var mu sync.Mutex
	var got []string
	stop := consume(t, q, []string{"testchains"}, 2, func(d *Delivery) {
		mu.Lock()
		got = append(got, d.Queue)
		mu.Unlock()
		d.Ack()
	})
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 3 })
	time.Sleep(300 * time.Millisecond)
	stop()
	for _, g := range got {
		if g != "testchains" {
			t.Fatalf("a worker of queue testchains took a task of %s", g)
		}
	}
	if pending, _, err := q.Depth(context.Background(), "gpu"); err != nil || pending != 2 {
		t.Fatalf("queue gpu: %d pending (err %v), want its 2 tasks waiting", pending, err)
	}
}

func TestPurgeRunDropsOnlyThatRunsWaitingTasks(t *testing.T) {
	q := embedded(t, Config{})
	publish(t, q, "q", "cancelled", 3)
	publish(t, q, "q", "kept", 2)
	if err := q.PurgeRun(context.Background(), "cancelled"); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []string
	consume(t, q, []string{"q"}, 1, func(d *Delivery) { mu.Lock(); got = append(got, string(d.Data)); mu.Unlock(); d.Ack() })
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 2 })
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	for _, g := range got {
		if !strings.HasPrefix(g, "kept-") {
			t.Fatalf("got %v; a purged run's task was delivered", got)
		}
	}
}

// Slots bound the tasks a worker holds, and workers share a queue's tasks.
func TestSlotsBoundAWorkersTasksAndWorkersShareAQueue(t *testing.T) {
	q := embedded(t, Config{})
	const n = 40
	publish(t, q, "q", "r1", n)
	type worker struct {
		slots        int
		running, max atomic.Int32
		done         atomic.Int32
	}
	workers := []*worker{{slots: 1}, {slots: 3}}
	var total atomic.Int32
	for _, w := range workers {
		consume(t, q, []string{"q"}, w.slots, func(d *Delivery) {
			now := w.running.Add(1)
			for {
				m := w.max.Load()
				if now <= m || w.max.CompareAndSwap(m, now) {
					break
				}
			}
			time.Sleep(20 * time.Millisecond)
			w.running.Add(-1)
			w.done.Add(1)
			total.Add(1)
			d.Ack()
		})
	}
	waitFor(t, func() bool { return total.Load() == n })
	for i, w := range workers {
		if int(w.max.Load()) > w.slots {
			t.Errorf("worker %d ran %d tasks at once with %d slots", i, w.max.Load(), w.slots)
		}
		if w.done.Load() == 0 {
			t.Errorf("worker %d got none of the %d tasks", i, n)
		}
	}
}

func TestConfigErrorsNameTheSetting(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o600)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"replicas without a cluster", Config{DataDir: dir, Replicas: 3}, "NECTAR_NATS_REPLICAS=3 needs a NATS cluster"},
		{"bad listen address", Config{DataDir: dir, Listen: "localhost"}, `NECTAR_NATS_LISTEN="localhost": want host:port`},
		// Refused at once, not after the 30 s a server gets to become ready.
		{"listen port taken", Config{DataDir: filepath.Join(dir, "taken"), Listen: taken.Addr().String()},
			"the embedded NATS server (NECTAR_NATS_LISTEN=" + taken.Addr().String() + ") did not start: Error listening on port"},
		{"missing creds", Config{URL: "nats://127.0.0.1:1", Creds: filepath.Join(dir, "nope.creds")}, "NECTAR_NATS_CREDS"},
		{"CA without a certificate", Config{URL: "nats://127.0.0.1:1", CA: notPEM}, "NECTAR_NATS_TLS_CA: " + notPEM + " holds no PEM certificate"},
		{"cert without key", Config{URL: "nats://127.0.0.1:1", Cert: notPEM}, "set both or neither"},
		{"no server, password hidden", Config{URL: "nats://user:s3cret@127.0.0.1:1"}, "connecting to NATS at nats://***@127.0.0.1:1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			_, err := Open(context.Background(), c.cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to contain %q", err, c.want)
			}
			if took := time.Since(start); took > 15*time.Second {
				t.Errorf("the error took %s", took)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("the error shows the password: %v", err)
			}
		})
	}
	if err := CheckName("gpu.large"); err == nil {
		t.Fatal("a queue name with a dot (a subject separator) was accepted")
	}
}

// On a 3-node cluster with 3 replicas, killing a node while tasks flow loses none of them.
func TestAClusterLosesNoTaskWhenANodeDies(t *testing.T) {
	cluster, err := natstest.Start(3)
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Stop()
	open := func() *Queue {
		q, err := Open(context.Background(), Config{URL: cluster.URL(), Replicas: 3, AckWait: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { q.Close() })
		return q
	}
	pub, work := open(), open()
	// A process asking for fewer replicas (a worker left at the default) does not shrink the
	// stream, and works with it: its consumers and bucket take the stream's replicas.
	if q, err := Open(context.Background(), Config{URL: cluster.URL(), Replicas: 1}); err != nil {
		t.Fatal(err)
	} else {
		// A busy machine may hold an election of the new stream's leader right now.
		publishThroughFailover(t, q, "r1-queue", "r0", "r1-queue/r0-0")
		got := make(chan struct{}, 1)
		stop := consume(t, q, []string{"r1-queue"}, 1, func(d *Delivery) { d.Ack(); got <- struct{}{} })
		select {
		case <-got:
		case <-time.After(20 * time.Second):
			t.Fatal("a process started with 1 replica got no task from the R3 stream")
		}
		stop()
		if _, err := q.Registry(context.Background()); err != nil {
			t.Fatalf("the workers bucket from a process asking 1 replica: %v", err)
		}
		info, err := q.stream.Info(context.Background())
		q.Close()
		if err != nil || info.Config.Replicas != 3 {
			t.Fatalf("after a process asked for 1 replica: %v, %+v; want the stream's 3 kept", err, info)
		}
	}
	const n = 300
	var mu sync.Mutex
	seen := map[string]int{}
	consume(t, work, []string{"q"}, 4, func(d *Delivery) {
		time.Sleep(2 * time.Millisecond)
		mu.Lock()
		seen[string(d.Data)]++
		mu.Unlock()
		d.Ack()
	})
	for i := range n {
		if i == n/3 {
			cluster.Kill(0)
		}
		publishThroughFailover(t, pub, "q", "r1", fmt.Sprintf("r1-%d", i))
	}
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == n })
	for i := range n {
		if seen[fmt.Sprintf("r1-%d", i)] == 0 {
			t.Fatalf("task %d was lost", i)
		}
	}
}

// A worker that starts while its cluster cannot answer (two of three nodes down: no leader to
// make its consumer) waits for the cluster and then takes tasks; it does not give up at its
// first try (it did, and took no task ever: "this worker takes no more tasks"). One stopped
// while it waits ends as a stop does, with no error.
func TestAWorkerStartedWithoutALeaderWaitsForOne(t *testing.T) {
	cluster, err := natstest.Start(3)
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Stop()
	logs := &lockedbuf.Buffer{}
	q, err := Open(context.Background(), Config{URL: cluster.URL(), Replicas: 3, AckWait: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	cluster.Kill(1)
	cluster.Kill(2)
	consume := func(queue string, handle func(*Delivery)) (stop func(), ended chan error) {
		ctx, cancel := context.WithCancel(context.Background())
		ended = make(chan error, 1)
		go func() { ended <- q.Consume(ctx, []string{queue}, 1, handle) }()
		return cancel, ended
	}
	retrying := func(queue string, ended chan error) {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); !strings.Contains(logs.String(), "creating the consumer of queue "+queue+"; retrying"); {
			select {
			case err := <-ended:
				t.Fatalf("the worker of queue %s gave up while the cluster had no leader: %v", queue, err)
			case <-time.After(10 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("the worker of queue %s did not try again in a minute; log:\n%s", queue, logs.String())
			}
		}
	}
	got := make(chan string, 1)
	stop, ended := consume("late", func(d *Delivery) { d.Ack(); got <- string(d.Data) })
	defer stop()
	stopped, endedStopped := consume("stopped", func(d *Delivery) { d.Ack() })
	retrying("late", ended)
	retrying("stopped", endedStopped)
	stopped()
	select {
	case err := <-endedStopped:
		if err != nil {
			t.Errorf("a worker stopped while it waited for the cluster ended with %v, want no error", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("a worker stopped while it waited for the cluster did not end")
	}
	for _, i := range []int{1, 2} {
		if err := cluster.Restart(i); err != nil {
			t.Fatal(err)
		}
	}
	publishThroughFailover(t, q, "late", "r", "late-0")
	select {
	case id := <-got:
		if id != "late-0" {
			t.Fatalf("the worker took %q, want late-0", id)
		}
	case err := <-ended:
		t.Fatalf("the worker gave up: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatalf("no task taken a minute after the cluster came back; log:\n%s", logs.String())
	}
}

// publishThroughFailover publishes id (its data too) as a cluster's driver does: a publish
// during a leader's election may time out or find no responder, and is retried with its id,
// which stores it once.
func publishThroughFailover(t *testing.T, q *Queue, queue, run, id string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := q.Publish(ctx, queue, run, id, []byte(id))
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("publishing %s: %v", id, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Every process serving a queue shares its consumer, and the last to start sets its settings.
// A process whose NECTAR_TASK_ACK_WAIT or NECTAR_TASK_DELIVERIES differ from the consumer's
// says so in a warning naming both; one with the same settings says nothing.
func TestAProcessChangingAQueuesSettingsSaysSo(t *testing.T) {
	cluster, err := natstest.Start(1)
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Stop()
	open := func(ackWait time.Duration, deliveries int) (*Queue, *lockedbuf.Buffer) {
		logs := &lockedbuf.Buffer{}
		q, err := Open(context.Background(), Config{URL: cluster.URL(), AckWait: ackWait, MaxDeliver: deliveries,
			Logger: slog.New(slog.NewTextHandler(logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { q.Close() })
		if _, err := q.consumer(context.Background(), "shared"); err != nil { // what a worker's Consume does first
			t.Fatal(err)
		}
		return q, logs
	}
	_, first := open(30*time.Second, 5)
	_, same := open(30*time.Second, 5)
	_, other := open(2*time.Second, 3)
	for _, l := range []*lockedbuf.Buffer{first, same} {
		if strings.Contains(l.String(), "changes the settings") {
			t.Errorf("a process with the consumer's own settings warned:\n%s", l)
		}
	}
	for _, want := range []string{"changes the settings another process gave", "queue=shared", "NECTAR_TASK_ACK_WAIT=2s", "was=30s", "NECTAR_TASK_DELIVERIES=3", "was_deliveries=5"} {
		if !strings.Contains(other.String(), want) {
			t.Errorf("the process with other settings logged %q; want it to say %q", other, want)
		}
	}
}
