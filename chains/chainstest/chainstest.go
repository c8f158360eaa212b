// Package chainstest runs one task in the test's own process, the way a unit test wants it: no
// server, no plugin, no store. Give it the outs of the tasks it requires, and get back its out,
// its log, its error and its metrics.
//
//	func TestReportTask(t *testing.T) {
//		res := chainstest.Run(t, ReportTask{Day: day}, chainstest.Inputs("id,rows\n1,2\n"))
//		if res.Err != nil {
//			t.Fatalf("ReportTask: %v\nlog:\n%s", res.Err, res.Log)
//		}
//		// res.Out is what the task wrote to ctx.Out()
//	}
//
// User code is called exactly as the plugin calls it (chains/taskrun): the same Context, a panic
// turned into an error with its stack in the log, DefineMetrics guarded the same way. What a run
// adds around one attempt is left out on purpose: retries, process isolation and the kill at the
// timeout belong to the server, and are tested there.
package chainstest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"nectar/chains"
	"nectar/chains/taskrun"
)

// Result is what one run of a task produced.
type Result struct {
	// Out is what the task wrote to ctx.Out(), or nil when it failed: a failed task's out is never
	// committed in a real run either.
	Out []byte
	// Log is the task's log: ctx.Log() lines, ctx.Stdout() text, and the stack of a panic.
	Log string
	// Err is what Run returned; a panic is "panic: <value>" (Panicked is then true), a Run that
	// outlived its timeout is an error wrapping context.DeadlineExceeded.
	Err      error
	Panicked bool
	Metrics  Metrics
	// Progress is what the task last reported with ctx.Progress and ctx.Status, and Reports how
	// many reports it made.
	Progress Progress
	Reports  int
	// Artifacts are the named outputs the task wrote (ctx.Artifact), by name; nil when it
	// failed, as a failed task commits none. Published maps names to where ctx.Publish put them.
	Artifacts map[string][]byte
	Published map[string]string
}

// Progress is a task's report of itself: done of total units, and a status line.
type Progress = taskrun.Progress

// Metrics are the figures of the run. CPU and memory are the test process's own (the task ran
// inside it), so they are exact only when nothing else runs in parallel.
type Metrics struct {
	Elapsed      time.Duration
	CPUSeconds   float64 // user + system CPU the process used during Run
	PeakRSSBytes uint64  // the process's peak resident memory so far
	// Custom is what the task's DefineMetrics returned (JSON), called once after Run with the
	// figures above; nil when the task defines no metrics.
	Custom json.RawMessage
	// CustomErr is DefineMetrics' error or panic, if any.
	CustomErr error
}

// Option changes how Run runs the task.
type Option func(*options)

type options struct {
	inputs  [][]byte
	timeout time.Duration
	ctx     context.Context
	sources map[string][]byte
	conns   map[string]string
}

// Sources gives the store objects the task reads with ctx.Source, by path.
func Sources(objects map[string]string) Option {
	return func(o *options) {
		if o.sources == nil {
			o.sources = map[string][]byte{}
		}
		for k, v := range objects {
			o.sources[k] = []byte(v)
		}
	}
}

// Connections gives the values of the connections the task reads with ctx.Connection (a test
// database's URL), by name. Only those the task declares are given, as on a server.
func Connections(values map[string]string) Option {
	return func(o *options) { o.conns = values }
}

// Inputs gives the outs of the required tasks, in the order Requires returns them: the task
// reads them with ctx.Input(i) and ctx.ReadInput(i).
func Inputs(outs ...string) Option {
	return func(o *options) {
		for _, s := range outs {
			o.inputs = append(o.inputs, []byte(s))
		}
	}
}

// InputBytes is Inputs for binary outs.
func InputBytes(outs ...[]byte) Option {
	return func(o *options) { o.inputs = append(o.inputs, outs...) }
}

// Timeout bounds the attempt (default: the task's own Timeout(), else none). Past it the task's
// context is cancelled; Run gives it a second more to return, then reports the timeout.
func Timeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// Context is the parent of the task's context (cancel it to test cancellation).
func Context(ctx context.Context) Option { return func(o *options) { o.ctx = ctx } }

// graceAfterTimeout is how long a task whose context was cancelled may take to return.
const graceAfterTimeout = time.Second

