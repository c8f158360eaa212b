package runs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"nectar/plugins"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// What servers and workers say to each other over NATS, beside the task stream (package
// queue). A server that drives a run (holds its lease) publishes its ready tasks to the stream
// and listens on its own subject for what workers report; workers answer graph requests and
// follow run controls.
//
//	nectar.tasks.<queue>.<run>   tasks of a run (jobMsg), in the JetStream stream: exactly one worker takes it
//	nectar.driver.<server>       from workers to the driving server: updates, results (acked), metrics
//	nectar.graph.<type>          a run's task graph, from any worker with that chain type's plugin
//	nectar.control               to every worker: cancel, halt or abandon a run
//	nectar.worker.<id>.end       to one worker: a run is over, end its lane and send its usage
const (
	graphSubjectPrefix = "nectar.graph."
	controlSubject     = "nectar.control"
	workerGroup        = "nectar-workers" // the queue group of graph responders
)

func driverSubject(id string) string    { return "nectar.driver." + id }
func workerEndSubject(id string) string { return "nectar.worker." + id + ".end" }

// jobMsg is a task message in the queue: one or more tasks of a run, for one queue (in the
// binary form of codec.go).
type jobMsg struct {
	Jobs        []taskJob
	Driver      string // the subject of the server driving the run (a graph request: its inbox)
	Parallelism int
	RunConns    []string // every connection the run declares
	// Graph is a graph request (a graphRequest's JSON) instead of tasks: sent through the
	// stream when no worker of the chain type listens, so that it waits for the first one to
	// start (and an autoscaler sees it pending, as it sees tasks).
	Graph []byte
}

// run is the run of the message's tasks (not of a graph request).
func (m *jobMsg) run() string { return m.Jobs[0].Run }

// each calls f for every task of the message, side by side, and returns when all returned.
func (m *jobMsg) each(f func(*taskJob)) {
	var wg sync.WaitGroup
	for k := range m.Jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			growStack()
			f(&m.Jobs[k])
		}()
	}
	wg.Wait()
}

// driverMsg is what a worker tells the server driving a run: one of an update, a task's end
// (a request: the worker acks the task message once the server has it), or the usage of the
// run's lane on that worker.
type driverMsg struct {
	Run     string       `json:"run"`
	Worker  string       `json:"worker"`
	Lane    string       `json:"lane,omitempty"` // with Metrics: which of the run's lanes on the worker
	Update  *taskUpdate  `json:"update,omitempty"`
	Result  *resultMsg   `json:"result,omitempty"`
	Metrics *laneMetrics `json:"metrics,omitempty"`
}

type resultMsg struct {
	Index      int        `json:"index"`
	Seq        uint64     `json:"seq,omitempty"` // the stream sequence of the task's message
	Err        string     `json:"err,omitempty"`
	Fatal      bool       `json:"fatal,omitempty"`
	NotStarted bool       `json:"not_started,omitempty"`
	NoLog      bool       `json:"no_log,omitempty"`    // it failed, and no log of it was stored
	LogEmpty   bool       `json:"log_empty,omitempty"` // it is done and wrote no log: none is stored
	Artifacts  []Artifact `json:"artifacts,omitempty"`
	// Attempts are this delivery's, numbered from 1: the news on the way may have been lost.
	Attempts []Attempt `json:"attempts,omitempty"`
}

func (r resultMsg) result() taskResult {
	return taskResult{idx: r.Index, err: r.Err, fatal: r.Fatal, notStarted: r.NotStarted, artifacts: r.Artifacts, attempts: r.Attempts, noLog: r.NoLog, logEmpty: r.LogEmpty}
}

func resultOf(t taskResult) *resultMsg {
	return &resultMsg{Index: t.idx, Err: t.err, Fatal: t.fatal, NotStarted: t.notStarted, Artifacts: t.artifacts, Attempts: t.attempts, NoLog: t.noLog, LogEmpty: t.logEmpty}
}

// laneMetrics is a lane's usage so far: Samples are those taken since the last report.
type laneMetrics struct {
	CPUSeconds float64                `json:"cpu_seconds"`
	PeakRSS    uint64                 `json:"peak_rss_bytes"`
	Processes  int                    `json:"processes"`
	Samples    []Sample               `json:"samples,omitempty"`
	Tasks      map[string]TaskMetrics `json:"tasks,omitempty"`
}

