// Package runs owns run management: run keys, single flight, the task scheduler that drives a
// plugin process, statuses, and the run record kept in the store next to `out`.
package runs

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"nectar/plugins"
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
	Chain string `json:"chain"`
	Task  string `json:"task"`
	Key   string `json:"key"`
	// Params are the task's canonical parameters: the root's are also stored at <key>/params,
	// a dependency's only here.
	Params     json.RawMessage `json:"params,omitempty"`
	Status     Status          `json:"status"`
	Cached     bool            `json:"cached,omitempty"` // its out existed: it was not run again
	Error      string          `json:"error,omitempty"`
	StartedAt  *time.Time      `json:"started_at,omitempty"`
	FinishedAt *time.Time      `json:"finished_at,omitempty"`
	Attempts   []Attempt       `json:"attempts,omitempty"`
	// Worker is the worker that executed it (the last one, if it was lost and redelivered).
	Worker string `json:"worker,omitempty"`
	// Queue is the queue the task named (chains.Queuer) when it went through the task queue.
	Queue string `json:"queue,omitempty"`
	// Requires are the positions in the run's tasks of the tasks this one waits for.
	Requires []int `json:"requires,omitempty"`
	// Progress is what the task last reported of itself (ctx.Progress, ctx.Status).
	Progress *Progress `json:"progress,omitempty"`
	// Artifacts are the named outputs the task committed with its out (ctx.Artifact).
	Artifacts []Artifact `json:"artifacts,omitempty"`
	// LogNotStored says no log of this failed or cancelled task was stored (the store refused
	// it, or its attempt was cut short: a lost worker, a crash): answers then give no log_url,
	// which would point at nothing.
	LogNotStored bool `json:"log_not_stored,omitempty"`
	// LogEmpty says the task wrote no log, so none is stored (a task other than its run's
	// root that logged nothing; for a cached task, its log was not found): no log_url.
	LogEmpty bool `json:"log_empty,omitempty"`
}

// Artifact is one named output of a task, stored at <task key>/artifacts/<name>.
type Artifact struct {
	Name        string `json:"name"`
	Size        int64  `json:"size"`
	ContentType string `json:"content_type"`
	// Published is the stable store path it was also stored at (ctx.Publish), if any.
	Published string `json:"published,omitempty"`
}

// ArtifactsDir is the folder of a task's artifacts under its key.
const ArtifactsDir = "artifacts"

// Progress is a task's report of itself: done of total units (Total 0: unknown), a status line.
type Progress struct {
	Done     int64   `json:"done"`
	Total    int64   `json:"total"`
	Fraction float64 `json:"fraction"` // done/total, 0 when the total is unknown
	Status   string  `json:"status,omitempty"`
}

func progressOf(p *plugins.TaskProgress) *Progress {
	if p == nil {
		return nil
	}
	out := &Progress{Done: p.Done, Total: p.Total, Status: p.Status}
	if p.Total > 0 {
		out.Fraction = min(float64(p.Done)/float64(p.Total), 1)
	}
	return out
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
	// ParamsNotStored says the run has not stored the params object: it has not started yet
	// (or ended before it did), or could not write it (the run failed for it). Status answers
	// then give no params_url.
	ParamsNotStored bool `json:"params_not_stored,omitempty"`
	// MetricsNotStored says the metrics object could not be written (the store refused it while
	// it took the record): status answers then give no metrics_url, which would point at nothing.
	MetricsNotStored bool `json:"metrics_not_stored,omitempty"`
	// Trigger says how the run was started: api, cli, ui, schedule or backfill.
	Trigger string `json:"trigger,omitempty"`
	// Previous are the earlier runs of this key, newest first (at most MaxPrevious): the record
	// holds only the latest run, and the run history is rebuilt from records alone.
	Previous []PastRun `json:"previous,omitempty"`
}

// MaxPrevious bounds the earlier runs a record remembers.
const MaxPrevious = 20

