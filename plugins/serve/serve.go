// Package serve is the plugin side: it rebuilds task values from canonical parameters, expands
// their Requires into a graph, and runs user code with a chains.Context. It owns user code and
// nothing else: statuses, the store, timeouts and retries belong to the host.
package serve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"nectar/chains"
	"nectar/chains/taskrun"
	"nectar/plugins"
)

// TaskDef is one task type, as generated into the plugin main.
type TaskDef struct {
	Chain  string
	Name   string
	Decode func(params []byte) (chains.Task, error)
}

// Registry is everything the generated main knows about its chain type.
type Registry struct {
	Type  string
	Tasks []TaskDef
	// Describe maps a task value (from Requires) back to its identity.
	Describe func(chains.Task) (plugins.TaskRef, error)
}

// Main serves reg over go-plugin; generated plugin mains call it and nothing else.
func Main(reg Registry) {
	r := NewRunner(reg).(*runner)
	r.realStderr = redirectOutput()
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: plugins.Handshake,
		Plugins:         plugins.PluginSet(r),
		Logger:          hclog.New(&hclog.LoggerOptions{Name: "plugin", Level: hclog.Warn, Output: os.Stderr}),
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			opts = append(opts, grpc.MaxRecvMsgSize(64<<20), grpc.MaxSendMsgSize(64<<20))
			return grpc.NewServer(opts...)
		},
	})
}

// redirectOutput points fd 2 at the file the host named (see host.OutputEnv), so a crash's last
// words and everything user code prints land in a file the host reads after the process is gone.
func redirectOutput() *os.File {
	path := os.Getenv("NECTAR_PLUGIN_OUTPUT")
	os.Unsetenv("NECTAR_PLUGIN_OUTPUT")
	if path == "" {
		return os.Stderr
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "nectar plugin: cannot open %s: %v\n", path, err)
		return os.Stderr
	}
	if err := syscall.Dup3(int(f.Fd()), 2, 0); err != nil {
		fmt.Fprintf(os.Stderr, "nectar plugin: cannot redirect stderr: %v\n", err)
		return f
	}
	f.Close()
	return os.NewFile(2, "/dev/stderr")
}

// maxGraphNodes bounds a graph when the host sets no limit, so a Requires that grows without end
// fails instead of eating RAM.
const maxGraphNodes = 100_000

type runner struct {
	reg    Registry
	byName map[string]TaskDef

	// go-plugin points os.Stdout and os.Stderr at pipes it forwards over gRPC, which loses what
	// was written just before a crash. User prints go to the real fd 2 instead, which the host
	// reads to the end (fd 1 stays go-plugin's handshake channel).
	realStderr *os.File
	stdioOnce  sync.Once

	// What running tasks reported, by task key; changed holds the keys reported since the host
	// last asked.
	progressMu sync.Mutex
	progress   map[string]plugins.TaskProgress
	changed    map[string]bool

	// The host's Host service (source reads), dialed once, as soon as the process starts.
	hostDial  chan struct{} // closed when the dial has ended
	hostConn  plugins.Host
	hostErr   error
	brokerSet sync.Once
}

// UseBroker dials the host's Host service at once, in the background: go-plugin keeps the
// connection details of a broker id for 5 seconds only, and a warm spare may wait much longer
// for its first task.
func (r *runner) UseBroker(b *plugin.GRPCBroker) {
	r.brokerSet.Do(func() {
		go func() {
			defer close(r.hostDial)
			r.hostConn, r.hostErr = plugins.DialHost(b, plugins.HostServiceID)
		}()
	})
}

func (r *runner) host(id uint32) (plugins.Host, error) {
	if id == 0 {
		return nil, errors.New("the host offers no store to read from")
	}
	select {
	case <-r.hostDial:
	case <-time.After(10 * time.Second):
		return nil, errors.New("connecting to the host: no answer")
	}
	if r.hostErr != nil {
		return nil, fmt.Errorf("connecting to the host: %w", r.hostErr)
	}
	return r.hostConn, nil
}

