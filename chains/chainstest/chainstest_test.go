package chainstest_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"nectar/chains"
	"nectar/chains/chainstest"
	"nectar/chains/testchains"
)

func TestRun(t *testing.T) {
	tests := []struct {
		name         string
		task         chains.Task
		opts         []chainstest.Option
		wantOut      string
		wantErr      string // substring; "" means success
		wantPanicked bool
		wantLog      []string
	}{
		{name: "out and log", task: testchains.HelloTask{Name: "ada"},
			wantOut: "hello ada\n", wantLog: []string{"msg=greeting", "name=ada"}},
		{name: "inputs in Requires order", task: testchains.UpperTask{Name: "ada"}, opts: []chainstest.Option{chainstest.Inputs("hello ada\n")},
			wantOut: "HELLO ADA\n"},
		{name: "binary input", task: testchains.UpperTask{}, opts: []chainstest.Option{chainstest.InputBytes([]byte{'a', 0, 'b'})},
			wantOut: "A\x00B"},
		{name: "error keeps no out", task: testchains.FailTask{Message: "no rows"},
			wantErr: "no rows"},
		{name: "panic is an error with the stack in the log", task: testchains.PanicTask{Message: "boom"},
			wantErr: "panic: boom", wantPanicked: true, wantLog: []string{"panic: boom", "goroutine", "faults_chain.go"}},
		{name: "timeout cancels the context", task: testchains.SleepTask{Duration: time.Hour}, opts: []chainstest.Option{chainstest.Timeout(50 * time.Millisecond)},
			wantErr: "context deadline exceeded"},
		{name: "the task's own timeout, ignored by the task", task: testchains.HangTask{Limit: 50 * time.Millisecond},
			wantErr: "did not return 1s after its context ended"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := chainstest.Run(t, tt.task, tt.opts...)
			switch {
			case tt.wantErr == "" && res.Err != nil:
				t.Fatalf("Run(%T) error = %v, want success\nlog:\n%s", tt.task, res.Err, res.Log)
			case tt.wantErr != "" && (res.Err == nil || !strings.Contains(res.Err.Error(), tt.wantErr)):
				t.Fatalf("Run(%T) error = %v, want one containing %q", tt.task, res.Err, tt.wantErr)
			}
			if string(res.Out) != tt.wantOut {
				t.Errorf("Run(%T).Out = %q, want %q", tt.task, res.Out, tt.wantOut)
			}
			if tt.wantErr != "" && res.Out != nil {
				t.Errorf("Run(%T) failed but Out = %q, want nil (a failed out is never committed)", tt.task, res.Out)
			}
			if res.Panicked != tt.wantPanicked {
				t.Errorf("Run(%T).Panicked = %v, want %v", tt.task, res.Panicked, tt.wantPanicked)
			}
			for _, w := range tt.wantLog {
				if !strings.Contains(res.Log, w) {
					t.Errorf("Run(%T).Log lacks %q:\n%s", tt.task, w, res.Log)
				}
			}
			if res.Metrics.Elapsed <= 0 || res.Metrics.PeakRSSBytes == 0 {
				t.Errorf("Run(%T).Metrics = %+v, want elapsed time and a peak RSS", tt.task, res.Metrics)
			}
		})
	}
}

func TestRunTimeoutWrapsDeadline(t *testing.T) {
	res := chainstest.Run(t, testchains.HangTask{Limit: 20 * time.Millisecond})
	if !errors.Is(res.Err, context.DeadlineExceeded) {
		t.Errorf("Run(HangTask).Err = %v, want it to wrap context.DeadlineExceeded", res.Err)
	}
}

func TestRunCancelledByParent(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	res := chainstest.Run(t, testchains.SleepTask{Duration: time.Hour}, chainstest.Context(ctx))
	if !errors.Is(res.Err, context.Canceled) {
		t.Errorf("Run(SleepTask) with a cancelled parent: Err = %v, want context.Canceled", res.Err)
	}
}