// controlMsg goes to every worker.
type controlMsg struct {
	Run string `json:"run"`
	// "cancel": stop its tasks now; "halt": start no more; "abandon": its driver is dead and
	// another run took its key over: stop its tasks and keep their ends.
	Action string `json:"action"`
	Reason string `json:"reason,omitempty"`
}

// endMsg asks a worker to end a run's lane.
type endMsg struct {
	Run   string `json:"run"`
	Reuse bool   `json:"reuse"` // the run ended well: its process may wait for the next run
}

// Big answers (a graph of 100,000 tasks is megabytes) go in parts: NATS bounds a message
// (1 MB by default). The first part says how many follow.
const (
	partHeader = "Nectar-Parts"
	partSize   = 512 << 10
)

// respondParts answers m with b, in parts if it is big.
func respondParts(nc *nats.Conn, subject string, b []byte) error {
	n := max(1, (len(b)+partSize-1)/partSize)
	for i := range n {
		part := b[min(i*partSize, len(b)):min((i+1)*partSize, len(b))]
		msg := &nats.Msg{Subject: subject, Data: part}
		if i == 0 {
			msg.Header = nats.Header{partHeader: []string{strconv.Itoa(n)}}
		}
		if err := nc.PublishMsg(msg); err != nil {
			return err
		}
	}
	return nil
}

// requestParts sends a request and gathers an answer sent by respondParts.
func requestParts(ctx context.Context, nc *nats.Conn, subject string, data []byte) ([]byte, error) {
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(subject, inbox, data); err != nil {
		return nil, err
	}
	return gatherParts(ctx, sub, subject)
}

// gatherParts reads an answer sent by respondParts to sub's subject.
func gatherParts(ctx context.Context, sub *nats.Subscription, subject string) ([]byte, error) {
	first, err := sub.NextMsgWithContext(ctx)
	if err != nil {
		return nil, err
	}
	if len(first.Data) == 0 && first.Header.Get("Status") == "503" {
		return nil, nats.ErrNoResponders
	}
	n, err := strconv.Atoi(first.Header.Get(partHeader))
	if err != nil || n < 1 {
		return nil, fmt.Errorf("a malformed answer on %s", subject)
	}
	var buf bytes.Buffer
	buf.Write(first.Data)
	for i := 1; i < n; i++ {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return nil, fmt.Errorf("part %d of %d of the answer on %s: %w", i+1, n, subject, err)
		}
		buf.Write(m.Data)
	}
	return buf.Bytes(), nil
}

// graphRequest asks any worker with a chain type's plugin for a run's task graph.
type graphRequest struct {
	Run string               `json:"run"`
	Req plugins.GraphRequest `json:"req"`
}

// noDriverPatience is how long a worker keeps offering a result nobody listens for.
const noDriverPatience = 10 * time.Second

// graphAnswer is a worker's answer to a graph request.
type graphAnswer struct {
	Graph    json.RawMessage `json:"graph,omitempty"`     // plugins.GraphResponse
	TakeErr  string          `json:"take_err,omitempty"`  // no plugin process could start
	GraphErr string          `json:"graph_err,omitempty"` // the plugin's error building the graph
	Worker   string          `json:"worker"`
}

// deliver sends a task's end to its driver and waits until it has it, retrying through a
// cluster's failover (a driver moving to another node has no subscription for a moment);
// false when nobody has listened on the subject for noDriverPatience (the driver is gone: the
// server that takes the run over finds the out in the store) or ctx ends.
func deliver(ctx context.Context, nc *nats.Conn, subject string, b []byte) bool {
	var silentSince time.Time
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := nc.RequestWithContext(rctx, subject, b)
		cancel()
		switch {
		case err == nil:
			return true
		case ctx.Err() != nil:
			return false
		case errors.Is(err, nats.ErrNoResponders):
			if silentSince.IsZero() {
				silentSince = time.Now()
			} else if time.Since(silentSince) > noDriverPatience {
				return false
			}
		default:
			silentSince = time.Time{}
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return false
		}
	}
}