// source opens a store object the way the host says: a local file, or a presigned URL.
func (r *runner) source(ctx context.Context, id uint32) func(string) (io.ReadCloser, error) {
	return func(path string) (io.ReadCloser, error) {
		h, err := r.host(id)
		if err != nil {
			return nil, fmt.Errorf("source %s: %w", path, err)
		}
		resp, err := h.Source(ctx, &plugins.SourceRequest{Path: path})
		switch {
		case err != nil:
			return nil, fmt.Errorf("source %s: asking the host: %w", path, err)
		case resp.Error != "":
			return nil, fmt.Errorf("source %s: %s", path, resp.Error)
		case resp.LocalPath != "":
			return os.Open(resp.LocalPath)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, resp.URL, nil)
		if err != nil {
			return nil, fmt.Errorf("source %s: %w", path, err)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, fmt.Errorf("source %s: %w", path, rootCause(err))
		}
		if res.StatusCode != http.StatusOK {
			res.Body.Close()
			return nil, fmt.Errorf("source %s: the store answered HTTP %d", path, res.StatusCode)
		}
		return res.Body, nil
	}
}

// rootCause drops the URL a *url.Error carries: a presigned URL is a capability.
func rootCause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func (r *runner) restoreStdio() {
	r.stdioOnce.Do(func() {
		if r.realStderr != nil {
			os.Stdout, os.Stderr = r.realStderr, r.realStderr
		}
	})
}

// NewRunner returns the plugin-side Runner for reg (exported for in-process tests).
func NewRunner(reg Registry) plugins.Runner {
	r := &runner{reg: reg, byName: make(map[string]TaskDef, len(reg.Tasks)),
		progress: map[string]plugins.TaskProgress{}, changed: map[string]bool{}, hostDial: make(chan struct{})}
	for _, t := range reg.Tasks {
		r.byName[t.Chain+"/"+t.Name] = t
	}
	return r
}

func (r *runner) decode(ref plugins.TaskRef) (chains.Task, error) {
	def, ok := r.byName[ref.Chain+"/"+ref.Task]
	if !ok {
		return nil, fmt.Errorf("plugin %s has no task %s/%s", r.reg.Type, ref.Chain, ref.Task)
	}
	return def.Decode(ref.Params)
}

func refID(ref plugins.TaskRef) string {
	return ref.Chain + "/" + ref.Task + "/" + string(ref.Params)
}

func (r *runner) Graph(_ context.Context, req *plugins.GraphRequest) (resp *plugins.GraphResponse, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic in Requires: %v", p)
		}
	}()
	r.restoreStdio()
	root, err := r.decode(req.Root)
	if err != nil {
		return nil, err
	}
	limit := maxGraphNodes
	if req.MaxTasks > 0 {
		limit = req.MaxTasks
	}
	g := &graphBuilder{r: r, index: map[string]int{}, state: map[int]int{}, limit: limit}
	_, err = g.visit(req.Root, root)
	switch {
	case errors.Is(err, errOverLimit):
		return &plugins.GraphResponse{OverLimit: limit}, nil
	case err != nil:
		return nil, err
	}
	return &plugins.GraphResponse{Count: len(g.nodes), Nodes: g.nodes}, nil
}

// checkPlain refuses to run t alone if its graph node is not the one the host built from its
// catalog (RunTaskRequest.Plain): a method that changes the graph, or other connections or
// another queue than the catalog's, mean the plugin was built from newer chain code.
func checkPlain(t chains.Task, req *plugins.RunTaskRequest) error {
	if m := graphMethod(t); m != "" {
		return fmt.Errorf("the task declares %s, but the server's catalog, built from older chain code, says it declares none", m)
	}
	var conns []string
	if cn, ok := t.(chains.Connector); ok {
		conns = cn.Connections()
	}
	want := slices.Sorted(maps.Keys(req.Connections))
	if have := slices.Compact(slices.Sorted(slices.Values(conns))); !slices.Equal(have, want) {
		return fmt.Errorf("the task declares the connections %q, but the server's catalog says %q", have, want)
	}
	var queue string
	if qu, ok := t.(chains.Queuer); ok {
		queue = qu.Queue()
	}
	if queue != req.Queue {
		return fmt.Errorf("the task names the queue %q, but the server's catalog says %q", queue, req.Queue)
	}
	return nil
}

// graphMethod names the first of the methods a task's graph node depends on (the generator's
// graphMethods) that t has, or "" if it has none: then t is plain.
func graphMethod(t chains.Task) string {
	switch t.(type) {
	case chains.Requirer:
		return "Requires"
	case chains.Timeouter:
		return "Timeout"
	case chains.Retrier:
		return "Retry"
	case chains.Isolated:
		return "Isolate"
	case chains.MetricsDefiner:
		return "DefineMetrics"
	}
	return ""
}

