package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"
)

// scheduleRow is a schedule as GET /api/schedules answers it.
type scheduleRow struct {
	Type         string      `json:"type"`
	Chain        string      `json:"chain"`
	Task         string      `json:"task"`
	Cron         string      `json:"cron"`
	TimeZone     string      `json:"time_zone"`
	CatchUp      bool        `json:"catch_up"`
	NextFires    []time.Time `json:"next_fires"`
	Paused       bool        `json:"paused"`
	LastInterval *time.Time  `json:"last_interval"`
	LastStatus   *string     `json:"last_status"`
	LastKey      string      `json:"last_key"`
}

// schedules lists the schedules, or pauses or resumes one.
func schedulesCmd(ctx context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	o, err := parseClientArgs(args, getenv, "json")
	if err != nil {
		return err
	}
	c := newClient(o)
	if len(o.args) > 0 {
		verb := o.args[0]
		if (verb != "pause" && verb != "resume") || len(o.args) != 2 || strings.Count(o.args[1], "/") != 2 {
			return usageError("usage: nectar schedules [--json] | nectar schedules pause|resume <type>/<chain>/<Task>")
		}
		env, _, err := c.call(ctx, http.MethodPost, "/api/schedules/"+o.args[1]+"/"+verb, nil)
		if err != nil {
			return err
		}
		if o.json {
			fmt.Fprintln(stdout, string(env.Data))
		} else {
			fmt.Fprintln(stdout, env.Message)
		}
		return nil
	}
	env, printed, err := c.listing(ctx, "/api/schedules", stdout)
	if err != nil || printed {
		return err
	}
	var data struct {
		Schedules []scheduleRow `json:"schedules"`
		Firing    bool          `json:"firing"`
	}
	json.Unmarshal(env.Data, &data)
	w := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SCHEDULE\tCRON\tZONE\tNEXT\tLAST INTERVAL\tLAST STATUS\tPAUSED")
	for _, s := range data.Schedules {
		next, last, lastStatus := "-", "-", "-"
		if len(s.NextFires) > 0 {
			next = s.NextFires[0].In(s.location()).Format("2006-01-02 15:04:05 MST")
		}
		if s.LastInterval != nil {
			last = s.LastInterval.In(s.location()).Format("2006-01-02 15:04:05 MST")
		}
		if s.LastStatus != nil {
			lastStatus = *s.LastStatus
		}
		fmt.Fprintf(w, "%s/%s/%s\t%s\t%s\t%s\t%s\t%s\t%v\n", s.Type, s.Chain, s.Task, s.Cron, s.TimeZone, next, last, lastStatus, s.Paused)
	}
	w.Flush()
	if !data.Firing {
		fmt.Fprintln(stdout, "this server fires no schedule (NECTAR_SCHEDULES=off); others sharing its store may")
	}
	return nil
}

// location is the schedule's time zone (UTC if this machine does not know it).
func (s scheduleRow) location() *time.Location {
	if loc, err := time.LoadLocation(s.TimeZone); err == nil {
		return loc
	}
	return time.UTC
}

// backfill runs every complete interval of a schedule within --from and --to; --wait follows
// them to the end (exit 1 when any failed).
func backfill(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	o, err := parseClientArgs(args, getenv, "from", "to", "force", "wait", "json", "stop")
	if err != nil {
		return err
	}
	if o.stop {
		if len(o.args) != 1 || strings.Count(o.args[0], "/") != 2 || o.from != "" || o.to != "" || o.wait || o.force {
			return usageError("usage: nectar backfill <type>/<chain>/<Task> --stop [--json] (stops its backfills on every server; it takes no dates, --wait or --force)")
		}
		env, _, err := newClient(o).call(ctx, http.MethodDelete, "/api/schedules/"+o.args[0]+"/backfill", nil)
		if err != nil {
			return err
		}
		if o.json {
			fmt.Fprintln(stdout, string(env.Data))
			return nil
		}
		fmt.Fprintln(stdout, env.Message)
		return nil
	}
	if len(o.args) != 1 || strings.Count(o.args[0], "/") != 2 || o.from == "" || o.to == "" {
		return usageError("usage: nectar backfill <type>/<chain>/<Task> --from DATE --to DATE [--force] [--wait] [--json] (dates 2006-01-02 in the schedule's zone, or RFC 3339)")
	}
	q := url.Values{"from": {o.from}, "to": {o.to}}
	if o.force {
		q.Set("force", "true")
	}
	c := newClient(o)
	env, _, err := c.call(ctx, http.MethodPost, "/api/schedules/"+o.args[0]+"/backfill?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	var data struct {
		Runs []struct {
			Start     time.Time `json:"start"`
			Key       string    `json:"key"`
			StatusURL string    `json:"status_url"`
		} `json:"runs"`
		AcceptedAt   time.Time `json:"accepted_at"`
		BackfillStop string    `json:"backfill_stop"` // the stop it was accepted after
	}
	json.Unmarshal(env.Data, &data)
	if !o.wait {
		if o.json {
			fmt.Fprintln(stdout, string(env.Data))
			return nil
		}
		fmt.Fprintln(stdout, env.Message)
		w := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(w, "INTERVAL START\tKEY")
		for _, r := range data.Runs {
			fmt.Fprintf(w, "%s\t%s\n", r.Start.Format(time.RFC3339), r.Key)
		}
		return w.Flush()
	}
	fmt.Fprintln(stderr, env.Message)
	failed := 0
	var results []runStatus
	stops := &backfillStopWatch{schedule: o.args[0], seen: data.BackfillStop}
	for i, r := range data.Runs {
		st, err := c.awaitInterval(ctx, stops, r.Key, r.StatusURL, data.AcceptedAt, o.force)
		if err != nil {
			return err
		}
		results = append(results, st)
		if deref(st.JobStatus) != "DONE" {
			failed++
		}
		if !o.json {
			status := deref(st.JobStatus)
			if st.JobStatus == nil {
				status = "NOT_STARTED" // its backfill was stopped first
			}
			line := fmt.Sprintf("%d/%d %s %s %s", i+1, len(data.Runs), r.Start.Format(time.RFC3339), status, r.Key)
			if st.Error != nil {
				line += ": " + *st.Error
			}
			fmt.Fprintln(stdout, line)
		}
	}
	if o.json {
		printJSON(stdout, results)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d intervals did not finish DONE", failed, len(data.Runs)) // exit status 1
	}
	return nil
}

