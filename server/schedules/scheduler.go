package schedules

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"nectar/server/catalog"
	"nectar/server/history"
	"nectar/server/runs"
	"nectar/targets"
)

// FireFunc starts the run of one interval (or finds it done or running) and returns its key.
// It is the server's one way of starting a run; trigger is history.TriggerSchedule or history.TriggerBackfill.
type FireFunc func(ctx context.Context, p *Plan, iv Interval, trigger string, force bool) (key string, err error)

// Config is what a Scheduler needs.
type Config struct {
	Catalog *catalog.Catalog
	Store   targets.Store
	Fire    FireFunc
	// CatchUp caps the missed intervals a schedule with CatchUp runs at once (NECTAR_SCHEDULE_CATCHUP).
	CatchUp int
	// Firing false computes and serves schedules but never fires them (NECTAR_SCHEDULES=off).
	Firing bool
	Logger *slog.Logger
	// Now is the clock (tests may shift it); nil is time.Now.
	Now func() time.Time
}

// Scheduler fires the due intervals of every scheduled task of the catalog.
type Scheduler struct {
	cfg   Config
	plans []*Plan
	byKey map[string]*Plan
	wake  chan struct{}

	mu      sync.Mutex
	lastEnd map[*Plan]time.Time // the latest fire time each plan was checked at (loop only)
	poked   map[*Plan]bool      // plans to check at once (a resume)
}

// New compiles the catalog's schedules.
func New(cfg Config) (*Scheduler, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CatchUp < 1 {
		cfg.CatchUp = 1
	}
	s := &Scheduler{cfg: cfg, byKey: map[string]*Plan{}, wake: make(chan struct{}, 1),
		lastEnd: map[*Plan]time.Time{}, poked: map[*Plan]bool{}}
	for _, t := range cfg.Catalog.Tasks() {
		if t.Schedule == nil {
			continue
		}
		p, err := Compile(t)
		if err != nil {
			return nil, fmt.Errorf("schedule of %s/%s/%s: %w", t.Type, t.Chain, t.Name, err)
		}
		s.plans = append(s.plans, p)
		s.byKey[p.Path()] = p
	}
	return s, nil
}

// Plans lists the schedules, sorted by type, chain and task.
func (s *Scheduler) Plans() []*Plan { return s.plans }

// Plan finds one schedule by its task.
func (s *Scheduler) Plan(typ, chain, task string) (*Plan, bool) {
	p, ok := s.byKey[typ+"/"+chain+"/"+task]
	return p, ok
}

// Firing reports whether this server fires schedules.
func (s *Scheduler) Firing() bool { return s.cfg.Firing }

// retryAfter is how soon a schedule whose check failed (the store down, the queue full, the
// server draining) is checked again: its interval is not lost, only late.
const retryAfter = 5 * time.Second

