// Package plugins is the wire contract between the Nectar host and a chain-type plugin process:
// the go-plugin handshake, the Runner interface both sides speak, and its gRPC adapters.
//
// The host side lives in plugins/host, the plugin side in plugins/serve, and the generated plugin
// mains in plugins/mains/<type>. Chain authors never see anything in this package.
package plugins

import (
	"context"
	"encoding/json"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"

	"nectar/chains"
)

// ProtocolVersion is bumped only when host and plugin can no longer talk to each other.
const ProtocolVersion = 1

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

// GraphRequest asks the plugin for everything Root requires, transitively.
type GraphRequest struct {
	Root TaskRef `json:"root"`
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

// GraphResponse lists every distinct task once; Nodes[0] is the root.
type GraphResponse struct {
	Nodes []GraphNode `json:"nodes"`
}

// RunTaskRequest runs one task. The host chose the paths: the plugin writes OutPath and LogPath
// and reads Inputs; it never touches the target store.
type RunTaskRequest struct {
	Task    TaskRef  `json:"task"`
	Key     string   `json:"key,omitempty"` // the task's key: how Progress names it
	OutPath string   `json:"out_path"`
	LogPath string   `json:"log_path"`
	Inputs  []string `json:"inputs,omitempty"`
}

// RunTaskResponse reports how user code ended. A task failure is data, not an RPC error: an RPC
// error means the plugin itself could not be reached.
type RunTaskResponse struct {
	Error string `json:"error,omitempty"`
	Panic bool   `json:"panic,omitempty"`
	// Progress is what the task last reported (nil if it never did): the record keeps it.
	Progress *TaskProgress `json:"progress,omitempty"`
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
}

// GRPCServer registers the Runner service (plugin side).
func (p *GRPCPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	s.RegisterService(&runnerServiceDesc, p.Impl)
	return nil
}

// GRPCClient returns a Runner that calls over conn (host side).
func (p *GRPCPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, conn *grpc.ClientConn) (any, error) {
	return &grpcClient{conn: conn}, nil
}

// PluginSet is the plugin map both sides pass to go-plugin.
func PluginSet(impl Runner) plugin.PluginSet {
	return plugin.PluginSet{PluginName: &GRPCPlugin{Impl: impl}}
}

// The service is described by hand, with JSON messages, so the project needs no protoc: the
// messages are small and few, and go-plugin's own services keep using protobuf on the same
// connection because the codec is chosen per call by content subtype.
const (
	serviceName    = "nectar.plugin.v1.Runner"
	codecName      = "nectarjson"
	methodGraph    = "Graph"
	methodRunTask  = "RunTask"
	methodMetrics  = "Metrics"
	methodProgress = "Progress"
	fullGraph      = "/" + serviceName + "/" + methodGraph
	fullRunTask    = "/" + serviceName + "/" + methodRunTask
	fullMetrics    = "/" + serviceName + "/" + methodMetrics
	fullProgress   = "/" + serviceName + "/" + methodProgress
	maxMessageSize = 64 << 20
)

type jsonCodec struct{}

func (jsonCodec) Marshal(v any) ([]byte, error)      { return json.Marshal(v) }
func (jsonCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
func (jsonCodec) Name() string                       { return codecName }

func init() { encoding.RegisterCodec(jsonCodec{}) }

var runnerServiceDesc = grpc.ServiceDesc{
	ServiceName: serviceName,
	HandlerType: (*Runner)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: methodGraph, Handler: unaryHandler(fullGraph, func(r Runner, ctx context.Context, req *GraphRequest) (any, error) {
			return r.Graph(ctx, req)
		})},
		{MethodName: methodRunTask, Handler: unaryHandler(fullRunTask, func(r Runner, ctx context.Context, req *RunTaskRequest) (any, error) {
			return r.RunTask(ctx, req)
		})},
		{MethodName: methodMetrics, Handler: unaryHandler(fullMetrics, func(r Runner, ctx context.Context, req *MetricsRequest) (any, error) {
			return r.Metrics(ctx, req)
		})},
		{MethodName: methodProgress, Handler: unaryHandler(fullProgress, func(r Runner, ctx context.Context, req *ProgressRequest) (any, error) {
			return r.Progress(ctx, req)
		})},
	},
	Metadata: "nectar/plugins/protocol.go",
}

// unaryHandler is the shape protoc-gen-go-grpc would emit for one unary method.
func unaryHandler[Req any](fullMethod string, call func(Runner, context.Context, *Req) (any, error)) grpc.MethodHandler {
	return func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		req := new(Req)
		if err := dec(req); err != nil {
			return nil, err
		}
		r := srv.(Runner)
		if interceptor == nil {
			return call(r, ctx, req)
		}
		info := &grpc.UnaryServerInfo{Server: srv, FullMethod: fullMethod}
		return interceptor(ctx, req, info, func(ctx context.Context, req any) (any, error) {
			return call(r, ctx, req.(*Req))
		})
	}
}

type grpcClient struct{ conn *grpc.ClientConn }

func (c *grpcClient) Graph(ctx context.Context, req *GraphRequest) (*GraphResponse, error) {
	resp := new(GraphResponse)
	err := c.conn.Invoke(ctx, fullGraph, req, resp, grpc.CallContentSubtype(codecName), grpc.MaxCallRecvMsgSize(maxMessageSize))
	return resp, err
}

func (c *grpcClient) RunTask(ctx context.Context, req *RunTaskRequest) (*RunTaskResponse, error) {
	resp := new(RunTaskResponse)
	err := c.conn.Invoke(ctx, fullRunTask, req, resp, grpc.CallContentSubtype(codecName))
	return resp, err
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
