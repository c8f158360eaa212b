// Package plugins is the wire contract between the Nectar host and a chain-type plugin process:
// the go-plugin handshake, the Runner interface both sides speak, and its gRPC adapters.
//
// The host side lives in plugins/host, the plugin side in plugins/serve, and the generated plugin
// mains in plugins/mains/<type>. Chain authors never see anything in this package.
package plugins

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"

	"nectar/chains"
)

// ProtocolVersion is bumped only when host and plugin can no longer talk to each other. 2: the
// host relies on RunTaskResponse.Artifacts and syncs batches itself (RunTaskRequest.NoSync), so
// a plugin built before would lose its tasks' artifacts. 3: tasks go over the RunTasks stream
// (taskstream.go). 4: RunTaskRequest.InputRoot (a plugin built before would read a join's
// inputs at paths relative to its working folder).
const ProtocolVersion = 4

// Handshake is shared by host and plugins. The cookie never changes: it only stops a plugin
// binary from being run by hand by mistake.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "NECTAR_PLUGIN",
	MagicCookieValue: "c1b0f3a6-nectar-chain-plugin",
}

// PluginName is the single plugin every chain-type binary serves.
const PluginName = "runner"

// TaskRef identifies a task: its chain file, its type name and its canonical parameters.
type TaskRef struct {
	Chain  string          `json:"chain"`
	Task   string          `json:"task"`
	Params json.RawMessage `json:"params"`
}

// GraphRequest asks the plugin for everything Root requires, transitively, up to MaxTasks
// tasks (0: the plugin's own bound).
type GraphRequest struct {
	Root     TaskRef `json:"root"`
	MaxTasks int     `json:"max_tasks,omitempty"`
}

// GraphNode is one task of the graph; Requires holds indices into GraphResponse.Nodes in the
// order the task's Requires returned them. Timeout and Retry are what the task declares
// (chains.Timeouter, chains.Retrier); the host enforces them.
type GraphNode struct {
	TaskRef
	Requires []int               `json:"requires,omitempty"`
	Timeout  time.Duration       `json:"timeout,omitempty"`
	Retry    *chains.RetryPolicy `json:"retry,omitempty"`
	Isolate  bool                `json:"isolate,omitempty"` // chains.Isolated: a process per attempt
	Metrics  bool                `json:"metrics,omitempty"` // chains.MetricsDefiner: call Metrics each interval
	// Connections are the names the task declares (chains.Connector); the host gives it those.
	Connections []string `json:"connections,omitempty"`
	// Queue is the queue the task names (chains.Queuer); empty: its chain type's.
	Queue string `json:"queue,omitempty"`
}

// MetricsRequest asks a running task for its custom metrics (chains.MetricsDefiner).
type MetricsRequest struct {
	Task       TaskRef         `json:"task"`
	CPUPercent float64         `json:"cpu_percent"`
	RSSBytes   uint64          `json:"rss_bytes"`
	Elapsed    time.Duration   `json:"elapsed"`
	Previous   json.RawMessage `json:"previous,omitempty"`
}

// MetricsResponse is the task's value, JSON-encoded, or why it could not give one.
type MetricsResponse struct {
	Value json.RawMessage `json:"value,omitempty"`
	Error string          `json:"error,omitempty"`
}

// GraphResponse lists every distinct task once; Nodes[0] is the root. When the graph has more
// than the request's MaxTasks, the plugin stops expanding it and says so in OverLimit instead
// (with no nodes).
type GraphResponse struct {
	// Count is len(Nodes), sent before them so that a reader sizes its slice once (DecodeGraph).
	// Optional: a graph without it decodes as well.
	Count     int         `json:"count,omitempty"`
	Nodes     []GraphNode `json:"nodes"`
	OverLimit int         `json:"over_limit,omitempty"`
}

// DecodeGraph decodes a graph answer into g, its nodes into a slice made once at the size the
// answer's count gives. encoding/json grows a slice by copying it: a graph of 5,000 nodes left
// 2.5 MB of outgrown arrays, all at once as a big run starts, and a server's peak memory with
// them.
func DecodeGraph(data []byte, g *GraphResponse) error {
	if n := graphCount(data); n > 0 {
		g.Nodes = make([]GraphNode, 0, n)
	}
	return json.Unmarshal(data, g)
}

