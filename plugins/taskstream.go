package plugins

import (
	"context"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Tasks go to a plugin over one long-lived bidirectional stream (RunTasks), not one unary call
// each: a unary call opens an HTTP/2 stream, sends headers both ways and wakes both sides for
// every task, which for a trivial leaf costs more than the task. On the stream, each side sends
// in one message whatever queued while its previous message went out, so the many leaves a
// fan-in makes ready at once travel together, and so do their results; a single task still goes
// at once. A call's own context still cancels it: the host sends its id in Cancel.

// taskBatch is a host-to-plugin message: tasks to start, and ids of started ones to cancel.
type taskBatch struct {
	Run    []taskCall `json:"run,omitempty"`
	Cancel []uint64   `json:"cancel,omitempty"`
}

type taskCall struct {
	ID  uint64          `json:"id"`
	Req *RunTaskRequest `json:"req"`
	// Deadline is the call's (zero: none): the task's context carries it, as a unary call's
	// would, so user code can see how long it has.
	Deadline time.Time `json:"deadline,omitzero"`
}

// taskResults is a plugin-to-host message: tasks that ended.
type taskResults struct {
	Done []taskDone `json:"done"`
}

// taskDone is one task's answer, or the error its RunTask returned (not a task failure: that is
// in Resp).
type taskDone struct {
	ID   uint64           `json:"id"`
	Resp *RunTaskResponse `json:"resp,omitempty"`
	Err  string           `json:"err,omitempty"`
}

const (
	methodRunTasks = "RunTasks"
	fullRunTasks   = "/" + serviceName + "/" + methodRunTasks
	// maxBatchCost bounds a host message well under the plugin's 64 MB receive limit: a task
	// counts 1 plus its inputs (a path each, ~100 bytes).
	maxBatchCost = 100_000
	// maxResultBatch bounds a plugin message the same way (results are small).
	maxResultBatch = 1024
)

// deadlineGrace puts a task's deadline in the plugin a little after the host's: the host's
// timer decides that a task timed out (and the plugin's answer racing it is not taken for one
// that ended on its own).
const deadlineGrace = 100 * time.Millisecond

var runTasksStreamDesc = grpc.StreamDesc{StreamName: methodRunTasks, ServerStreams: true, ClientStreams: true}

// taskMux is the host side of the stream: RunTask calls from many goroutines share it.
type taskMux struct {
	conn *grpc.ClientConn

	mu      sync.Mutex
	started bool
	err     error // the stream broke: every later call fails with it
	nextID  uint64
	waiting map[uint64]chan taskReply
	queue   []taskCall
	cancels []uint64
	wake    chan struct{} // the sender has something to send (capacity 1)
}

func newTaskMux(conn *grpc.ClientConn) *taskMux {
	return &taskMux{conn: conn, waiting: map[uint64]chan taskReply{}, wake: make(chan struct{}, 1)}
}

// taskReply is what a caller gets: the plugin's answer, or why there is none.
type taskReply struct {
	resp *RunTaskResponse
	err  error
}

// call runs req in the plugin and waits for its answer or for ctx.
func (m *taskMux) call(ctx context.Context, req *RunTaskRequest) (*RunTaskResponse, error) {
	done := make(chan taskReply, 1)
	m.mu.Lock()
	if !m.started {
		m.started = true
		if err := m.open(); err != nil {
			m.err = err
		}
	}
	if m.err != nil {
		err := m.err
		m.mu.Unlock()
		return nil, err
	}
	m.nextID++
	id := m.nextID
	m.waiting[id] = done
	call := taskCall{ID: id, Req: req}
	call.Deadline, _ = ctx.Deadline()
	m.queue = append(m.queue, call)
	m.mu.Unlock()
	m.signal()

	select {
	case r := <-done:
		if ctx.Err() != nil { // its deadline passed as it answered: the host's clock decides
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return r.resp, r.err
	case <-ctx.Done():
		m.mu.Lock()
		if _, ok := m.waiting[id]; ok {
			delete(m.waiting, id)
			if i := slices.IndexFunc(m.queue, func(c taskCall) bool { return c.ID == id }); i >= 0 {
				m.queue = slices.Delete(m.queue, i, i+1) // not sent yet: it never starts
			} else {
				m.cancels = append(m.cancels, id)
			}
		}
		m.mu.Unlock()
		m.signal()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

func (m *taskMux) signal() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// open starts the stream and its two goroutines (m.mu held). They end when the stream breaks,
// which the process's exit or kill does.
func (m *taskMux) open() error {
	stream, err := m.conn.NewStream(context.Background(), &runTasksStreamDesc, fullRunTasks,
		grpc.CallContentSubtype(codecName), grpc.MaxCallRecvMsgSize(maxMessageSize))
	if err != nil {
		return err
	}
	broke := make(chan struct{})
	go m.send(stream, broke)
	go m.receive(stream, broke)
	return nil
}

// send writes what queued since its last message, in one message (bounded by maxBatchCost).
func (m *taskMux) send(stream grpc.ClientStream, broke <-chan struct{}) {
	for {
		select {
		case <-m.wake:
		case <-broke:
			return
		}
		m.mu.Lock()
		var b taskBatch
		cost := 0
		for len(m.queue) > 0 && (len(b.Run) == 0 || cost+1+len(m.queue[0].Req.Inputs) <= maxBatchCost) {
			cost += 1 + len(m.queue[0].Req.Inputs)
			b.Run = append(b.Run, m.queue[0])
			m.queue[0] = taskCall{}
			m.queue = m.queue[1:]
		}
		b.Cancel, m.cancels = m.cancels, nil
		more := len(m.queue) > 0
		m.mu.Unlock()
		if more {
			m.signal()
		}
		if len(b.Run) == 0 && len(b.Cancel) == 0 {
			continue
		}
		if err := stream.SendMsg(&b); err != nil {
			// The receiver sees the real cause (SendMsg reports io.EOF for a broken stream).
			return
		}
	}
}

// receive hands each result to its caller; when the stream breaks, every caller waiting (and
// every later one) gets the error.
func (m *taskMux) receive(stream grpc.ClientStream, broke chan<- struct{}) {
	for {
		var r taskResults
		if err := stream.RecvMsg(&r); err != nil {
			m.mu.Lock()
			m.err = err
			waiting := m.waiting
			m.waiting = map[uint64]chan taskReply{}
			m.queue = nil
			m.mu.Unlock()
			close(broke)
			for _, ch := range waiting {
				ch <- taskReply{err: err}
			}
			return
		}
		m.mu.Lock()
		for _, d := range r.Done {
			if ch, ok := m.waiting[d.ID]; ok {
				delete(m.waiting, d.ID)
				if d.Err != "" {
					ch <- taskReply{err: status.Error(codes.Unknown, d.Err)} // as a unary call's error reads
				} else {
					ch <- taskReply{resp: d.Resp}
				}
			}
		}
		m.mu.Unlock()
	}
}

// serveRunTasks is the plugin side: each task runs in its own goroutine, as a unary call would,
// and one goroutine sends the results in batches.
func serveRunTasks(srv any, stream grpc.ServerStream) error {
	r := srv.(Runner)
	ctx, stop := context.WithCancel(stream.Context())
	defer stop() // the stream ended: running tasks are cancelled

	results := make(chan taskDone, maxResultBatch)
	sending := make(chan struct{})
	defer func() { stop(); <-sending }() // no SendMsg after the handler returns
	go func() {
		defer close(sending)
		for {
			var d taskDone
			select {
			case d = <-results:
			case <-ctx.Done():
				return
			}
			out := taskResults{Done: []taskDone{d}}
		drain:
			for len(out.Done) < maxResultBatch {
				select {
				case d := <-results:
					out.Done = append(out.Done, d)
				default:
					break drain
				}
			}
			if err := stream.SendMsg(&out); err != nil {
				stop()
				return
			}
		}
	}()

	var mu sync.Mutex
	cancels := map[uint64]context.CancelFunc{}
	for {
		var b taskBatch
		if err := stream.RecvMsg(&b); err != nil {
			return err // io.EOF: the host closed it
		}
		mu.Lock()
		for _, c := range b.Run {
			tctx, cancel := context.WithCancel(ctx)
			if !c.Deadline.IsZero() {
				cancel()
				tctx, cancel = context.WithDeadline(ctx, c.Deadline.Add(deadlineGrace))
			}
			cancels[c.ID] = cancel
			go func() {
				d := taskDone{ID: c.ID}
				resp, err := r.RunTask(tctx, c.Req)
				if err != nil {
					d.Err = err.Error()
				} else {
					d.Resp = resp
				}
				mu.Lock()
				delete(cancels, c.ID)
				mu.Unlock()
				cancel()
				select {
				case results <- d:
				case <-ctx.Done():
				}
			}()
		}
		for _, id := range b.Cancel { // after the runs, in case one names a run of this message
			if cancel, ok := cancels[id]; ok {
				cancel()
			}
		}
		mu.Unlock()
	}
}