// errOverLimit stops the expansion of a graph larger than the host allows.
var errOverLimit = errors.New("task graph over the limit")

type graphBuilder struct {
	r     *runner
	limit int
	nodes []plugins.GraphNode
	index map[string]int
	state map[int]int // 1 while visiting (a cycle if seen again), 2 when done
}

func (g *graphBuilder) visit(ref plugins.TaskRef, t chains.Task) (int, error) {
	id := refID(ref)
	if i, ok := g.index[id]; ok {
		if g.state[i] == 1 {
			return 0, fmt.Errorf("dependency cycle through %s/%s %s", ref.Chain, ref.Task, ref.Params)
		}
		return i, nil
	}
	if len(g.nodes) >= g.limit {
		return 0, errOverLimit
	}
	i := len(g.nodes)
	node := plugins.GraphNode{TaskRef: ref}
	if to, ok := t.(chains.Timeouter); ok {
		node.Timeout = to.Timeout()
	}
	if re, ok := t.(chains.Retrier); ok {
		p := re.Retry()
		node.Retry = &p
	}
	if is, ok := t.(chains.Isolated); ok {
		node.Isolate = is.Isolate()
	}
	_, node.Metrics = t.(chains.MetricsDefiner)
	if cn, ok := t.(chains.Connector); ok {
		node.Connections = cn.Connections()
	}
	if qu, ok := t.(chains.Queuer); ok {
		node.Queue = qu.Queue()
		if err := chains.CheckQueueName(node.Queue); err != nil {
			return 0, fmt.Errorf("%s/%s: Queue: %w", ref.Chain, ref.Task, err)
		}
	}
	g.nodes = append(g.nodes, node)
	g.index[id] = i
	g.state[i] = 1
	if req, ok := t.(chains.Requirer); ok {
		for _, dep := range req.Requires() {
			if dep == nil {
				return 0, fmt.Errorf("%s.Requires returned a nil task", ref.Task)
			}
			depRef, err := g.r.reg.Describe(dep)
			if err != nil {
				return 0, fmt.Errorf("%s.Requires: %w", ref.Task, err)
			}
			j, err := g.visit(depRef, dep)
			if err != nil {
				return 0, err
			}
			g.nodes[i].Requires = append(g.nodes[i].Requires, j)
		}
	}
	g.state[i] = 2
	return i, nil
}

func (r *runner) RunTask(ctx context.Context, req *plugins.RunTaskRequest) (*plugins.RunTaskResponse, error) {
	r.restoreStdio()
	logf := &lazyLog{path: req.LogPath}
	defer logf.Close()
	t, err := r.decode(req.Task)
	if err == nil && req.Plain {
		err = checkPlain(t, req)
	}
	if err != nil {
		if !req.Plain { // a graph call decoded it before: the plugin itself is at fault
			return nil, err
		}
		// No graph call checked the task against this plugin: say what is wrong, as a task
		// failure with its log, not as a plugin that stopped answering.
		msg := fmt.Sprintf("%s/%s: %v: rebuild and restart the server (make build) so that its catalog matches the plugins", req.Task.Chain, req.Task.Task, err)
		fmt.Fprintf(logf, "task failed: %s\n", msg)
		return &plugins.RunTaskResponse{Error: msg}, nil
	}
	outf, err := taskrun.OpenFile(req.OutPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return nil, err
	}
	var logw io.Writer = logf
	if len(req.Connections) > 0 { // the live log shows no secret (the host scrubs the whole log too)
		logw = &scrubWriter{w: logf, r: plugins.Scrubber(req.Connections)}
	}
	var publishMu sync.Mutex
	publish := map[string]string{}
	tio := taskrun.IO{Context: ctx, Out: outf, Log: logw, Inputs: req.InputPaths(),
		Source: r.source(ctx, req.HostService), ArtifactDir: req.ArtifactDir, Connections: req.Connections,
		Publish: func(name, path string) { publishMu.Lock(); publish[name] = path; publishMu.Unlock() }}
	if req.Key != "" {
		tio.Report = func(p taskrun.Progress) { r.report(req.Key, p) }
		defer r.forget(req.Key)
	}
	runErr, panicked := taskrun.Run(t, tio)
	// Sync before answering (the host commits the file the moment we reply), unless the host
	// syncs a whole batch of tasks' files itself.
	var syncErr error
	if !req.NoSync {
		syncErr = outf.Sync()
	}
	if err := errors.Join(syncErr, outf.Close()); err != nil && runErr == nil {
		runErr = fmt.Errorf("writing out: %w", err)
	}
	if err := logf.openErr(); err != nil && runErr == nil { // its lines are lost: not a success
		runErr = fmt.Errorf("writing the log: %w", err)
	}
	last := r.last(req.Key)
	if runErr == nil {
		for name := range publish {
			if _, err := os.Stat(filepath.Join(req.ArtifactDir, filepath.FromSlash(name))); err != nil {
				runErr = fmt.Errorf("Publish(%q): the task made no artifact of that name", name)
				break
			}
		}
	}
	if runErr != nil {
		fmt.Fprintf(logw, "task failed: %v\n", runErr)
		return &plugins.RunTaskResponse{Error: runErr.Error(), Panic: panicked, Progress: last}, nil
	}
	resp := &plugins.RunTaskResponse{Progress: last, Publish: publish}
	if req.ArtifactDir != "" {
		_, err := os.Lstat(req.ArtifactDir)
		resp.Artifacts = err == nil
	}
	return resp, nil
}

