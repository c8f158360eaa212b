package runs

import (
	"testing"
	"time"
)

// Workers report tasks by their index in the run's graph. A report naming an index the run
// does not have (a bug, or a message of another version) must change nothing and must not
// take the server down; a report of a task sent goes to the dispatch waiting for it.
func TestReportsOfNoTaskOfTheRunAreIgnored(t *testing.T) {
	s := &scheduler{nodes: make([]*node, 3)}
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
}
