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
			before := tasksPublished(t, ts)
			a := ts.post(t, tt.path)
			if a.Code != 200 || *a.run.JobStatus != runs.Done {
				t.Fatalf("POST = %d %v %s", a.Code, a.run.JobStatus, strOr(a.run.Error))
			}
			for _, task := range a.run.Tasks {
				if task.Worker != ts.workers[0].ID() || !ts.exists(task.Key+"/"+runs.OutName) {
					t.Errorf("%s: worker %q, out committed %v; want the server's own worker %s and an out", task.Task, task.Worker, ts.exists(task.Key+"/"+runs.OutName), ts.workers[0].ID())
				}
			}
			published := tasksPublished(t, ts) - before
			switch {
			case !tt.wantPublished && published != 0:
				t.Errorf("%d task messages published, want none (every task by a call)", published)
			case tt.wantPublished && published == 0:
				t.Errorf("no task message published, want the tasks beyond %d in hand to go through the queue", 2)
			}
		})
	}
}