// awaitInterval polls one backfilled interval until the run the backfill started for it ends.
// Until the backfill reaches it, its key is unknown (404) or shows an earlier run; a DONE key
// counts at once unless forced (a backfill does not run it again). A status URL that expires
// during a long backfill is renewed through the run history. A backfill stopped since it was
// accepted (the schedule's backfill_stop differs from seen) leaves the interval not started,
// once the stop has had time to reach the server feeding it.
func (c *client) awaitInterval(ctx context.Context, stops *backfillStopWatch, key, statusURL string, accepted time.Time, force bool) (runStatus, error) {
	for {
		env, code, err := c.call(ctx, http.MethodGet, statusURL, nil)
		started := false
		switch {
		case code == http.StatusNotFound: // not started yet, or never: its backfill was stopped
		case code == http.StatusForbidden:
			st, ferr := c.findRun(ctx, key)
			if ferr != nil {
				return runStatus{}, fmt.Errorf("the status URL of %s expired and the history has no run of it yet: %w", key, ferr)
			}
			statusURL = st.StatusURL
			continue
		case err != nil:
			return runStatus{}, err
		default:
			var st runStatus
			json.Unmarshal(env.Data, &st)
			s := deref(st.JobStatus)
			final := s == "DONE" || s == "FAILED" || s == "CANCELLED"
			current := st.SubmittedAt != nil && !st.SubmittedAt.Before(accepted)
			if final && (current || (s == "DONE" && !force)) {
				return st, nil
			}
			started = current
		}
		if at := stops.over(ctx, c); !started && at != nil {
			why := "not started: the backfill was stopped at " + at.Format(time.RFC3339)
			return runStatus{Key: key, StatusURL: statusURL, Error: &why}, nil
		}
		select {
		case <-ctx.Done():
			return runStatus{}, &exitError{2, errors.New("interrupted; the backfill goes on on the server")}
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// backfillStopWatch follows whether a backfill (accepted after the stop seen) was stopped.
type backfillStopWatch struct {
	schedule, seen string
	checked, noted time.Time  // last asked; when the stop was first noticed
	at             *time.Time // when it was stopped
}

// stopGrace is how long after noticing a stop the intervals still not started count as never
// started: one being started as it stopped may still start, and a server feeding it from
// another host sees the stop within half a second.
const stopGrace = 2 * time.Second

// over is when the backfill was stopped, once no more of its intervals can start (nil until
// then). It asks the server at most every stopGrace.
func (w *backfillStopWatch) over(ctx context.Context, c *client) *time.Time {
	if w.at == nil && time.Since(w.checked) >= stopGrace {
		w.checked = time.Now()
		if id, at := c.backfillStop(ctx, w.schedule); id != w.seen && at != nil {
			w.at, w.noted = at, time.Now()
		}
	}
	if w.at != nil && time.Since(w.noted) >= stopGrace {
		return w.at
	}
	return nil
}

// backfillStop is the ID of the schedule's latest backfill stop and when it was ("" and nil:
// never, or the server cannot say now).
func (c *client) backfillStop(ctx context.Context, schedule string) (string, *time.Time) {
	env, _, err := c.call(ctx, http.MethodGet, "/api/schedules/"+schedule, nil)
	if err != nil {
		return "", nil
	}
	var in struct {
		ID        string     `json:"backfill_stop"`
		StoppedAt *time.Time `json:"backfills_stopped_at"`
	}
	json.Unmarshal(env.Data, &in)
	return in.ID, in.StoppedAt
}