// Run fires due intervals until ctx ends. At start it checks every schedule (catching up what
// was missed while no server ran it), then sleeps until the next fire time of any schedule.
// The server calls it once it listens, so a server that fails to start fires nothing.
func (s *Scheduler) Run(ctx context.Context) {
	if !s.cfg.Firing || len(s.plans) == 0 {
		return
	}
	first := true
	failed := map[*Plan]bool{}
	for {
		now := s.cfg.Now()
		for _, p := range s.plans {
			end := p.Expr.Prev(now)
			s.mu.Lock()
			check := first || s.poked[p] || failed[p] || end.After(s.lastEnd[p])
			delete(s.poked, p)
			s.lastEnd[p] = end
			s.mu.Unlock()
			if check {
				failed[p] = s.check(ctx, p, now) != nil
			}
		}
		first = false
		wait := time.Hour // no fire time within five years: look again now and then
		for _, p := range s.plans {
			if t := p.Expr.Next(now); !t.IsZero() {
				wait = min(wait, time.Until(t))
			}
			if failed[p] {
				wait = min(wait, retryAfter)
			}
		}
		timer := time.NewTimer(max(wait, 10*time.Millisecond))
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-s.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// check fires p's due intervals, unless it is paused. An error means it should be checked again
// soon (what it fired before the error is recorded).
func (s *Scheduler) check(ctx context.Context, p *Plan, now time.Time) error {
	log := s.cfg.Logger.With("schedule", p.Path())
	ps, err := ReadPause(ctx, s.cfg.Store, p)
	if err != nil {
		log.Error("schedule: reading its pause; trying again shortly", "err", err)
		return err
	}
	if ps != nil {
		return nil
	}
	st, err := ReadState(ctx, s.cfg.Store, p)
	if err != nil {
		log.Error("schedule: reading its state; trying again shortly", "err", err)
		return err
	}
	base := p.Start
	if base.IsZero() && st.Last.IsZero() {
		if st.FirstSeen.IsZero() {
			st.FirstSeen = now.UTC()
			if err := writeJSON(ctx, s.cfg.Store, stateKey(p), st); err != nil {
				log.Error("schedule: recording when it was first seen; trying again shortly", "err", err)
				return err
			}
		}
		// No Start: the first interval is the one in progress when a server first saw it.
		base = p.Expr.Prev(st.FirstSeen)
	}
	limit := 1
	if p.CatchUp {
		limit = s.cfg.CatchUp
	}
	due, more := p.Due(now, st.Last, base, limit)
	if more && p.CatchUp {
		from := base
		if !st.Last.IsZero() {
			from = st.Last.Add(time.Second)
		}
		log.Warn("schedule: more intervals were missed than NECTAR_SCHEDULE_CATCHUP runs at once; backfill the older ones",
			"running_from", due[0].Start, "cap", limit,
			"backfill", fmt.Sprintf("nectar backfill %s --from %s --to %s", p.Path(), from.UTC().Format(time.RFC3339), due[0].Start.Add(-time.Second).UTC().Format(time.RFC3339)))
	}
	for _, iv := range due {
		key, err := s.fire(ctx, p, iv)
		if err != nil {
			// Not recorded as fired: the next check starts here again.
			log.Error("schedule: starting the run of an interval; trying again shortly", "interval_start", iv.Start, "err", err)
			return err
		}
		log.Info("schedule fired", "interval_start", iv.Start, "interval_end", iv.End, "key", key)
		if err := s.advance(ctx, p, iv, key); err != nil {
			log.Error("schedule: recording the interval fired", "interval_start", iv.Start, "err", err)
			return err
		}
	}
	return nil
}

// queueWait bounds how long a fire waits for room in a full run queue before the check gives
// up (and tries again after retryAfter).
const queueWait = 10 * time.Second

// fire starts iv's run; a full queue is waited out for a while (a catch-up submits its
// intervals back to back and a small queue fills at once), as a backfill waits.
func (s *Scheduler) fire(ctx context.Context, p *Plan, iv Interval) (string, error) {
	deadline := time.Now().Add(queueWait)
	for {
		key, err := s.cfg.Fire(ctx, p, iv, history.TriggerSchedule, false)
		if !errors.Is(err, runs.ErrQueueFull) || time.Now().After(deadline) {
			return key, err
		}
		select {
		case <-ctx.Done():
			return key, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// advance records iv as p's latest interval fired, unless another server has recorded a later
// one meanwhile. The store offers no compare-and-swap for an overwrite, so two servers racing
// here may leave the earlier of their two intervals: the only cost is that one interval is
// looked at again, and fireInterval finds it fired (its run record) or done (its out).
func (s *Scheduler) advance(ctx context.Context, p *Plan, iv Interval, key string) error {
	st, err := ReadState(ctx, s.cfg.Store, p)
	if err != nil {
		return err
	}
	if !st.Last.IsZero() && !iv.Start.After(st.Last) {
		return nil
	}
	st.Last, st.LastKey, st.FiredAt = iv.Start.UTC(), key, s.cfg.Now().UTC()
	return writeJSON(ctx, s.cfg.Store, stateKey(p), st)
}

// Pause stops p from firing on every server sharing the store, until Resume.
func (s *Scheduler) Pause(ctx context.Context, p *Plan, by string) error {
	return writeJSON(ctx, s.cfg.Store, pauseKey(p), Pause{At: s.cfg.Now().UTC(), By: by})
}

// Resume lets p fire again; with CatchUp, the intervals missed while it was paused run (up to
// the cap), otherwise only the latest.
func (s *Scheduler) Resume(ctx context.Context, p *Plan) error {
	err := s.cfg.Store.Delete(ctx, pauseKey(p))
	if err != nil && !errors.Is(err, targets.ErrNotExist) {
		return targets.Unavailable(err)
	}
	s.mu.Lock()
	s.poked[p] = true
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// StopBackfills stops p's backfills accepted until now, on every server sharing the store: they
// start no more intervals (the runs already started go on).
func (s *Scheduler) StopBackfills(ctx context.Context, p *Plan, by string) (BackfillStop, error) {
	var id [8]byte
	rand.Read(id[:])
	st := BackfillStop{ID: hex.EncodeToString(id[:]), At: s.cfg.Now().UTC(), By: by}
	return st, writeJSON(ctx, s.cfg.Store, stopFillKey(p), st)
}

// BackfillStopSeen is the ID of p's latest backfill stop ("" for none): a backfill notes it when
// it is accepted (BackfillStopped).
func (s *Scheduler) BackfillStopSeen(ctx context.Context, p *Plan) (string, error) {
	st, err := ReadBackfillStop(ctx, s.cfg.Store, p)
	if err != nil || st == nil {
		return "", err
	}
	return st.ID, nil
}

// BackfillStopped reports whether p's backfills were stopped since a backfill that saw the stop
// seen (BackfillStopSeen) was accepted.
func (s *Scheduler) BackfillStopped(ctx context.Context, p *Plan, seen string) (bool, error) {
	st, err := ReadBackfillStop(ctx, s.cfg.Store, p)
	if err != nil || st == nil {
		return false, err
	}
	return st.ID != seen, nil
}

// MaxBackfill bounds the intervals one backfill request may start.
const MaxBackfill = 10_000

// Backfill lists the complete intervals of p that start within [from, to] (see Plan.Range); the
// caller starts them (Fire with history.TriggerBackfill), as the queue allows.
func (s *Scheduler) Backfill(p *Plan, from, to time.Time) ([]Interval, error) {
	return p.Range(from, to, s.cfg.Now(), MaxBackfill)
}

// Info is a schedule as GET /api/schedules shows it.
type Info struct {
	Type      string      `json:"type"`
	Chain     string      `json:"chain"`
	Task      string      `json:"task"`
	Cron      string      `json:"cron"`
	TimeZone  string      `json:"time_zone"`
	Start     *time.Time  `json:"start"`
	CatchUp   bool        `json:"catch_up"`
	Param     string      `json:"param"`
	NextFires []time.Time `json:"next_fires"`
	Paused    bool        `json:"paused"`
	PausedAt  *time.Time  `json:"paused_at,omitempty"`
	PausedBy  string      `json:"paused_by,omitempty"`
	// LastInterval is the start of the latest interval fired; LastKey its run's key.
	LastInterval *time.Time `json:"last_interval"`
	LastKey      string     `json:"last_key,omitempty"`
	LastFiredAt  *time.Time `json:"last_fired_at,omitempty"`
	// BackfillStop is the ID of the latest stop of its backfills, and BackfillsStoppedAt when it
	// was: a backfill whose answer's backfill_stop differs has been stopped.
	BackfillStop       string     `json:"backfill_stop,omitempty"`
	BackfillsStoppedAt *time.Time `json:"backfills_stopped_at,omitempty"`
}

// Describe reads p's state and pause from the store.
func (s *Scheduler) Describe(ctx context.Context, p *Plan, nextFires int) (Info, error) {
	in := Info{Type: p.Task.Type, Chain: p.Task.Chain, Task: p.Task.Name, Cron: p.Expr.String(),
		TimeZone: p.Expr.Location().String(), CatchUp: p.CatchUp, Param: p.Param, NextFires: p.NextFires(s.cfg.Now(), nextFires)}
	if !p.Start.IsZero() {
		in.Start = &p.Start
	}
	var st State
	var ps *Pause
	var stop *BackfillStop
	var errs [3]error
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); st, errs[0] = ReadState(ctx, s.cfg.Store, p) }()
	go func() { defer wg.Done(); ps, errs[1] = ReadPause(ctx, s.cfg.Store, p) }()
	go func() { defer wg.Done(); stop, errs[2] = ReadBackfillStop(ctx, s.cfg.Store, p) }()
	wg.Wait()
	if err := errors.Join(errs[:]...); err != nil {
		return in, fmt.Errorf("reading the state of schedule %s: %w", p.Path(), err)
	}
	if ps != nil {
		in.Paused, in.PausedAt, in.PausedBy = true, &ps.At, ps.By
	}
	if !st.Last.IsZero() {
		in.LastInterval, in.LastKey, in.LastFiredAt = &st.Last, st.LastKey, &st.FiredAt
	}
	if stop != nil {
		in.BackfillStop, in.BackfillsStoppedAt = stop.ID, &stop.At
	}
	return in, nil
}

// SortInfos orders schedules as Plans are (type, chain, task).
func SortInfos(in []Info) {
	sort.Slice(in, func(i, j int) bool {
		a, b := in[i], in[j]
		return a.Type+"/"+a.Chain+"/"+a.Task < b.Type+"/"+b.Chain+"/"+b.Task
	})
}