func TestRunCustomMetrics(t *testing.T) {
	res := chainstest.Run(t, testchains.CountedTask{For: 30 * time.Millisecond})
	if res.Err != nil || res.Metrics.CustomErr != nil {
		t.Fatalf("Run(CountedTask) = %v, metrics error %v", res.Err, res.Metrics.CustomErr)
	}
	var m struct {
		Calls   int    `json:"calls"`
		LastRAM uint64 `json:"last_ram_bytes"`
		Elapsed string `json:"elapsed"`
	}
	if err := json.Unmarshal(res.Metrics.Custom, &m); err != nil {
		t.Fatalf("Custom = %s: %v", res.Metrics.Custom, err)
	}
	if d, _ := time.ParseDuration(m.Elapsed); m.Calls != 1 || m.LastRAM != res.Metrics.PeakRSSBytes || d < 30*time.Millisecond {
		t.Errorf("Custom = %s, want one call with the run's RSS (%d) and an elapsed time of 30ms or more", res.Metrics.Custom, res.Metrics.PeakRSSBytes)
	}
	if res := chainstest.Run(t, testchains.HelloTask{}); res.Metrics.Custom != nil {
		t.Errorf("HelloTask defines no metrics, but Custom = %s", res.Metrics.Custom)
	}
}

// fatalTB records the first Fatalf and stops the goroutine, as testing.T does.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestRunRefusesInputsThatDoNotMatchRequires(t *testing.T) {
	tests := []struct {
		task chains.Task
		opts []chainstest.Option
		want string
	}{
		{testchains.UpperTask{}, nil, "0 inputs given, but the task requires 1 tasks (testchains.HelloTask)"},
		{testchains.HelloTask{}, []chainstest.Option{chainstest.Inputs("x")}, "1 inputs given, but the task requires 0 tasks (none)"},
	}
	for _, tt := range tests {
		f := &fatalTB{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			chainstest.Run(f, tt.task, tt.opts...)
		}()
		<-done
		if !strings.Contains(f.msg, tt.want) {
			t.Errorf("Run(%T) with %d options: fatal %q, want it to contain %q", tt.task, len(tt.opts), f.msg, tt.want)
		}
	}
}

func TestRunRecordsProgress(t *testing.T) {
	res := chainstest.Run(t, testchains.ProgressTask{Count: 4, Every: time.Millisecond})
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	want := chainstest.Progress{Done: 4, Total: 4, Status: "step 4 of 4"}
	if res.Progress != want || res.Reports != 8 {
		t.Errorf("Progress = %+v after %d reports, want %+v after 8", res.Progress, res.Reports, want)
	}
}

// Sources, artifacts and connections in a unit test: given by the test, checked like a run.
func TestDataInAndOut(t *testing.T) {
	src := chainstest.Run(t, testchains.SourceTask{Path: "datasets/a.csv"}, chainstest.Sources(map[string]string{"datasets/a.csv": "x,y\n"}))
	sum := sha256.Sum256([]byte("x,y\n"))
	if want := "4 " + hex.EncodeToString(sum[:]) + "\n"; src.Err != nil || string(src.Out) != want {
		t.Errorf("SourceTask = %q, %v", src.Out, src.Err)
	}
	if miss := chainstest.Run(t, testchains.SourceTask{Path: "datasets/b.csv"}); miss.Err == nil || !strings.Contains(miss.Err.Error(), "no object at this path") {
		t.Errorf("SourceTask of an object not given = %v", miss.Err)
	}
	arts := chainstest.Run(t, testchains.ArtifactsTask{Count: 3, Publish: "x"})
	if arts.Err != nil || len(arts.Artifacts) != 3 || string(arts.Artifacts["parts/1.txt"]) != "part 1 of 3\n" ||
		arts.Published["parts/0.txt"] != "reports/testchains/x/first.txt" {
		t.Errorf("ArtifactsTask = %v %q %v", arts.Err, arts.Artifacts, arts.Published)
	}
	if failed := chainstest.Run(t, testchains.ArtifactsTask{Count: 2, Fail: true}); failed.Err == nil || failed.Artifacts != nil {
		t.Errorf("a failing ArtifactsTask = %v with artifacts %v", failed.Err, failed.Artifacts)
	}
	sec := chainstest.Run(t, testchains.SecretTask{}, chainstest.Connections(map[string]string{"testdb": "postgres://a:b@c/d", "other": "x"}))
	if sec.Err != nil || !strings.HasPrefix(string(sec.Out), "connected with a 18-byte dsn") {
		t.Errorf("SecretTask = %q, %v", sec.Out, sec.Err)
	}
	if bare := chainstest.Run(t, testchains.SecretTask{}); bare.Err == nil || !strings.Contains(bare.Err.Error(), "NECTAR_CONN_TESTDB") {
		t.Errorf("SecretTask without its connection = %v", bare.Err)
	}
}