// lazyLog is a task's log, created at its first write: a task that logs nothing makes no
// file, and the host then stores no log for it unless it is its run's root (one file less per
// task of a big graph: on S3 one PUT less). Writes may come from the task's goroutines at once.
type lazyLog struct {
	path string
	mu   sync.Mutex
	f    *os.File
	err  error
}

func (l *lazyLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	if l.f == nil && l.err == nil {
		l.f, l.err = taskrun.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND)
	}
	f, err := l.f, l.err
	l.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return f.Write(b)
}

// openErr is why the log could not be made, if it could not.
func (l *lazyLog) openErr() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Close closes the file if it was made; a write after it (from a goroutine the task left
// running) fails, and makes no file once the host may have committed the task.
func (l *lazyLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.f
	l.f, l.err = nil, os.ErrClosed
	if f == nil {
		return nil
	}
	return f.Close()
}

func (r *runner) report(key string, p taskrun.Progress) {
	r.progressMu.Lock()
	r.progress[key] = plugins.TaskProgress{Key: key, Done: p.Done, Total: p.Total, Status: p.Status}
	r.changed[key] = true
	r.progressMu.Unlock()
}

func (r *runner) last(key string) *plugins.TaskProgress {
	r.progressMu.Lock()
	defer r.progressMu.Unlock()
	if p, ok := r.progress[key]; ok {
		return &p
	}
	return nil
}

func (r *runner) forget(key string) {
	r.progressMu.Lock()
	delete(r.progress, key)
	delete(r.changed, key)
	r.progressMu.Unlock()
}

// Progress answers the host's poll with what changed since the last one.
func (r *runner) Progress(context.Context, *plugins.ProgressRequest) (*plugins.ProgressResponse, error) {
	r.progressMu.Lock()
	defer r.progressMu.Unlock()
	resp := &plugins.ProgressResponse{}
	for k := range r.changed {
		resp.Tasks = append(resp.Tasks, r.progress[k])
	}
	clear(r.changed)
	return resp, nil
}

func (r *runner) Metrics(_ context.Context, req *plugins.MetricsRequest) (*plugins.MetricsResponse, error) {
	t, err := r.decode(req.Task)
	if err != nil {
		return nil, err
	}
	v, ok, err := taskrun.DefineMetrics(t, req.CPUPercent, req.RSSBytes, req.Elapsed, req.Previous)
	switch {
	case !ok:
		return &plugins.MetricsResponse{Error: req.Task.Task + " does not define metrics"}, nil
	case err != nil:
		return &plugins.MetricsResponse{Error: err.Error()}, nil
	}
	return &plugins.MetricsResponse{Value: v}, nil
}

// scrubWriter writes through a Scrubber. A secret split across two writes would pass, which
// is why the host scrubs the whole log again when it commits it; this keeps the live log clean
// for the usual case, one log line per write.
type scrubWriter struct {
	w io.Writer
	r *strings.Replacer
}

func (s *scrubWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(s.w, s.r.Replace(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}
