package runs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"nectar/chains"
	"nectar/plugins"
)

// A fake plugin for the run manager's tests: a Starter whose processes are plain Go values
// (no subprocess, no binary). Every process answers the same scripted task graph, and runs
// each task the way its scripted behaviour says, writing the files a real plugin writes
// (plugins/serve): the log and the out at the staging paths the host chose.

// fakeTask is one task of a fake chain. The first task of a fakeChain is the root.
type fakeTask struct {
	name     string // the task's type name: unique within the chain, and what behaviours key on
	params   string // canonical JSON ("" is {})
	requires []string
	timeout  time.Duration
	retry    *chains.RetryPolicy
	isolate  bool
}

func (t fakeTask) ref() plugins.TaskRef {
	p := t.params
	if p == "" {
		p = "{}"
	}
	return plugins.TaskRef{Chain: fakeChainName, Task: t.name, Params: []byte(p)}
}

const (
	fakeType      = "fake"
	fakeChainName = "c"
)

type fakeChain []fakeTask

func (c fakeChain) task(name string) fakeTask {
	for _, t := range c {
		if t.name == name {
			return t
		}
	}
	panic("fake chain has no task " + name)
}

// key is the store key of the task named name.
func (c fakeChain) key(name string) string {
	r := c.task(name).ref()
	return Key(fakeType, r.Chain, r.Task, r.Params)
}

// spec is the Spec of a run of the chain's root.
func (c fakeChain) spec() Spec {
	r := c[0].ref()
	return Spec{Type: fakeType, Chain: r.Chain, Task: r.Task, Params: r.Params, Trigger: "test"}
}

// graph is the chain as a plugin answers it: the root first, Requires as indices.
func (c fakeChain) graph() *plugins.GraphResponse {
	idx := map[string]int{}
	for i, t := range c {
		idx[t.name] = i
	}
	g := &plugins.GraphResponse{}
	for _, t := range c {
		n := plugins.GraphNode{TaskRef: t.ref(), Timeout: t.timeout, Retry: t.retry, Isolate: t.isolate}
		for _, r := range t.requires {
			n.Requires = append(n.Requires, idx[r])
		}
		g.Nodes = append(g.Nodes, n)
	}
	return g
}

// fakeOut is what a fake task writes to its out: its name, params and the outs it read, in
// the order it was given them.
func fakeOut(name, params string, inputs []string) string {
	return name + params + "(" + strings.Join(inputs, ",") + ")"
}

// wantOut is the out the chain's task name has once it ran, given the outs that existed
// before (by task name), computed from the chain alone.
func (c fakeChain) wantOut(name string, existing map[string]string) string {
	if out, ok := existing[name]; ok {
		return out
	}
	t := c.task(name)
	var ins []string
	for _, r := range t.requires {
		ins = append(ins, c.wantOut(r, existing))
	}
	return fakeOut(t.name, string(t.ref().Params), ins)
}

// Actions of a scripted attempt (fakeBehaviour.script); an attempt past the script succeeds.
const (
	actFail  = "fail"  // the task returns an error (data, as user code's error is)
	actHang  = "hang"  // the task blocks until its context ends or its process is killed
	actCrash = "crash" // the process dies under the task
)

// fakeBehaviour scripts how a task runs.
type fakeBehaviour struct {
	script []string      // the action of each attempt (counted over every process), in order
	err    string        // a failing attempt's error ("" is "boom")
	gate   chan struct{} // a succeeding attempt waits for this to close before it writes
}

// fakeSpan is one RunTask call, by sequence numbers of the plugin's events.
type fakeSpan struct {
	start, end int
	proc       int // fakeProc.id
	attempt    int
}

// fakePlugins is the Starter. Everything it observes is guarded by mu.
type fakePlugins struct {
	chain      fakeChain
	behaviours map[string]fakeBehaviour // set before the manager runs, read only
	startErr   error

	mu      sync.Mutex
	seq     int
	procs   []*fakeProc
	spans   map[string][]fakeSpan // RunTask calls by task name
	kills   map[int]int           // process id -> sequence number of its first kill
	graphs  int                   // Graph calls
	plain   map[string]bool       // RunTaskRequest.Plain of each task's last call
	running int                   // RunTask calls in progress
	peak    int                   // the most at once
	peakCh  map[int]chan struct{} // closed once peak reaches the key
	began   map[string]chan struct{}
}