// Run runs task once, in this process, and returns what it produced. A failing task is a
// result, not a test failure; misuse (inputs that do not match Requires) fails the test at once.
func Run(t testing.TB, task chains.Task, opts ...Option) Result {
	t.Helper()
	o := options{ctx: context.Background()}
	for _, opt := range opts {
		opt(&o)
	}
	if task == nil {
		t.Fatalf("chainstest.Run: task is nil")
	}
	paths := writeInputs(t, task, o.inputs)
	if o.timeout == 0 {
		if to, ok := task.(chains.Timeouter); ok {
			o.timeout = to.Timeout()
		}
	}
	ctx, cancel := context.WithCancel(o.ctx)
	if o.timeout > 0 {
		ctx, cancel = context.WithTimeout(o.ctx, o.timeout)
	}
	defer cancel()

	var out, logw lockedBuffer
	var progressMu sync.Mutex
	var last Progress
	reports := 0
	report := func(p Progress) {
		progressMu.Lock()
		last, reports = p, reports+1
		progressMu.Unlock()
	}
	type outcome struct {
		err      error
		panicked bool
	}
	done := make(chan outcome, 1)
	before := usage()
	start := time.Now()
	artDir := t.TempDir()
	published := map[string]string{}
	var pubMu sync.Mutex
	tio := taskrun.IO{Context: ctx, Out: &out, Log: &logw, Inputs: paths, Report: report,
		ArtifactDir: artDir, Connections: declared(task, o.conns),
		Publish: func(name, path string) { pubMu.Lock(); published[name] = path; pubMu.Unlock() },
		Source: func(path string) (io.ReadCloser, error) {
			b, ok := o.sources[path]
			if !ok {
				return nil, fmt.Errorf("source %s: no object at this path (the test gives: %s)", path, strings.Join(sortedKeys(o.sources), ", "))
			}
			return io.NopCloser(bytes.NewReader(b)), nil
		}}
	go func() {
		err, panicked := taskrun.Run(task, tio)
		done <- outcome{err, panicked}
	}()
	var res Result
	select {
	case oc := <-done:
		res.Err, res.Panicked = oc.err, oc.panicked
	case <-ctx.Done():
		select {
		case oc := <-done:
			res.Err, res.Panicked = oc.err, oc.panicked
		case <-time.After(graceAfterTimeout):
			// The goroutine cannot be killed (the server kills the process); it is left behind.
			res.Err = fmt.Errorf("%T did not return %s after its context ended (does it watch ctx.Context()?): %w",
				task, graceAfterTimeout, context.Cause(ctx))
		}
	}
	res.Metrics.Elapsed = time.Since(start)
	after := usage()
	res.Metrics.CPUSeconds = after.cpu - before.cpu
	res.Metrics.PeakRSSBytes = after.peakRSS
	if res.Err == nil {
		res.Out = out.Bytes()
		res.Artifacts = readArtifacts(t, artDir)
		pubMu.Lock()
		for name, path := range published {
			if _, ok := res.Artifacts[name]; !ok {
				res.Err = fmt.Errorf("Publish(%q): the task made no artifact of that name", name)
			}
			if res.Published == nil {
				res.Published = map[string]string{}
			}
			res.Published[name] = path
		}
		pubMu.Unlock()
	}
	if _, ok := task.(chains.MetricsDefiner); ok {
		cpuPercent := 0.0
		if s := res.Metrics.Elapsed.Seconds(); s > 0 {
			cpuPercent = 100 * res.Metrics.CPUSeconds / s
		}
		res.Metrics.Custom, _, res.Metrics.CustomErr = taskrun.DefineMetrics(task, cpuPercent, res.Metrics.PeakRSSBytes, res.Metrics.Elapsed, nil)
	}
	res.Log = logw.String()
	progressMu.Lock()
	res.Progress, res.Reports = last, reports
	progressMu.Unlock()
	return res
}

// writeInputs puts each given out in a file of its own, as the plugin finds them, after checking
// that there is one per required task.
func writeInputs(t testing.TB, task chains.Task, inputs [][]byte) []string {
	t.Helper()
	var required []chains.Task
	if r, ok := task.(chains.Requirer); ok {
		required = r.Requires()
	}
	if len(inputs) != len(required) {
		names := make([]string, len(required))
		for i, r := range required {
			names[i] = fmt.Sprintf("%T", r)
		}
		list := "none"
		if len(names) > 0 {
			list = strings.Join(names, ", ")
		}
		t.Fatalf("chainstest.Run(%T): %d inputs given, but the task requires %d tasks (%s): give chainstest.Inputs one out per required task, in Requires order",
			task, len(inputs), len(required), list)
	}
	if len(inputs) == 0 {
		return nil
	}
	dir := t.TempDir()
	paths := make([]string, len(inputs))
	for i, b := range inputs {
		paths[i] = filepath.Join(dir, fmt.Sprintf("input-%d", i))
		if err := os.WriteFile(paths[i], b, 0o600); err != nil {
			t.Fatalf("chainstest.Run: writing input %d: %v", i, err)
		}
	}
	return paths
}

type processUsage struct {
	cpu     float64
	peakRSS uint64
}

func usage() processUsage {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return processUsage{}
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return processUsage{cpu: tv(ru.Utime) + tv(ru.Stime), peakRSS: uint64(ru.Maxrss) * 1024} // Maxrss is in KiB on Linux
}

// lockedBuffer is a buffer a task may write from several goroutines while Run reads it at the
// end (a task that outlived its timeout may still be writing).
type lockedBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *lockedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.buf...)
}

func (b *lockedBuffer) String() string { return string(b.Bytes()) }

// declared keeps the connections the task declares (chains.Connector), as the server does.
func declared(task chains.Task, conns map[string]string) map[string]string {
	cn, ok := task.(chains.Connector)
	if !ok {
		return nil
	}
	out := map[string]string{}
	for _, name := range cn.Connections() {
		if v, ok := conns[name]; ok {
			out[name] = v
		}
	}
	return out
}

// readArtifacts reads what the task wrote in dir, by artifact name.
func readArtifacts(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	var out map[string][]byte
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if out == nil {
			out = map[string][]byte{}
		}
		out[filepath.ToSlash(rel)] = b
		return nil
	})
	if err != nil {
		t.Fatalf("chainstest: reading the artifacts: %v", err)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(keys) == 0 {
		return []string{"none"}
	}
	return keys
}
