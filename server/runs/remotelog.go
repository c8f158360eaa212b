package runs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
)

// Live logs of tasks running in another process. A task's log is a file on its worker's disk
// until the task ends and the log is committed; an API server elsewhere asks that worker (its
// id travels in the live log URL) for the bytes after an offset, and serves them as if local.

// workerLogSubject is where worker id answers for the live logs of its tasks.
func workerLogSubject(id string) string { return "nectar.worker." + id + ".log" }

// validWorkerID reports whether id may be a worker id (<host>-<pid>-<random>): 1 to 200 of
// [A-Za-z0-9._-], not starting with a dot. A URL's worker parameter is checked before it
// becomes part of a subject. (A loop, not the regexp it was: `{0,199}` compiled to 200 copies
// of its class, 60 KB of every server's heap.)
func validWorkerID(id string) bool {
	if id == "" || len(id) > 200 || id[0] == '.' {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

type logRequest struct {
	Task   string `json:"task"`
	Offset int64  `json:"offset"`
}

// LogChunk is what a worker holds of a task's live log after an offset. Live is false when
// the task's log is not (any more) on that worker: it is then complete in the store.
type LogChunk struct {
	Live     bool   `json:"live"`
	Data     []byte `json:"data,omitempty"`
	Complete bool   `json:"complete,omitempty"` // the task ended and Data reaches the log's end
}

// maxLogChunk bounds one answer: a long log comes in several.
const maxLogChunk = 256 << 10

// remoteLogWait is how long an API server waits for a worker's answer.
const remoteLogWait = 2 * time.Second

// readLive reads what this process holds of task's live log after offset.
func (m *Manager) readLive(task string, offset int64) LogChunk {
	l, ok := m.Live(task)
	if !ok {
		return LogChunk{}
	}
	done := false
	select {
	case <-l.Done:
		done = true
	default:
	}
	f, err := os.Open(l.Path)
	if err != nil { // not created yet (the task is starting), or committed this instant
		return LogChunk{Live: !done}
	}
	defer f.Close()
	buf := make([]byte, maxLogChunk)
	n, _ := f.ReadAt(buf, offset) // io.EOF: what there is
	return LogChunk{Live: true, Data: buf[:n], Complete: done && n < maxLogChunk}
}

// onLogRequest answers an API server asking for a live log of this worker's process.
func (w *Worker) onLogRequest(msg *nats.Msg) {
	var req logRequest
	if json.Unmarshal(msg.Data, &req) != nil || req.Offset < 0 {
		return
	}
	b, err := json.Marshal(w.m.readLive(req.Task, req.Offset))
	if err == nil {
		msg.Respond(b)
	}
}

// ErrBadWorkerID is a worker id that cannot be one.
var ErrBadWorkerID = errors.New("not a worker id")

// RemoteLog asks worker for task's live log after offset. A worker that is gone, or no longer
// runs the task, answers Live false: the log is then the store's.
func (m *Manager) RemoteLog(ctx context.Context, worker, task string, offset int64) (LogChunk, error) {
	if m.cfg.Queue == nil {
		return LogChunk{}, nil
	}
	if !validWorkerID(worker) {
		return LogChunk{}, fmt.Errorf("worker %q: %w", worker, ErrBadWorkerID)
	}
	req, err := json.Marshal(logRequest{Task: task, Offset: offset})
	if err != nil {
		return LogChunk{}, err
	}
	rctx, cancel := context.WithTimeout(ctx, remoteLogWait)
	defer cancel()
	msg, err := m.cfg.Queue.Conn().RequestWithContext(rctx, workerLogSubject(worker), req)
	if errors.Is(err, nats.ErrNoResponders) {
		return LogChunk{}, nil // that worker is gone: its tasks' logs are in the store, or lost with it
	}
	if err != nil {
		return LogChunk{}, fmt.Errorf("asking worker %s for the log of %s: %w", worker, task, err)
	}
	var c LogChunk
	if err := json.Unmarshal(msg.Data, &c); err != nil {
		return LogChunk{}, fmt.Errorf("worker %s's answer about the log of %s: %w", worker, task, err)
	}
	return c, nil
}