func newFakePlugins(chain fakeChain, behaviours map[string]fakeBehaviour) *fakePlugins {
	if behaviours == nil {
		behaviours = map[string]fakeBehaviour{}
	}
	return &fakePlugins{chain: chain, behaviours: behaviours, spans: map[string][]fakeSpan{}, kills: map[int]int{},
		peakCh: map[int]chan struct{}{}, began: map[string]chan struct{}{}, plain: map[string]bool{}}
}

func (f *fakePlugins) Start(chainType string, output *os.File) (Process, error) {
	if chainType != fakeType {
		return nil, fmt.Errorf("no plugin for chain type %s", chainType)
	}
	if f.startErr != nil {
		return nil, f.startErr
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	p := &fakeProc{f: f, id: len(f.procs) + 1, output: output, killed: make(chan struct{})}
	f.procs = append(f.procs, p)
	return p, nil
}

func (f *fakePlugins) Current(string, Process) bool { return true }

// next is the next event's sequence number (mu held).
func (f *fakePlugins) next() int { f.seq++; return f.seq }

// started is closed when task name's first RunTask call begins.
func (f *fakePlugins) started(name string) <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.beganLocked(name)
}

func (f *fakePlugins) beganLocked(name string) chan struct{} {
	ch, ok := f.began[name]
	if !ok {
		ch = make(chan struct{})
		f.began[name] = ch
	}
	return ch
}

// peakReached is closed once n tasks have executed at once.
func (f *fakePlugins) peakReached(n int) <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch, ok := f.peakCh[n]
	if !ok {
		ch = make(chan struct{})
		f.peakCh[n] = ch
		if f.peak >= n {
			close(ch)
		}
	}
	return ch
}

// begin records the start of a RunTask call in p and returns its attempt number (counted over
// every process) and its span's index.
func (f *fakePlugins) begin(name string, p *fakeProc) (attempt, span int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.running++
	if f.running > f.peak {
		f.peak = f.running
		for n, ch := range f.peakCh {
			if n <= f.peak {
				select {
				case <-ch:
				default:
					close(ch)
				}
			}
		}
	}
	attempt = len(f.spans[name]) + 1
	f.spans[name] = append(f.spans[name], fakeSpan{start: f.next(), proc: p.id, attempt: attempt})
	ch := f.beganLocked(name)
	select {
	case <-ch:
	default:
		close(ch)
	}
	return attempt, attempt - 1
}

func (f *fakePlugins) end(name string, span int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.running--
	f.spans[name][span].end = f.next()
}

// calls are task name's RunTask calls so far.
func (f *fakePlugins) calls(name string) []fakeSpan {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeSpan(nil), f.spans[name]...)
}

// processes is how many processes were started.
func (f *fakePlugins) processes() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.procs)
}

// killedAt is the sequence number of process id's first kill (0: never killed).
func (f *fakePlugins) killedAt(id int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.kills[id]
}

func (f *fakePlugins) maxRunning() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.peak
}

// sentPlain reports whether the last RunTask of task name said its graph was the catalog's.
func (f *fakePlugins) sentPlain(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.plain[name]
}

func (f *fakePlugins) graphCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.graphs
}

// fakeProc is one fake plugin process.
type fakeProc struct {
	f      *fakePlugins
	id     int
	output *os.File

	mu       sync.Mutex
	dead     bool
	status   string
	killOnce sync.Once
	killed   chan struct{} // closed when the process is killed or dies
}

var _ Process = (*fakeProc)(nil)