// graphCount is the count a graph answer starts with (as GraphResponse encodes: first), or 0.
// A count the answer is too short to hold is not believed.
func graphCount(data []byte) int {
	rest, ok := bytes.CutPrefix(data, []byte(`{"count":`))
	if !ok {
		return 0
	}
	n := 0
	for i, c := range rest {
		if c < '0' || c > '9' {
			if i == 0 {
				return 0
			}
			break
		}
		if n = n*10 + int(c-'0'); n > len(data)/minNodeJSON {
			return 0
		}
	}
	return n
}

// minNodeJSON is the size of the smallest graph node encoded, with its comma.
const minNodeJSON = len(`{"chain":"","task":"","params":null},`)

// RunTaskRequest runs one task. The host chose the paths: the plugin writes OutPath and LogPath
// and reads Inputs; it never touches the target store.
type RunTaskRequest struct {
	Task    TaskRef  `json:"task"`
	Key     string   `json:"key,omitempty"` // the task's key: how Progress names it
	OutPath string   `json:"out_path"`
	LogPath string   `json:"log_path"`
	Inputs  []string `json:"inputs,omitempty"`
	// InputRoot and InputName, when InputRoot is set, say that each of Inputs is a folder under
	// InputRoot holding its input as InputName (a local store: Inputs are the required tasks'
	// keys). A join of thousands of tasks then costs the host the keys it already holds, not a
	// path built for each (InputPaths builds them in the plugin).
	InputRoot string `json:"input_root,omitempty"`
	InputName string `json:"input_name,omitempty"`
	// ArtifactDir is the folder (made by the plugin when needed) the task's artifacts go to.
	ArtifactDir string `json:"artifact_dir,omitempty"`
	// Connections are the values of the connections the task declares, by name: secrets, so
	// this request is never logged or stored.
	Connections map[string]string `json:"connections,omitempty"`
	// HostService is the broker id of the host's Host service (source reads); set by the
	// host-side client.
	HostService uint32 `json:"host_service,omitempty"`
	// NoSync tells the plugin not to fsync OutPath before it answers: the host makes a whole
	// batch of tasks' files durable at once (one syncfs) before it commits them.
	NoSync bool `json:"no_sync,omitempty"`
	// Plain says the host built this task's graph from its catalog, which lists the task as
	// plain (no Requires, Timeout, Retry, Isolate or DefineMetrics), and asked no plugin: a
	// plugin whose task is not plain (built from newer chain code than the host) refuses it.
	Plain bool `json:"plain,omitempty"`
	// Queue is, with Plain, the queue the catalog says the task names ("": its chain type's),
	// which the plugin checks too.
	Queue string `json:"queue,omitempty"`
}

// InputPaths are the files the task reads its inputs from, in Requires order.
func (r *RunTaskRequest) InputPaths() []string {
	if r.InputRoot == "" {
		return r.Inputs
	}
	paths := make([]string, len(r.Inputs))
	for i, in := range r.Inputs {
		paths[i] = filepath.Join(r.InputRoot, filepath.FromSlash(in), r.InputName)
	}
	return paths
}

// RunTaskResponse reports how user code ended. A task failure is data, not an RPC error: an RPC
// error means the plugin itself could not be reached.
type RunTaskResponse struct {
	Error string `json:"error,omitempty"`
	Panic bool   `json:"panic,omitempty"`
	// Progress is what the task last reported (nil if it never did): the record keeps it.
	Progress *TaskProgress `json:"progress,omitempty"`
	// Publish maps artifact names to the store paths they are also to be stored at.
	Publish map[string]string `json:"publish,omitempty"`
	// Artifacts reports that the task made its ArtifactDir (so the host looks there only then).
	Artifacts bool `json:"artifacts,omitempty"`
}

// SourceRequest asks the host how to read an object of the store that no task produced.
type SourceRequest struct {
	Path string `json:"path"`
}

// SourceResponse says how: a local file (the local store) or a presigned URL (S3, MinIO),
// either valid for reading only; Error when the object cannot be read (it names why).
type SourceResponse struct {
	LocalPath string `json:"local_path,omitempty"`
	URL       string `json:"url,omitempty"`
	Size      int64  `json:"size"`
	Error     string `json:"error,omitempty"`
}

