package main

import (
	"encoding/json"
	"testing"
)

// The progress line of trigger --wait counts all the run's tasks (task_counts), not only the
// answer's first page, and names a few running tasks, not hundreds.
func TestProgressLine(t *testing.T) {
	for _, tc := range []struct {
		name, answer, want string
	}{
		{"planning", `{"job_status":"RUNNING","tasks":[]}`, "RUNNING (planning its tasks)"},
		{"a small run", `{"job_status":"RUNNING","tasks":[{"task":"A","status":"DONE"},{"task":"B","status":"RUNNING","progress":{"done":4,"total":20}}]}`,
			"RUNNING 1/2 tasks done · running: B (4/20)"},
		{"a big run, beyond its first page", `{"job_status":"RUNNING","task_counts":{"total":3001,"done":2500,"running":5},"tasks":[
			{"task":"L","status":"RUNNING"},{"task":"L","status":"RUNNING"},{"task":"L","status":"RUNNING"},{"task":"L","status":"RUNNING"},{"task":"L","status":"RUNNING"}]}`,
			"RUNNING 2500/3001 tasks done · running: L, L, L, and 2 more"},
		{"running only outside the page", `{"job_status":"RUNNING","task_counts":{"total":501,"done":150,"running":16},"tasks":[{"task":"J","status":"PENDING"}],
			"running_tasks":[{"task":"L","status":"RUNNING"},{"task":"L","status":"RUNNING","progress":{"status":"step 2"}}]}`,
			"RUNNING 150/501 tasks done · running: L, L (step 2), and 14 more"},
	} {
		var st runStatus
		if err := json.Unmarshal([]byte(tc.answer), &st); err != nil {
			t.Fatal(err)
		}
		if got := progressLine(st); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
