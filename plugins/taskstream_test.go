package plugins

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// fakeRunner answers RunTask by the task name: "echo" answers with its key in the progress
// status, "fail" returns an RPC error, "block" waits for its context and records how it ended.
type fakeRunner struct {
	mu      sync.Mutex
	ended   map[string]error // key -> the context error a blocked task saw
	dl      map[string]bool  // key -> its context had a deadline
	blocked int              // "block" tasks started
}

func (f *fakeRunner) Graph(context.Context, *GraphRequest) (*GraphResponse, error) {
	return &GraphResponse{}, nil
}
func (f *fakeRunner) Metrics(context.Context, *MetricsRequest) (*MetricsResponse, error) {
	return &MetricsResponse{}, nil
}
func (f *fakeRunner) Progress(context.Context, *ProgressRequest) (*ProgressResponse, error) {
	return &ProgressResponse{}, nil
}

func (f *fakeRunner) RunTask(ctx context.Context, req *RunTaskRequest) (*RunTaskResponse, error) {
	_, hasDeadline := ctx.Deadline()
	f.mu.Lock()
	f.dl[req.Key] = hasDeadline
	f.mu.Unlock()
	switch req.Task.Task {
	case "fail":
		return nil, fmt.Errorf("unknown task %s", req.Key)
	case "block":
		f.mu.Lock()
		f.blocked++
		f.mu.Unlock()
		<-ctx.Done()
		f.mu.Lock()
		f.ended[req.Key] = ctx.Err()
		f.mu.Unlock()
		return &RunTaskResponse{Error: "stopped"}, nil
	}
	return &RunTaskResponse{Progress: &TaskProgress{Key: req.Key, Status: "ran " + req.Key}}, nil
}

// startFake serves runner on loopback and returns a host-side client of it, and a stop that
// ends the server abruptly (as a killed plugin would).
func startFake(t *testing.T, runner Runner) (*grpcClient, func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	srv.RegisterService(&runnerServiceDesc, runner)
	go srv.Serve(ln)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); srv.Stop() })
	return &grpcClient{conn: conn, tasks: newTaskMux(conn)}, srv.Stop
}

func TestTaskStream(t *testing.T) {
	newRunner := func() *fakeRunner { return &fakeRunner{ended: map[string]error{}, dl: map[string]bool{}} }

	t.Run("ManyConcurrentCallsEachGetTheirOwnAnswer", func(t *testing.T) {
		c, _ := startFake(t, newRunner())
		var wg sync.WaitGroup
		errs := make(chan error, 500)
		for i := range 500 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				key := fmt.Sprintf("k%d", i)
				resp, err := c.RunTask(context.Background(), &RunTaskRequest{Task: TaskRef{Task: "echo"}, Key: key})
				switch {
				case err != nil:
					errs <- err
				case resp.Progress == nil || resp.Progress.Status != "ran "+key:
					errs <- fmt.Errorf("call %s got the answer %+v", key, resp.Progress)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	t.Run("AnErrorReadsAsAUnaryCallsWould", func(t *testing.T) {
		c, _ := startFake(t, newRunner())
		_, err := c.RunTask(context.Background(), &RunTaskRequest{Task: TaskRef{Task: "fail"}, Key: "x"})
		if status.Code(err) != codes.Unknown || !strings.HasSuffix(err.Error(), "desc = unknown task x") {
			t.Errorf("err = %v, want code Unknown with the plugin's message", err)
		}
		// The stream still serves the next call.
		if _, err := c.RunTask(context.Background(), &RunTaskRequest{Task: TaskRef{Task: "echo"}, Key: "y"}); err != nil {
			t.Errorf("the call after an error: %v", err)
		}
	})

	t.Run("CancelReachesTheTaskAndOnlyIt", func(t *testing.T) {
		r := newRunner()
		c, _ := startFake(t, r)
		ctx, cancel := context.WithCancel(context.Background())
		other, stopOther := context.WithCancel(context.Background())
		defer stopOther()
		otherDone := make(chan error, 1)
		go func() {
			_, err := c.RunTask(other, &RunTaskRequest{Task: TaskRef{Task: "block"}, Key: "other"})
			otherDone <- err
		}()
		done := make(chan error, 1)
		go func() {
			_, err := c.RunTask(ctx, &RunTaskRequest{Task: TaskRef{Task: "block"}, Key: "mine"})
			done <- err
		}()
		time.Sleep(100 * time.Millisecond)
		cancel()
		if err := <-done; status.Code(err) != codes.Canceled {
			t.Errorf("cancelled call: err = %v, want Canceled", err)
		}
		waitFor(t, func() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.ended["mine"] != nil })
		select {
		case err := <-otherDone:
			t.Fatalf("the other task ended too: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
		stopOther()
		<-otherDone
	})

	t.Run("ACallCancelledBeforeItIsSentNeverRunsUncancelled", func(t *testing.T) {
		r := newRunner()
		c, _ := startFake(t, r)
		for i := range 50 {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if _, err := c.RunTask(ctx, &RunTaskRequest{Task: TaskRef{Task: "block"}, Key: fmt.Sprint("early", i)}); status.Code(err) != codes.Canceled {
				t.Fatalf("a cancelled call: err = %v", err)
			}
		}
		c.RunTask(context.Background(), &RunTaskRequest{Task: TaskRef{Task: "echo"}, Key: "after"}) // the stream has caught up
		waitFor(t, func() bool { r.mu.Lock(); defer r.mu.Unlock(); return len(r.ended) == r.blocked })
	})

	t.Run("TheDeadlineTravelsWithTheTask", func(t *testing.T) {
		r := newRunner()
		c, _ := startFake(t, r)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err := c.RunTask(ctx, &RunTaskRequest{Task: TaskRef{Task: "block"}, Key: "slow"})
		if status.Code(err) != codes.DeadlineExceeded {
			t.Errorf("err = %v, want DeadlineExceeded", err)
		}
		c.RunTask(context.Background(), &RunTaskRequest{Task: TaskRef{Task: "echo"}, Key: "free"})
		waitFor(t, func() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.ended["slow"] != nil })
		r.mu.Lock()
		defer r.mu.Unlock()
		// The host's timer fires first and cancels it (the plugin's deadline has a grace).
		if !errors.Is(r.ended["slow"], context.Canceled) || !r.dl["slow"] || r.dl["free"] {
			t.Errorf("plugin side: slow ended with %v (deadline %v), free had a deadline: %v", r.ended["slow"], r.dl["slow"], r.dl["free"])
		}
	})

	t.Run("ALostPluginFailsEveryCallWaitingAndLater", func(t *testing.T) {
		c, kill := startFake(t, newRunner())
		errs := make(chan error, 3)
		for i := range 3 {
			go func() {
				_, err := c.RunTask(context.Background(), &RunTaskRequest{Task: TaskRef{Task: "block"}, Key: fmt.Sprint(i)})
				errs <- err
			}()
		}
		time.Sleep(100 * time.Millisecond)
		kill()
		for range 3 {
			select {
			case err := <-errs:
				if err == nil || status.Code(err) == codes.OK {
					t.Errorf("a call on a lost plugin returned no error")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("a call waits forever on a lost plugin")
			}
		}
		if _, err := c.RunTask(context.Background(), &RunTaskRequest{Task: TaskRef{Task: "echo"}, Key: "after"}); err == nil {
			t.Error("a call after the plugin was lost succeeded")
		}
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("timed out waiting")
}