// Host is what the host offers its plugins, over go-plugin's broker: the plugin never holds
// the store's credentials, it asks the host for a way to read one object.
type Host interface {
	Source(ctx context.Context, req *SourceRequest) (*SourceResponse, error)
}

// HostServiceID is the broker id the host serves its Host service on. It is fixed, so the plugin
// can dial it as soon as it starts: go-plugin forgets the connection details of a broker id
// that is not dialled within 5 seconds, and a warm spare waits far longer for its first task.
const HostServiceID uint32 = 0x6e656374 // "nect"

// brokerUser is implemented by the plugin side to receive the broker it dials the Host through.
type brokerUser interface {
	UseBroker(b *plugin.GRPCBroker)
}

// TaskProgress is what a task said of itself through ctx.Progress and ctx.Status.
type TaskProgress struct {
	Key    string `json:"key"`
	Done   int64  `json:"done"`
	Total  int64  `json:"total"`
	Status string `json:"status,omitempty"`
}

// ProgressRequest asks the plugin for the progress its running tasks reported since the last
// request (the host polls once per monitor interval and process).
type ProgressRequest struct{}

// ProgressResponse lists the tasks whose progress changed since the last request.
type ProgressResponse struct {
	Tasks []TaskProgress `json:"tasks,omitempty"`
}

// Runner is what a plugin process offers the host.
type Runner interface {
	Graph(ctx context.Context, req *GraphRequest) (*GraphResponse, error)
	RunTask(ctx context.Context, req *RunTaskRequest) (*RunTaskResponse, error)
	Metrics(ctx context.Context, req *MetricsRequest) (*MetricsResponse, error)
	Progress(ctx context.Context, req *ProgressRequest) (*ProgressResponse, error)
}

// GRPCPlugin adapts a Runner to go-plugin's gRPC transport.
type GRPCPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Impl Runner // set on the plugin side only
	Host Host   // set on the host side only (nil: the plugin gets no Host service)
}

// GRPCServer registers the Runner service (plugin side).
func (p *GRPCPlugin) GRPCServer(broker *plugin.GRPCBroker, s *grpc.Server) error {
	s.RegisterService(&runnerServiceDesc, p.Impl)
	if bu, ok := p.Impl.(brokerUser); ok {
		bu.UseBroker(broker)
	}
	return nil
}

// GRPCClient returns a Runner that calls over conn (host side), and serves the Host service to
// the plugin through the broker.
func (p *GRPCPlugin) GRPCClient(_ context.Context, broker *plugin.GRPCBroker, conn *grpc.ClientConn) (any, error) {
	c := &grpcClient{conn: conn, tasks: newTaskMux(conn)}
	if p.Host != nil {
		c.hostID = HostServiceID
		go broker.AcceptAndServe(c.hostID, func(opts []grpc.ServerOption) *grpc.Server {
			s := grpc.NewServer(opts...)
			s.RegisterService(&hostServiceDesc, p.Host)
			return s
		})
	}
	return c, nil
}

// PluginSet is the plugin map the plugin side passes to go-plugin.
func PluginSet(impl Runner) plugin.PluginSet {
	return plugin.PluginSet{PluginName: &GRPCPlugin{Impl: impl}}
}

// HostPluginSet is the plugin map the host side passes to go-plugin: host serves the plugin.
func HostPluginSet(host Host) plugin.PluginSet {
	return plugin.PluginSet{PluginName: &GRPCPlugin{Host: host}}
}

// DialHost connects a plugin to its host's Host service (id from RunTaskRequest.HostService).
func DialHost(broker *plugin.GRPCBroker, id uint32) (Host, error) {
	conn, err := broker.Dial(id)
	if err != nil {
		return nil, err
	}
	return &hostClient{conn: conn}, nil
}

// The service is described by hand, with JSON messages, so the project needs no protoc: the
// messages are small and few, and go-plugin's own services keep using protobuf on the same
// connection because the codec is chosen per call by content subtype.
const (
	serviceName    = "nectar.plugin.v1.Runner"
	codecName      = "nectarjson"
	methodGraph    = "Graph"
	methodMetrics  = "Metrics"
	methodProgress = "Progress"
	hostService    = "nectar.plugin.v1.Host"
	fullSource     = "/" + hostService + "/Source"
	fullGraph      = "/" + serviceName + "/" + methodGraph
	fullMetrics    = "/" + serviceName + "/" + methodMetrics
	fullProgress   = "/" + serviceName + "/" + methodProgress
	maxMessageSize = 64 << 20
)

