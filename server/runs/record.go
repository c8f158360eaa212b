// Package runs owns run management: run keys, single flight, the task scheduler that drives a
// plugin process, statuses, and the run record kept in the store next to `out`.
package runs

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"time"
)

// Status is a run's or a task's state.
type Status string

const (
	Pending        Status = "PENDING"
	Running        Status = "RUNNING"
	Done           Status = "DONE"
	Failed         Status = "FAILED"
	Cancelled      Status = "CANCELLED"
	UpstreamFailed Status = "UPSTREAM_FAILED" // a task that could not start because a dependency failed
)

// Final reports whether s will not change any more.
func (s Status) Final() bool {
	return s == Done || s == Failed || s == Cancelled || s == UpstreamFailed
}

// Object names under a task's key.
const (
	OutName     = "out"
	LogName     = "log"
	ParamsName  = "params"
	RecordName  = "run"
	MetricsName = "metrics"
)

// Key is chains/<type>/<chain>/<task>/<md5 of the canonical parameter JSON>.
func Key(typ, chain, task string, params []byte) string {
	sum := md5.Sum(params)
	return "chains/" + typ + "/" + chain + "/" + task + "/" + hex.EncodeToString(sum[:])
}

// TaskState is one task of a run.
type TaskState struct {
	Chain      string     `json:"chain"`
	Task       string     `json:"task"`
	Key        string     `json:"key"`
	Status     Status     `json:"status"`
	Cached     bool       `json:"cached,omitempty"` // its out existed: it was not run again
	Error      string     `json:"error,omitempty"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	Attempts   []Attempt  `json:"attempts,omitempty"`
}

// Attempt is one try of a task (tasks with a retry policy may have several).
type Attempt struct {
	Number     int        `json:"number"`
	StartedAt  time.Time  `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	Error      string     `json:"error,omitempty"`
}

// Record is the run record stored at <key>/run: what a status query answers after the run.
type Record struct {
	RunID       string          `json:"run_id"` // one execution; leases name it too
	Key         string          `json:"key"`
	Type        string          `json:"type"`
	Chain       string          `json:"chain"`
	Task        string          `json:"task"`
	Params      json.RawMessage `json:"params"`
	Status      Status          `json:"status"`
	Error       string          `json:"error,omitempty"`
	SubmittedAt time.Time       `json:"submitted_at"`
	StartedAt   *time.Time      `json:"started_at,omitempty"`
	FinishedAt  *time.Time      `json:"finished_at,omitempty"`
	Tasks       []TaskState     `json:"tasks,omitempty"`
	Metrics     *Metrics        `json:"metrics,omitempty"` // summary and per-task figures; samples are in the metrics object
}

func (r *Record) clone() Record {
	c := *r
	c.Tasks = append([]TaskState(nil), r.Tasks...)
	for i := range c.Tasks {
		c.Tasks[i].Attempts = append([]Attempt(nil), c.Tasks[i].Attempts...)
	}
	return c
}

func timePtr(t time.Time) *time.Time { return &t }