func (p *fakeProc) Graph(ctx context.Context, req *plugins.GraphRequest) (*plugins.GraphResponse, error) {
	p.f.mu.Lock()
	p.f.graphs++
	p.f.mu.Unlock()
	if p.Exited() {
		return nil, errors.New("connection refused")
	}
	g := p.f.chain.graph()
	if root := g.Nodes[0].TaskRef; root.Task != req.Root.Task || string(root.Params) != string(req.Root.Params) {
		return nil, fmt.Errorf("fake plugin: asked for %s %s, scripted for %s %s", req.Root.Task, req.Root.Params, root.Task, root.Params)
	}
	return g, nil
}

func (p *fakeProc) RunTask(ctx context.Context, req *plugins.RunTaskRequest) (*plugins.RunTaskResponse, error) {
	name := req.Task.Task
	p.f.mu.Lock()
	p.f.plain[name] = req.Plain
	p.f.mu.Unlock()
	attempt, span := p.f.begin(name, p)
	defer p.f.end(name, span)
	if p.Exited() {
		return nil, errors.New("connection refused")
	}
	// The out exists from the start, as plugins/serve makes it; the log from its first line,
	// which the fake writes at once (a silent task is a real plugin's: emptylog_test.go).
	logf, err := os.OpenFile(req.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	outf, err := os.OpenFile(req.OutPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	defer outf.Close()
	fmt.Fprintf(logf, "log of %s, attempt %d\n", name, attempt)
	fmt.Fprintf(p.output, "stdout of %s, attempt %d\n", name, attempt)

	b := p.f.behaviours[name]
	action := ""
	if attempt <= len(b.script) {
		action = b.script[attempt-1]
	}
	switch action {
	case actFail:
		msg := b.err
		if msg == "" {
			msg = "boom"
		}
		fmt.Fprintf(logf, "task failed: %s\n", msg)
		return &plugins.RunTaskResponse{Error: msg}, nil
	case actHang:
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-p.killed:
			return nil, errors.New("rpc error: code = Unavailable desc = the process was killed")
		}
	case actCrash:
		p.die("exit status 2")
		return nil, errors.New("rpc error: code = Unavailable desc = connection reset by peer")
	}
	if b.gate != nil {
		select {
		case <-b.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-p.killed:
			return nil, errors.New("rpc error: code = Unavailable desc = the process was killed")
		}
	}
	var ins []string
	for _, in := range req.InputPaths() {
		bs, err := os.ReadFile(in)
		if err != nil {
			return &plugins.RunTaskResponse{Error: "reading an input: " + err.Error()}, nil
		}
		ins = append(ins, string(bs))
	}
	if _, err := outf.WriteString(fakeOut(name, string(req.Task.Params), ins)); err != nil {
		return &plugins.RunTaskResponse{Error: err.Error()}, nil
	}
	return &plugins.RunTaskResponse{}, nil
}

func (p *fakeProc) Metrics(context.Context, *plugins.MetricsRequest) (*plugins.MetricsResponse, error) {
	return &plugins.MetricsResponse{}, nil
}

func (p *fakeProc) Progress(context.Context, *plugins.ProgressRequest) (*plugins.ProgressResponse, error) {
	return &plugins.ProgressResponse{}, nil
}

// die ends the process with status (a crash, or a kill).
func (p *fakeProc) die(status string) {
	p.mu.Lock()
	if !p.dead {
		p.dead, p.status = true, status
	}
	p.mu.Unlock()
	p.killOnce.Do(func() { close(p.killed) })
}

func (p *fakeProc) kill() {
	p.f.mu.Lock()
	if p.f.kills[p.id] == 0 {
		p.f.kills[p.id] = p.f.next()
	}
	p.f.mu.Unlock()
	p.die("signal: killed")
}

func (p *fakeProc) Kill()    { p.kill() }
func (p *fakeProc) KillNow() { p.kill() }

func (p *fakeProc) Exited() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dead
}

func (p *fakeProc) ExitStatus() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

// Pid is the test's own: the monitor and the pool read /proc for a live process.
func (p *fakeProc) Pid() int { return os.Getpid() }

func (p *fakeProc) Usage() (float64, uint64, bool) { return 0, 0, p.Exited() }
