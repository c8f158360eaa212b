package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/sync/errgroup"

	"nectar/chains/cron"
	"nectar/chains/params"
	"nectar/server/catalog"
	"nectar/server/history"
	"nectar/server/runs"
	"nectar/server/schedules"
)

// nextFires is how many fire times a schedule shows.
const nextFires = 5

// scheduleInfo is a schedule as the API shows it: its declaration, state and last run's status.
type scheduleInfo struct {
	schedules.Info
	LastStatus *runs.Status `json:"last_status"`
	LastRunID  string       `json:"last_run_id,omitempty"`
	LastURL    string       `json:"last_status_url,omitempty"`
	URL        string       `json:"url"`
}

// fireInterval starts the run of one interval of a schedule: the interval start goes into the
// schedule's time parameter, the other parameters take their defaults.
func (s *Server) fireInterval(ctx context.Context, p *schedules.Plan, iv schedules.Interval, trigger string, force bool) (string, error) {
	canon, err := p.Task.Parse(url.Values{p.Param: {params.FormatTime(iv.Start)}})
	if err != nil {
		return "", fmt.Errorf("parameters of interval %s: %w", iv.Start, err)
	}
	key := runs.Key(p.Task.Type, p.Task.Chain, p.Task.Name, canon)
	if trigger == history.TriggerSchedule {
		// A tick that another server fired already is not fired again, even when its run failed
		// and left no out: any run of the key submitted since the interval ended is this tick's.
		rec, err := s.runs.Header(ctx, key)
		switch {
		case err == nil && !rec.SubmittedAt.IsZero() && !rec.SubmittedAt.Before(iv.End):
			return key, nil
		case err != nil && !errors.Is(err, runs.ErrUnknownKey):
			return key, err
		}
	}
	_, _, _, err = s.launch(ctx, p.Task, canon, force, trigger)
	return key, err
}

func (s *Server) findSchedule(c echo.Context) (*schedules.Plan, error) {
	t, err := s.findTask(c.Param("type"), c.Param("chain"), c.Param("task"))
	if err != nil {
		return nil, err
	}
	p, ok := s.sched.Plan(t.Type, t.Chain, t.Name)
	if !ok {
		return nil, newError(ErrNoSchedule, fmt.Sprintf("%s/%s/%s declares no schedule (see /api/schedules)", t.Type, t.Chain, t.Name))
	}
	return p, nil
}

func (s *Server) describeSchedule(ctx context.Context, p *schedules.Plan) (scheduleInfo, error) {
	in, err := s.sched.Describe(ctx, p, nextFires)
	if err != nil {
		return scheduleInfo{}, err
	}
	out := scheduleInfo{Info: in, URL: "/api/schedules/" + p.Path()}
	if in.LastKey != "" {
		rec, err := s.runs.Header(ctx, in.LastKey)
		switch {
		case err == nil:
			st := rec.Status
			out.LastStatus, out.LastRunID = &st, rec.RunID
		case !errors.Is(err, runs.ErrUnknownKey):
			return out, err
		}
		out.LastURL = s.statusURL(in.LastKey)
	}
	return out, nil
}

