package server

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"nectar/server/runs"
)

// ErrNoWorkers answers the workers endpoints of a server that dispatches tasks itself.
var ErrNoWorkers = errors.New("no workers")

// workersData is GET /api/workers: every worker the registry holds, and how many are in
// each state.
type workersData struct {
	Workers []runs.WorkerInfo `json:"workers"`
	States  map[string]int    `json:"states"`
}

func (s *Server) listWorkers(c echo.Context) error {
	if s.queue == nil {
		return s.noWorkers()
	}
	if err := s.queueReachable(); err != nil {
		return err
	}
	ws, err := s.runs.Workers(c.Request().Context())
	if err != nil {
		return fmt.Errorf("listing the workers: %w", err) // logged with the request id
	}
	d := workersData{Workers: ws, States: map[string]int{}}
	for _, w := range ws {
		d.States[w.State]++
	}
	noun := "workers"
	if len(ws) == 1 {
		noun = "worker"
	}
	return respond(c, http.StatusOK, fmt.Sprintf("%d %s", len(ws), noun), d)
}

// drainWorker asks a worker to take no new task and finish those in hand (as SIGTERM does,
// but the process stays, listed drained).
func (s *Server) drainWorker(c echo.Context) error {
	if s.queue == nil {
		return s.noWorkers()
	}
	if err := s.queueReachable(); err != nil { // as the list says it: 503, not a bare 500
		return err
	}
	id := c.Param("id")
	w, err := s.runs.DrainWorker(c.Request().Context(), id)
	if err != nil {
		return err
	}
	s.log.Info("worker drain asked", "worker", id, "by", c.RealIP())
	return respond(c, http.StatusAccepted, "worker "+id+" is "+w.State, w)
}

func (s *Server) noWorkers() error {
	return newError(ErrNoWorkers, "this server dispatches tasks itself (NECTAR_DISPATCH=direct): unset it, and workers take the tasks")
}

// ErrQueueUnreachable is the task queue's NATS server out of reach (reconnecting): a run
// submitted now would wait for it, unanswered, so the API says so at once (503, Retry-After).
var ErrQueueUnreachable = errors.New("the task queue (NATS) is unreachable; try again")

// queueReachable is nil unless this server's task queue is external and its connection down.
func (s *Server) queueReachable() error {
	if s.queue == nil || s.queue.Conn().IsConnected() {
		return nil
	}
	return fmt.Errorf("%w: its connection is %s", ErrQueueUnreachable, strings.ToLower(s.queue.Conn().Status().String()))
}
