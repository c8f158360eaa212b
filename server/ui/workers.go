package ui

import (
	"errors"
	"net/http"
	"net/url"

	"github.com/labstack/echo/v4"

	"nectar/server/queue"
	"nectar/server/runs"
)

// ErrNoQueue is the Backend's answer when this server dispatches tasks itself
// (NECTAR_DISPATCH=direct): there are no workers to show.
var ErrNoQueue = errors.New("this server runs tasks itself (NECTAR_DISPATCH=direct): there are no workers")

type workersView struct {
	Workers []runs.WorkerInfo
	Queues  []queue.Depth
	States  []stateCount
	// Error is what an action (a drain) met; ReadError why the list could not be read.
	Error, ReadError string
	Notice           string
	// Direct: this server dispatches tasks itself; the page neither lists nor polls.
	Direct bool
}

type stateCount struct {
	State string
	N     int
}

// workerStateOrder lists states in the order an operator reads them: trouble first.
var workerStateOrder = []string{runs.WorkerLost, runs.WorkerRunning, runs.WorkerDraining, runs.WorkerDrained, runs.WorkerStopped}

func (u *UI) workersPage(c echo.Context) error {
	var v workersView
	if id := c.QueryParam("drained"); id != "" { // the sentence is ours: a link cannot put words here
		v.Notice = "Drain asked of worker " + id + ": it finishes the tasks in hand and takes no new one."
	}
	return u.renderWorkers(c, http.StatusOK, v, false)
}

// workersTable is the part of the page htmx swaps every 2 s.
func (u *UI) workersTable(c echo.Context) error {
	return u.renderWorkers(c, http.StatusOK, workersView{}, true)
}

func (u *UI) renderWorkers(c echo.Context, code int, v workersView, fragment bool) error {
	ws, depths, err := u.b.Workers(c.Request().Context())
	switch {
	case errors.Is(err, ErrNoQueue):
		v.ReadError, v.Direct = err.Error(), true
	case err != nil:
		u.log.Warn("ui: workers page", "err", err)
		v.ReadError = "The workers cannot be read now: " + workerReason(err)
		code = http.StatusServiceUnavailable
	}
	v.Workers, v.Queues = ws, depths
	count := map[string]int{}
	for _, w := range ws {
		count[w.State]++
	}
	for _, s := range workerStateOrder {
		if count[s] > 0 {
			v.States = append(v.States, stateCount{s, count[s]})
		}
	}
	if fragment {
		return u.renderFragment(c, "workers", "workers-table", v)
	}
	return u.render(c, code, "workers", "Workers", "workers", v)
}

// drainWorker asks a worker to finish its tasks and take no new one, then shows the page.
func (u *UI) drainWorker(c echo.Context) error {
	id := c.Param("id")
	w, err := u.b.DrainWorker(c.Request().Context(), id)
	if err != nil {
		u.log.Info("ui: drain", "worker", id, "err", err)
		return u.renderWorkers(c, drainStatus(err), workersView{Error: "Not drained: " + workerReason(err)}, false)
	}
	u.log.Info("worker drain asked", "worker", w.ID, "state", w.State, "by", "web UI from "+c.RealIP())
	return c.Redirect(http.StatusSeeOther, "/workers?"+url.Values{"drained": {w.ID}}.Encode())
}

// drainStatus is the HTTP status of a failed drain, as the API answers it.
func drainStatus(err error) int {
	switch {
	case errors.Is(err, runs.ErrWorkerLost):
		return http.StatusConflict
	case errors.Is(err, queue.ErrNoWorker), errors.Is(err, ErrNoQueue):
		return http.StatusNotFound
	}
	return http.StatusServiceUnavailable
}

// workerReason says why a worker action failed: the run manager's own sentences (a lost or
// unknown worker), or that the queue did not answer, never a connection's internals.
func workerReason(err error) string {
	if errors.Is(err, runs.ErrWorkerLost) || errors.Is(err, queue.ErrNoWorker) || errors.Is(err, ErrNoQueue) {
		return err.Error()
	}
	return "the task queue (NATS) did not answer; try again in a moment."
}