type jsonCodec struct{}

func (jsonCodec) Marshal(v any) ([]byte, error) {
	if b, ok := v.(*taskBatch); ok && b.inputs() >= sizedBatchInputs {
		return b.marshalSized()
	}
	return json.Marshal(v)
}
func (jsonCodec) Unmarshal(data []byte, v any) error {
	if g, ok := v.(*GraphResponse); ok {
		return DecodeGraph(data, g)
	}
	return json.Unmarshal(data, v)
}
func (jsonCodec) Name() string { return codecName }

func init() { encoding.RegisterCodec(jsonCodec{}) }

var runnerServiceDesc = grpc.ServiceDesc{
	ServiceName: serviceName,
	HandlerType: (*Runner)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: methodGraph, Handler: unaryHandler(fullGraph, func(r Runner, ctx context.Context, req *GraphRequest) (any, error) {
			return r.Graph(ctx, req)
		})},
		{MethodName: methodMetrics, Handler: unaryHandler(fullMetrics, func(r Runner, ctx context.Context, req *MetricsRequest) (any, error) {
			return r.Metrics(ctx, req)
		})},
		{MethodName: methodProgress, Handler: unaryHandler(fullProgress, func(r Runner, ctx context.Context, req *ProgressRequest) (any, error) {
			return r.Progress(ctx, req)
		})},
	},
	Streams: []grpc.StreamDesc{
		{StreamName: methodRunTasks, Handler: serveRunTasks, ServerStreams: true, ClientStreams: true},
	},
	Metadata: "nectar/plugins/protocol.go",
}

var hostServiceDesc = grpc.ServiceDesc{
	ServiceName: hostService,
	HandlerType: (*Host)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Source", Handler: unaryHandler(fullSource, func(h Host, ctx context.Context, req *SourceRequest) (any, error) {
			return h.Source(ctx, req)
		})},
	},
	Metadata: "nectar/plugins/protocol.go",
}

// unaryHandler is the shape protoc-gen-go-grpc would emit for one unary method.
func unaryHandler[Srv, Req any](fullMethod string, call func(Srv, context.Context, *Req) (any, error)) grpc.MethodHandler {
	return func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		req := new(Req)
		if err := dec(req); err != nil {
			return nil, err
		}
		r := srv.(Srv)
		if interceptor == nil {
			return call(r, ctx, req)
		}
		info := &grpc.UnaryServerInfo{Server: srv, FullMethod: fullMethod}
		return interceptor(ctx, req, info, func(ctx context.Context, req any) (any, error) {
			return call(r, ctx, req.(*Req))
		})
	}
}

type grpcClient struct {
	conn   *grpc.ClientConn
	tasks  *taskMux
	hostID uint32 // the broker id of the Host service this client serves (0: none)
}

func (c *grpcClient) Graph(ctx context.Context, req *GraphRequest) (*GraphResponse, error) {
	resp := new(GraphResponse)
	err := c.conn.Invoke(ctx, fullGraph, req, resp, grpc.CallContentSubtype(codecName), grpc.MaxCallRecvMsgSize(maxMessageSize))
	return resp, err
}

func (c *grpcClient) RunTask(ctx context.Context, req *RunTaskRequest) (*RunTaskResponse, error) {
	req.HostService = c.hostID
	return c.tasks.call(ctx, req)
}

func (c *grpcClient) Metrics(ctx context.Context, req *MetricsRequest) (*MetricsResponse, error) {
	resp := new(MetricsResponse)
	err := c.conn.Invoke(ctx, fullMetrics, req, resp, grpc.CallContentSubtype(codecName))
	return resp, err
}

func (c *grpcClient) Progress(ctx context.Context, req *ProgressRequest) (*ProgressResponse, error) {
	resp := new(ProgressResponse)
	err := c.conn.Invoke(ctx, fullProgress, req, resp, grpc.CallContentSubtype(codecName))
	return resp, err
}

type hostClient struct{ conn *grpc.ClientConn }

func (c *hostClient) Source(ctx context.Context, req *SourceRequest) (*SourceResponse, error) {
	resp := new(SourceResponse)
	err := c.conn.Invoke(ctx, fullSource, req, resp, grpc.CallContentSubtype(codecName))
	return resp, err
}