// Schedules describes every schedule (the API and the UI), describeParallelism at a time: each
// reads its state and its last run's record, a round trip each on S3, and a page of 200
// schedules read one after the other would take seconds.
func (s *Server) Schedules(ctx context.Context) ([]scheduleInfo, error) {
	plans := s.sched.Plans()
	out := make([]scheduleInfo, len(plans))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(describeParallelism)
	for i, p := range plans {
		g.Go(func() (err error) {
			out[i], err = s.describeSchedule(gctx, p)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// describeParallelism bounds the schedules described at once.
const describeParallelism = 16

func (s *Server) listSchedules(c echo.Context) error {
	list, err := s.Schedules(c.Request().Context())
	if err != nil {
		return err
	}
	return respond(c, http.StatusOK, fmt.Sprintf("%d schedules", len(list)),
		map[string]any{"schedules": list, "firing": s.sched.Firing()})
}

func (s *Server) getSchedule(c echo.Context) error {
	p, err := s.findSchedule(c)
	if err != nil {
		return err
	}
	in, err := s.describeSchedule(c.Request().Context(), p)
	if err != nil {
		return err
	}
	return respond(c, http.StatusOK, p.Path(), in)
}

func (s *Server) pauseSchedule(pause bool) echo.HandlerFunc {
	return func(c echo.Context) error {
		p, err := s.findSchedule(c)
		if err != nil {
			return err
		}
		ctx := c.Request().Context()
		verb := "resumed"
		if pause {
			verb = "paused"
			err = s.sched.Pause(ctx, p, c.RealIP())
		} else {
			err = s.sched.Resume(ctx, p)
		}
		if err != nil {
			return fmt.Errorf("recording that %s is %s: %w", p.Path(), verb, err)
		}
		s.log.Info("schedule "+verb, "schedule", p.Path(), "by", c.RealIP())
		in, err := s.describeSchedule(ctx, p)
		if err != nil {
			return err
		}
		return respond(c, http.StatusOK, p.Path()+" "+verb, in)
	}
}

// backfillRun is one interval of a backfill, as its answer lists it.
type backfillRun struct {
	schedules.Interval
	Key       string `json:"key"`
	StatusURL string `json:"status_url"`
}

// backfill answers POST /api/schedules/<type>/<chain>/<Task>/backfill?from=&to=: it lists the
// intervals and their keys at once (keys are known before the runs start); startBackfill then
// starts them oldest first in the background.
func (s *Server) backfill(c echo.Context) error {
	p, err := s.findSchedule(c)
	if err != nil {
		return err
	}
	q, err := catalog.ParseRawQuery(c.Request().URL.RawQuery)
	if err != nil {
		return err
	}
	accepted := time.Now().UTC()
	list, seen, err := s.startBackfill(c.Request().Context(), p, q)
	if err != nil {
		return err
	}
	// accepted_at lets a client tell the runs this backfill starts from earlier runs of the
	// same keys (their records have an earlier submitted_at); backfill_stop, whether it was
	// stopped (the schedule's backfill_stop differs).
	return respond(c, http.StatusAccepted, fmt.Sprintf("backfilling %s of %s", count(len(list), "interval"), p.Path()),
		map[string]any{"schedule": p.Path(), "runs": list, "accepted_at": accepted, "backfill_stop": seen})
}

// startBackfill checks a backfill's from, to and force (the API's query, the UI's form), lists
// its intervals with their keys, and starts them in the background, waiting whenever the run
// queue is full.
func (s *Server) startBackfill(ctx context.Context, p *schedules.Plan, q url.Values) (list []backfillRun, seen string, err error) {
	for name := range q {
		if name != "from" && name != "to" && name != "force" {
			return nil, "", &params.Error{Param: name, Reason: "is not a backfill parameter (it takes: from, to, force)"}
		}
	}
	// A date is midnight in the schedule's time zone: from=2026-03-01 on a Paris schedule
	// starts with the interval of 1 March in Paris.
	bound := func(name string) (time.Time, error) {
		v, err := params.QueryValue(q, name, "", true)
		if err != nil {
			return time.Time{}, err
		}
		if strings.TrimSpace(v) == "" { // (ParseStart takes "" for the zero time: year 1)
			return time.Time{}, &params.Error{Param: name, Value: v, Reason: "is empty: want a date (2006-01-02, in the schedule's time zone) or an RFC 3339 time"}
		}
		t, err := cron.ParseStart(v, p.Expr.Location())
		if err != nil {
			return t, &params.Error{Param: name, Value: v, Reason: "is not a date (2006-01-02, in the schedule's time zone) or an RFC 3339 time"}
		}
		return t, nil
	}
	from, err := bound("from")
	if err != nil {
		return nil, "", err
	}
	to, err := bound("to")
	if err != nil {
		return nil, "", err
	}
	force, err := params.QueryBool(q, "force", "false", false)
	if err != nil {
		return nil, "", err
	}
	if to.Before(from) {
		return nil, "", &params.Error{Param: "to", Value: q.Get("to"), Reason: "is before from"}
	}
	ivs, err := s.sched.Backfill(p, from, to)
	if err != nil {
		return nil, "", &params.Error{Param: "to", Value: q.Get("to"), Reason: err.Error()}
	}
	if len(ivs) == 0 {
		return nil, "", &params.Error{Param: "from", Value: q.Get("from"), Reason: fmt.Sprintf(
			"no complete interval of %q starts between from and to (an interval is complete when the next fire time has passed)", p.Expr)}
	}
	list = make([]backfillRun, len(ivs))
	for i, iv := range ivs {
		canon, err := p.Task.Parse(url.Values{p.Param: {params.FormatTime(iv.Start)}})
		if err != nil {
			return nil, "", err
		}
		key := runs.Key(p.Task.Type, p.Task.Chain, p.Task.Name, canon)
		list[i] = backfillRun{Interval: iv, Key: key, StatusURL: s.statusURL(key)}
	}
	// The stop it was accepted after: a later one stops it (on any server, whatever its clock).
	if seen, err = s.sched.BackfillStopSeen(ctx, p); err != nil {
		return nil, "", fmt.Errorf("reading whether the backfills of %s were stopped: %w", p.Path(), err)
	}
	keys := make([]string, len(list))
	for i, r := range list {
		keys[i] = r.Key
	}
	s.backfills.add(keys)
	if !s.background(func() { s.runBackfill(p, ivs, keys, force, seen) }) {
		for _, k := range keys {
			s.backfills.done(k)
		}
		return nil, "", runs.ErrDraining
	}
	s.log.Info("backfill", "schedule", p.Path(), "intervals", len(ivs), "from", ivs[0].Start, "to", ivs[len(ivs)-1].Start)
	return list, seen, nil
}

// runBackfill starts the intervals in order; a full queue makes it wait, not drop intervals. A
// stop since the one it saw when accepted (stopBackfills, on any server) ends it: the
// intervals not started yet are not.
func (s *Server) runBackfill(p *schedules.Plan, ivs []schedules.Interval, keys []string, force bool, seen string) {
	ctx := s.schedCtx
	stopped := s.backfillStopper(ctx, p, seen)
	next := 0      // the first interval not started
	defer func() { // an interval not started (stopped, the server stops, an error) no longer waits
		for _, k := range keys[next:] {
			s.backfills.done(k)
		}
	}()
	for ; next < len(ivs); next++ {
		iv := ivs[next]
		for {
			if stopped() {
				s.log.Info("backfill stopped", "schedule", p.Path(), "not_started", len(ivs)-next, "next_interval", iv.Start)
				return
			}
			_, err := s.fireInterval(ctx, p, iv, history.TriggerBackfill, force)
			if err == nil {
				break
			}
			if !errors.Is(err, runs.ErrQueueFull) {
				s.log.Error("backfill: starting an interval; the rest of this backfill is not started (POST it again: done intervals are not run again)",
					"schedule", p.Path(), "interval_start", iv.Start, "err", err)
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
		s.backfills.done(keys[next]) // submitted (or done): its status is the run's
	}
}

// backfillStopCheck is how often a running backfill asks the store whether it was stopped
// (a stop written by this server makes its backfills ask at once).
const backfillStopCheck = 500 * time.Millisecond

// backfillStopper says whether p's backfill that saw the stop seen when accepted has been
// stopped since: it reads the store at most every backfillStopCheck, and at once after a stop
// by this server. A store that cannot be read stops nothing.
func (s *Server) backfillStopper(ctx context.Context, p *schedules.Plan, seen string) func() bool {
	var checked time.Time
	localStops := s.backfills.stops.Load()
	return func() bool {
		if n := s.backfills.stops.Load(); time.Since(checked) < backfillStopCheck && n == localStops {
			return false
		}
		checked, localStops = time.Now(), s.backfills.stops.Load()
		stopped, err := s.sched.BackfillStopped(ctx, p, seen)
		if err != nil {
			s.log.Warn("backfill: reading whether it was stopped; it goes on", "schedule", p.Path(), "err", err)
		}
		return stopped
	}
}

// stopBackfills answers DELETE /api/schedules/<type>/<chain>/<Task>/backfill: the schedule's
// backfills accepted until now, on every server sharing the store, start no more intervals. The
// runs already started go on (a status URL's DELETE cancels one).
func (s *Server) stopBackfills(c echo.Context) error {
	p, err := s.findSchedule(c)
	if err != nil {
		return err
	}
	pending, err := s.stopBackfillsOf(c.Request().Context(), p, c.RealIP())
	if err != nil {
		return err
	}
	return respond(c, http.StatusOK, fmt.Sprintf("backfills of %s stopped on every server: their intervals not started yet will not start (%s here; one being started at this moment may); runs already started go on", p.Path(), count(pending, "interval")),
		map[string]any{"schedule": p.Path(), "not_started": pending})
}

// stopBackfillsOf stops p's backfills (stopBackfills, and the web UI's button) and returns how
// many of their intervals this server had not started.
func (s *Server) stopBackfillsOf(ctx context.Context, p *schedules.Plan, by string) (int, error) {
	pending := s.backfillPending(p)
	if _, err := s.sched.StopBackfills(ctx, p, by); err != nil {
		return 0, fmt.Errorf("recording that the backfills of %s are stopped: %w", p.Path(), err)
	}
	s.backfills.stops.Add(1) // this server's backfills look at once
	s.log.Info("backfills stopped", "schedule", p.Path(), "by", by, "not_started_here", pending)
	return pending, nil
}

// backfillPending is how many intervals of p's backfills this server has not started yet.
func (s *Server) backfillPending(p *schedules.Plan) int {
	return s.backfills.count("chains/" + p.Path() + "/")
}