// readBothTask reads each of its inputs whole with ReadInput and again through Input, and
// writes one line per input: its size and SHA-256 as each read saw them.
type readBothTask struct{ N int }

func (t readBothTask) Requires() []chains.Task {
	deps := make([]chains.Task, t.N)
	for i := range deps {
		deps[i] = testchains.LeafTask{Index: i}
	}
	return deps
}

func (t readBothTask) Run(ctx *chains.Context) error {
	for i := 0; i < ctx.NumInputs(); i++ {
		whole, err := ctx.ReadInput(i)
		if err != nil {
			return err
		}
		r, err := ctx.Input(i)
		if err != nil {
			return err
		}
		streamed, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			return err
		}
		a, b := sha256.Sum256(whole), sha256.Sum256(streamed)
		fmt.Fprintf(ctx.Out(), "%d %x %d %x\n", len(whole), a[:4], len(streamed), b[:4])
	}
	if _, err := ctx.ReadInput(ctx.NumInputs()); err == nil {
		return errors.New("ReadInput past the last input did not fail")
	}
	return nil
}

// Inputs of every size read back whole, by either way of reading them: around the first
// buffer, a page, and a megabyte.
func TestInputsReadBackWhole(t *testing.T) {
	sizes := []int{0, 1, 511, 512, 513, 4096, 1<<20 + 3}
	var inputs [][]byte
	var want strings.Builder
	for i, n := range sizes {
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(i*7 + j*13)
		}
		inputs = append(inputs, b)
		sum := sha256.Sum256(b)
		fmt.Fprintf(&want, "%d %x %d %x\n", n, sum[:4], n, sum[:4])
	}
	res := chainstest.Run(t, readBothTask{N: len(sizes)}, chainstest.InputBytes(inputs...))
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if string(res.Out) != want.String() {
		t.Errorf("inputs read back as\n%s\nwant\n%s", res.Out, want.String())
	}
}

// copyTask writes the out of the task it requires as its own, read with ReadInput.
type copyTask struct{}

func (copyTask) Requires() []chains.Task { return []chains.Task{testchains.HelloTask{}} }

func (copyTask) Run(ctx *chains.Context) error {
	b, err := ctx.ReadInput(0)
	if err != nil {
		return err
	}
	_, err = ctx.Out().Write(b)
	return err
}

// ReadInput returns an input whole at every size: none, below, at and past its first read's
// buffer (512 bytes, or the size the file states + 1), and big.
func TestReadInputReadsTheWholeOut(t *testing.T) {
	for _, size := range []int{0, 1, 511, 512, 513, 4096, 1<<20 + 7} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			in := make([]byte, size)
			for i := range in {
				in[i] = byte(i*7 + i/251)
			}
			res := chainstest.Run(t, copyTask{}, chainstest.InputBytes(in))
			if res.Err != nil {
				t.Fatalf("run: %v", res.Err)
			}
			if string(res.Out) != string(in) {
				t.Errorf("out has %d bytes; want the input's %d, the same", len(res.Out), len(in))
			}
		})
	}
}
