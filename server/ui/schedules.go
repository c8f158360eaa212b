package ui

import (
	"errors"
	"net/http"
	"net/url"

	"github.com/labstack/echo/v4"

	"nectar/chains/params"
)

// ErrNoSchedule is the Backend's answer for a task that declares no schedule.
var ErrNoSchedule = errors.New("no such schedule")

type schedulesView struct {
	Rows   []ScheduleRow
	Firing bool
	Error  string
	// Path and From, To refill the backfill form that failed.
	Path, From, To string
}

func (u *UI) schedulesPage(c echo.Context) error {
	return u.renderSchedules(c, http.StatusOK, schedulesView{})
}

func (u *UI) renderSchedules(c echo.Context, code int, v schedulesView) error {
	rows, firing, err := u.b.Schedules(c.Request().Context())
	if err != nil {
		u.log.Error("schedules page", "err", err)
		return u.renderError(c, http.StatusServiceUnavailable, "the schedules' state cannot be read from the store now; try again")
	}
	v.Rows, v.Firing = rows, firing
	return u.render(c, code, "schedules", "Schedules", "schedules", v)
}

func (u *UI) pauseSchedule(pause bool) echo.HandlerFunc {
	return func(c echo.Context) error {
		err := u.b.PauseSchedule(c.Request().Context(), c.Param("type"), c.Param("chain"), c.Param("task"), pause, "web UI from "+c.RealIP())
		if err != nil {
			return u.scheduleError(c, err, schedulesView{})
		}
		return c.Redirect(http.StatusSeeOther, "/schedules")
	}
}

// backfill starts the intervals of the form's dates and shows their runs.
func (u *UI) backfill(c echo.Context) error {
	q := url.Values{"from": {c.FormValue("from")}, "to": {c.FormValue("to")}}
	if c.FormValue("force") == "on" {
		q.Set("force", "true")
	}
	path := c.Param("type") + "/" + c.Param("chain") + "/" + c.Param("task")
	if _, err := u.b.Backfill(c.Request().Context(), c.Param("type"), c.Param("chain"), c.Param("task"), q); err != nil {
		return u.scheduleError(c, err, schedulesView{Path: path, From: q.Get("from"), To: q.Get("to")})
	}
	return c.Redirect(http.StatusSeeOther, "/?"+url.Values{"task": {c.Param("task")}, "trigger": {"backfill"}}.Encode())
}

// stopBackfills stops the schedule's backfills (their runs already started go on).
func (u *UI) stopBackfills(c echo.Context) error {
	err := u.b.StopBackfills(c.Request().Context(), c.Param("type"), c.Param("chain"), c.Param("task"), "web UI from "+c.RealIP())
	if err != nil {
		return u.scheduleError(c, err, schedulesView{})
	}
	return c.Redirect(http.StatusSeeOther, "/schedules")
}

// scheduleError shows why a schedule action failed: a bad date as the API words it, anything
// else (the store, the queue) without internals.
func (u *UI) scheduleError(c echo.Context, err error, v schedulesView) error {
	var pe *params.Error
	switch {
	case errors.As(err, &pe):
		v.Error = err.Error()
		return u.renderSchedules(c, http.StatusBadRequest, v)
	case errors.Is(err, ErrNoSchedule):
		return u.renderError(c, http.StatusNotFound, err.Error())
	}
	u.log.Warn("ui: schedule action", "path", c.Request().URL.Path, "err", err)
	v.Error = "That did not work: " + publicReason(err)
	return u.renderSchedules(c, http.StatusServiceUnavailable, v)
}
