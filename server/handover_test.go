package server

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"nectar/server/queue"
	"nectar/server/runs"
)

// tasksPublished is how many task messages the server's queue has stored since it opened.
func tasksPublished(t *testing.T, ts *testServer) uint64 {
	t.Helper()
	js, err := jetstream.New(ts.queue.Conn())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, queue.TasksStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// The driver hands a task to a worker of its own process by a call, not through the queue,
// while that worker has a free execution slot; past TaskParallelism such tasks the rest are
// published for any worker. With an embedded queue no other process can reach (no
// NECTAR_NATS_LISTEN), nothing is ever published: nobody else would take it.
func TestTheDriversOwnWorkerTakesTasksByACall(t *testing.T) {
	tests := []struct {
		name          string
		listen        bool // other processes could reach the queue
		path          string
		wantPublished bool
	}{
		{"a closed embedded queue: every task by a call", false,
			"/api/chains/testchains/fanin_chain/JoinTask?leaves=40&salt=closed&wait=60s", false},
		{"a queue others can reach: a slot's worth by a call, the rest published", true,
			"/api/chains/testchains/fanin_chain/OverlapTask?spans=8&hold=300ms&salt=open&wait=60s", true},
		// A task that names its queue (served by the server's own worker, as every queue a
		// task names is by default) goes by a call too.
		{"tasks naming their queue", false,
			"/api/chains/testchains/queues_chain/ReportTask?name=handover&wait=60s", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, func(c *Config) {
				c.Dispatch = "queue" // also when the suite runs with NECTAR_DISPATCH=direct
				c.TaskParallelism = 2
				if tt.listen {
					c.NATSListen = freeAddr(t)
				}
			})
			if len(ts.workers) != 1 {
				t.Fatalf("%d workers in the server's process, want 1", len(ts.workers))
			}
			before, handed := tasksPublished(t, ts), ts.Runs().HandedOver()
			a := ts.post(t, tt.path)
			if a.Code != 200 || *a.run.JobStatus != runs.Done {
				t.Fatalf("POST = %d %v %s", a.Code, a.run.JobStatus, strOr(a.run.Error))
			}
			for _, task := range a.run.Tasks {
				if task.Worker != ts.workers[0].ID() || !ts.exists(task.Key+"/"+runs.OutName) {
					t.Errorf("%s: worker %q, out committed %v; want the server's own worker %s and an out", task.Task, task.Worker, ts.exists(task.Key+"/"+runs.OutName), ts.workers[0].ID())
				}
			}
			published, byCall := tasksPublished(t, ts)-before, ts.Runs().HandedOver()-handed
			switch {
			case !tt.wantPublished && (published != 0 || byCall != int64(len(a.run.Tasks))):
				t.Errorf("%d task messages published and %d of %d tasks handed over by a call, want none published and all by a call", published, byCall, len(a.run.Tasks))
			case tt.wantPublished && (published == 0 || byCall < 1 || byCall >= int64(len(a.run.Tasks))):
				t.Errorf("%d task messages published and %d of %d tasks handed over by a call, want some by a call (up to 2 in hand) and the rest through the queue", published, byCall, len(a.run.Tasks))
			}
			// Every task handed over has let go of its room in the worker (a task that kept
			// it would hold the worker's Stop, and the server's, forever), and Stop returns.
			if held := ts.workers[0].HeldByCall(); held != 0 {
				t.Fatalf("the run has ended, and the worker still holds %d tasks handed over by a call", held)
			}
			stopped := make(chan struct{})
			go func() { ts.stop(); close(stopped) }()
			select {
			case <-stopped:
			case <-time.After(15 * time.Second):
				t.Fatal("the server did not stop within 15 s of its runs' end (its worker waits for a task handed over by a call)")
			}
		})
	}
}
