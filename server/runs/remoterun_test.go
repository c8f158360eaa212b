package runs

import (
	"testing"
	"time"
)

// Workers report tasks by their index in the run's graph. A report naming an index the run
// does not have (a bug, or a message of another version) must change nothing and must not
// take the server down; a report of a task sent goes to the dispatch waiting for it.
func TestReportsOfNoTaskOfTheRunAreIgnored(t *testing.T) {
	s := &scheduler{nodes: make([]node, 3)}
	rr := newRemoteRun(s)
	m := &Manager{remote: map[string]*remoteRun{"run-1": rr}}
	ch := rr.await(1, 0)
	for _, i := range []int{-1, 3, 1 << 20} {
		m.route(&driverMsg{Run: "run-1", Worker: "w1", Update: &taskUpdate{Index: i, Delivery: 1, Worker: "w1"}})
		m.route(&driverMsg{Run: "run-1", Worker: "w1", Result: &resultMsg{Index: i, Err: "boom"}})
		rr.finish(taskResult{idx: i, err: "boom"})
		rr.forget(i)
	}
	m.route(&driverMsg{Run: "run-1", Worker: "w1", Result: &resultMsg{Index: 0, Err: "boom"}}) // never sent
	select {
	case res := <-ch:
		t.Fatalf("task 1 got the end %+v of another index", res)
	default:
	}
	rr.finishUntaken() // task 1 was not taken: it ends as not started
	select {
	case res := <-ch:
		if res.idx != 1 || !res.notStarted {
			t.Fatalf("task 1 ended with %+v, want not started", res)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("task 1 never ended")
	}
	// Ended once: a late result of it changes nothing.
	rr.finish(taskResult{idx: 1, err: "late"})
	select {
	case res := <-ch:
		t.Fatalf("task 1 ended twice: %+v", res)
	default:
	}
	// Its dispatch ended: the run keeps nothing of it (a run of 50,000 tasks holds only those
	// in hand), and news of it still changes nothing.
	rr.drop(1)
	if len(rr.tasks) != 0 {
		t.Fatalf("the run still holds %d tasks after their dispatch ended", len(rr.tasks))
	}
	m.route(&driverMsg{Run: "run-1", Worker: "w1", Update: &taskUpdate{Index: 1, Delivery: 1, Worker: "w1"}})
	m.route(&driverMsg{Run: "run-1", Worker: "w1", Result: &resultMsg{Index: 1, Err: "late"}})
	if len(rr.tasks) != 0 {
		t.Fatalf("late news of a task made it held again: %d tasks", len(rr.tasks))
	}
}

// A task redelivered after its worker died is found done when that worker had committed its
// out: the record shows the attempt that made it, one successful attempt, even where the lost
// worker's news of it never arrived (its NATS node died with it).
func TestAFoundTaskShowsTheAttemptThatMadeItsOut(t *testing.T) {
	started := time.Now().UTC().Add(-time.Second)
	ended := started.Add(100 * time.Millisecond)
	for _, tc := range []struct {
		name     string
		attempts []Attempt
		want     int // attempts recorded in the end
	}{
		{"no news of it", nil, 1},
		{"its start known", []Attempt{{Number: 1, StartedAt: started}}, 1},
		{"a failed attempt, then no news of the retry", []Attempt{{Number: 1, StartedAt: started, FinishedAt: &ended, Error: "flaky"}}, 2},
		{"its end known", []Attempt{{Number: 1, StartedAt: started, FinishedAt: &ended}}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Run{rec: Record{Tasks: []TaskState{{Task: "Leaf", Status: Running, StartedAt: &started, Attempts: append([]Attempt(nil), tc.attempts...)}}}}
			s := &scheduler{r: r, nodes: []node{{slot: 0}}}
			rr := newRemoteRun(s)
			rr.await(0, 0)
			rr.update("w1", taskUpdate{Index: 0, Delivery: 1, Worker: "w1"})
			rr.update("w2", taskUpdate{Index: 0, Delivery: 2, Worker: "w2", Found: true})
			got := r.rec.Tasks[0].Attempts
			ok := 0
			for _, a := range got {
				if a.FinishedAt == nil {
					t.Errorf("attempt %d is still open: %+v", a.Number, got)
				}
				if a.Error == "" {
					ok++
				}
			}
			if ok != 1 || len(got) != tc.want {
				t.Errorf("attempts after the out was found = %+v; want the known ones and one successful", got)
			}
		})
	}
}