// PastRun is what a record keeps of an earlier run of its key.
type PastRun struct {
	RunID       string     `json:"run_id"`
	Status      Status     `json:"status"`
	Trigger     string     `json:"trigger,omitempty"`
	Error       string     `json:"error,omitempty"`
	SubmittedAt time.Time  `json:"submitted_at"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	FinishedAt  *time.Time `json:"finished_at,omitempty"`
	CostUSD     float64    `json:"cost_usd,omitempty"`
	Tasks       TaskCounts `json:"tasks"`
}

// TaskCounts counts a run's tasks by status; Cached counts the DONE ones not run again.
type TaskCounts struct {
	Total          int `json:"total"`
	Pending        int `json:"pending,omitempty"`
	Running        int `json:"running,omitempty"`
	Done           int `json:"done,omitempty"`
	Failed         int `json:"failed,omitempty"`
	Cancelled      int `json:"cancelled,omitempty"`
	UpstreamFailed int `json:"upstream_failed,omitempty"`
	Cached         int `json:"cached,omitempty"`
}

// Counts counts the record's tasks by status.
func (r *Record) Counts() TaskCounts {
	c := TaskCounts{Total: len(r.Tasks)}
	for _, t := range r.Tasks {
		switch t.Status {
		case Pending:
			c.Pending++
		case Running:
			c.Running++
		case Done:
			c.Done++
			if t.Cached {
				c.Cached++
			}
		case Failed:
			c.Failed++
		case Cancelled:
			c.Cancelled++
		case UpstreamFailed:
			c.UpstreamFailed++
		}
	}
	return c
}

// Past summarizes the record as an earlier run. A run that never reached a final status (its
// server died) is remembered as FAILED, as status answers report it.
func (r *Record) Past() PastRun {
	p := PastRun{RunID: r.RunID, Status: r.Status, Trigger: r.Trigger, Error: r.Error, SubmittedAt: r.SubmittedAt,
		StartedAt: r.StartedAt, FinishedAt: r.FinishedAt, Tasks: r.Counts()}
	if r.Metrics != nil {
		p.CostUSD = r.Metrics.Summary.CostUSD
	}
	if !p.Status.Final() {
		p.Status, p.Error = Failed, interruptedError
	}
	return p
}

// Interrupted reports the record of a run whose server died before it finished, as a status
// answer should: FAILED with the cause, ended when its server was last heard of (lastSeen, if
// known), its unfinished tasks ended too (a task that was running FAILED, one that had not
// started CANCELLED), so nothing shows as running forever.
func (r *Record) Interrupted(lastSeen time.Time) {
	r.Status, r.Error = Failed, interruptedError
	if !lastSeen.IsZero() && r.FinishedAt == nil {
		r.FinishedAt = &lastSeen
	}
	tasks := make([]TaskState, len(r.Tasks)) // the caller's copy may share the array
	copy(tasks, r.Tasks)
	for i := range tasks {
		switch tasks[i].Status {
		case Running: // an attempt that ended (waiting for a retry) stored no log yet
			tasks[i].Status, tasks[i].Error, tasks[i].LogNotStored = Failed, "interrupted: the server running it stopped", true
		case Pending:
			tasks[i].Status, tasks[i].Error, tasks[i].LogNotStored = Cancelled, "not started: the run was interrupted", true
		}
	}
	r.Tasks = tasks
}

// HasLog reports whether t's log was stored: a task that finished an attempt committed it (if
// it wrote one: LogEmpty), and one whose out was there already (Cached) committed it when it
// ran (its log was looked for). A task that never started, or whose attempt a crash cut
// short, has none.
func (t *TaskState) HasLog() bool {
	if t.LogEmpty {
		return false
	}
	if t.Cached {
		return true
	}
	if t.LogNotStored {
		return false
	}
	n := len(t.Attempts)
	return n > 0 && t.Attempts[n-1].FinishedAt != nil && t.Status.Final()
}

// interruptedError is what a run whose server died before it finished is reported with.
const interruptedError = "run was interrupted: the server running it stopped before it finished (POST again to resume)"

func (r *Record) clone() Record {
	c := r.Header()
	c.Tasks = cloneTasks(r.Tasks)
	return c
}

func timePtr(t time.Time) *time.Time { return &t }

// Progress is what the run as a whole shows of its tasks' reports: the root task's, else that of
// the first running task that reported (nil when none did).
func (r *Record) Progress() *Progress {
	if len(r.Tasks) > 0 && r.Tasks[0].Progress != nil {
		return r.Tasks[0].Progress
	}
	for _, t := range r.Tasks {
		if t.Status == Running && t.Progress != nil {
			return t.Progress
		}
	}
	return nil
}

// MaxTaskPage is the most tasks one status answer lists (tasks_limit); the rest are a page away.
const MaxTaskPage = 1000

// DefaultTaskPage is how many tasks an answer lists unless tasks_limit asks for more: a POST's
// answer, and each poll of a big run's status, stays about 50 KB with its signed URLs
// (task_counts, failed_tasks and running_tasks tell the rest), where a page of 1,000 was half a
// megabyte to build, sign and encode on every read, and 4 MB of the server's peak memory in a
// fan-in of 5,000 leaves.
const DefaultTaskPage = 100

// MaxHighlights is the most failed and running tasks a paged status answer lists besides its
// page.
const MaxHighlights = 100

// TaskPage is a window on a run's tasks, what one status answer carries of them: the counts
// of all, the tasks from From on (at most a page), and, when the run has more tasks than the
// page shows, the first failed and running ones outside it. It is built without copying the
// rest, so an answer costs the same for a run of 50 tasks or of 50,000.
type TaskPage struct {
	From    int
	Total   int
	Counts  TaskCounts
	Tasks   []TaskState
	Failed  []IndexedTask // FAILED tasks outside the page (at most MaxHighlights)
	Running []IndexedTask // RUNNING tasks outside the page (at most MaxHighlights)
	// RootLogEmpty: the run's root (its first task, on this page or not) stores no log.
	RootLogEmpty bool
}

// IndexedTask is a task with its position in the run's tasks.
type IndexedTask struct {
	Index int
	TaskState
}

// Page is the window of r's tasks from from, at most limit of them (1 to MaxTaskPage).
func (r *Record) Page(from, limit int) TaskPage {
	limit = min(max(limit, 1), MaxTaskPage)
	n := len(r.Tasks)
	from = min(max(from, 0), n)
	end := min(from+limit, n)
	p := TaskPage{From: from, Total: n, Counts: r.Counts(), Tasks: cloneTasks(r.Tasks[from:end]), RootLogEmpty: n > 0 && r.Tasks[0].LogEmpty}
	if from == 0 && end == n {
		return p
	}
	for i, t := range r.Tasks {
		if i >= from && i < end {
			continue
		}
		switch {
		case t.Status == Failed && len(p.Failed) < MaxHighlights:
			p.Failed = append(p.Failed, IndexedTask{i, cloneTask(t)})
		case t.Status == Running && len(p.Running) < MaxHighlights:
			p.Running = append(p.Running, IndexedTask{i, cloneTask(t)})
		}
	}
	return p
}

// Header is the record without its tasks (the page carries those).
func (r *Record) Header() Record {
	h := *r
	h.Tasks = nil
	h.Previous = append([]PastRun(nil), r.Previous...)
	return h
}

func cloneTasks(ts []TaskState) []TaskState {
	out := make([]TaskState, len(ts))
	for i, t := range ts {
		out[i] = cloneTask(t)
	}
	return out
}

func cloneTask(t TaskState) TaskState {
	t.Attempts = append([]Attempt(nil), t.Attempts...)
	t.Artifacts = append([]Artifact(nil), t.Artifacts...)
	t.Requires = append([]int(nil), t.Requires...)
	return t
}

// decodeRecord decodes a stored record a task at a time. Decode would read the whole object
// into one buffer first, grown by doubling: a 50,000-task record is 15 MB of JSON, and each
// read of it (the first status read of a big run) made some 30 MB of garbage besides the
// record, which sixteen readers arriving at once saw as a jump of the server's memory.
func decodeRecord(dec *json.Decoder, rec *Record) error {
	if err := expectDelim(dec, '{'); err != nil {
		return err
	}
	var header bytes.Buffer // every member but the tasks, as an object
	header.WriteByte('{')
	var tasks []TaskState
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		name, _ := tok.(string)
		if name == "tasks" {
			if tok, err = dec.Token(); err != nil || tok == nil { // null: none
				if err != nil {
					return err
				}
				continue
			}
			if d, ok := tok.(json.Delim); !ok || d != '[' {
				return fmt.Errorf("the record's tasks are %v, not a list", tok)
			}
			for dec.More() {
				var t TaskState
				if err := dec.Decode(&t); err != nil {
					return err
				}
				tasks = append(tasks, t)
			}
			if err := expectDelim(dec, ']'); err != nil {
				return err
			}
			continue
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return err
		}
		if header.Len() > 1 {
			header.WriteByte(',')
		}
		k, _ := json.Marshal(name)
		header.Write(k)
		header.WriteByte(':')
		header.Write(v)
	}
	if err := expectDelim(dec, '}'); err != nil {
		return err
	}
	header.WriteByte('}')
	var r Record
	if err := json.Unmarshal(header.Bytes(), &r); err != nil {
		return err
	}
	r.Tasks = tasks
	*rec = r
	return nil
}

// expectDelim reads the next token, which must be d.
func expectDelim(dec *json.Decoder, d json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if got, ok := tok.(json.Delim); !ok || got != d {
		return fmt.Errorf("the record has %v where %v belongs", tok, d)
	}
	return nil
}
