// Package cron parses schedule expressions and computes their fire times: the five fields of
// cron (minute, hour, day of month, month, day of week) with names, ranges, lists and steps, the
// shorthands @yearly (@annually), @monthly, @weekly, @daily (@midnight) and @hourly, and
// "@every <duration>". Times are computed in the schedule's time zone, so "0 0 1 1 *" in
// Europe/Paris fires at midnight in Paris, across daylight saving changes.
//
// The generator checks every declared schedule with Parse, so a bad expression fails
// `make generate` at its line; the server's scheduler computes fire times with Next.
package cron

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // time zones work on a machine (or container) without /usr/share/zoneinfo
)

// Schedule is a parsed expression.
type Schedule struct {
	expr string
	loc  *time.Location
	// five-field form
	minute, hour, dom, month, dow uint64 // bit i set: value i matches
	domAny, dowAny                bool   // the field was * (cron's rule: if both are restricted, either matches)
	// @every form
	every  time.Duration
	anchor time.Time
}

// ErrSyntax is wrapped by every parse error.
var ErrSyntax = errors.New("bad schedule")

type field struct {
	name     string
	min, max int
	names    map[string]int
}

var (
	months = map[string]int{"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12}
	days   = map[string]int{"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
	fields = []field{
		{"minute", 0, 59, nil},
		{"hour", 0, 23, nil},
		{"day of month", 1, 31, nil},
		{"month", 1, 12, months},
		{"day of week", 0, 7, days}, // 7 is Sunday too
	}
	shorthands = map[string]string{
		"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
		"@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
	}
)

// Parse reads expr in loc (nil: UTC). "@every d" fires at anchor + k·d; its anchor is the Unix
// epoch unless ParseAnchored gives one, so every server computes the same ticks.
func Parse(expr string, loc *time.Location) (*Schedule, error) {
	return parse(expr, loc, time.Unix(0, 0))
}

// ParseAnchored is Parse with the anchor of an "@every" schedule (a schedule's start date); a
// zero anchor is the Unix epoch, as for Parse.
func ParseAnchored(expr string, loc *time.Location, anchor time.Time) (*Schedule, error) {
	if anchor.IsZero() {
		anchor = time.Unix(0, 0)
	}
	return parse(expr, loc, anchor)
}

func parse(expr string, loc *time.Location, anchor time.Time) (*Schedule, error) {
	if loc == nil {
		loc = time.UTC
	}
	s := &Schedule{expr: expr, loc: loc}
	e := strings.TrimSpace(expr)
	if rest, ok := strings.CutPrefix(e, "@every"); ok {
		d, err := time.ParseDuration(strings.TrimSpace(rest))
		if err != nil || d < time.Second {
			return nil, fmt.Errorf("%w %q: @every needs a duration of 1s or more, such as @every 1h30m", ErrSyntax, expr)
		}
		s.every, s.anchor = d, anchor
		return s, nil
	}
	if strings.HasPrefix(e, "@") {
		full, ok := shorthands[strings.ToLower(e)]
		if !ok {
			return nil, fmt.Errorf("%w %q: unknown shorthand (want @yearly, @monthly, @weekly, @daily, @hourly or @every <duration>)", ErrSyntax, expr)
		}
		e = full
	}
	parts := strings.Fields(e)
	if len(parts) != 5 {
		return nil, fmt.Errorf("%w %q: want 5 fields (minute hour day-of-month month day-of-week), have %d", ErrSyntax, expr, len(parts))
	}
	dst := []*uint64{&s.minute, &s.hour, &s.dom, &s.month, &s.dow}
	for i, p := range parts {
		bits, err := parseField(p, fields[i])
		if err != nil {
			return nil, fmt.Errorf("%w %q: %v", ErrSyntax, expr, err)
		}
		*dst[i] = bits
	}
	if s.dow&(1<<7) != 0 { // 7 is Sunday
		s.dow |= 1
	}
	s.domAny, s.dowAny = parts[2] == "*" || strings.HasPrefix(parts[2], "*/"), parts[4] == "*" || strings.HasPrefix(parts[4], "*/")
	return s, nil
}

func parseField(p string, f field) (uint64, error) {
	var bits uint64
	for _, item := range strings.Split(p, ",") {
		rng, stepText, hasStep := strings.Cut(item, "/")
		step := 1
		if hasStep {
			n, err := strconv.Atoi(stepText)
			if err != nil || n < 1 {
				return 0, fmt.Errorf("%s step %q is not a whole number of 1 or more", f.name, stepText)
			}
			step = n
		}
		lo, hi := f.min, f.max
		switch {
		case rng == "*":
			if f.name == "day of week" {
				hi = 6
			}
		default:
			a, b, isRange := strings.Cut(rng, "-")
			var err error
			if lo, err = value(a, f); err != nil {
				return 0, err
			}
			hi = lo
			if isRange {
				if hi, err = value(b, f); err != nil {
					return 0, err
				}
				if hi < lo {
					return 0, fmt.Errorf("%s range %s runs backwards", f.name, rng)
				}
			} else if hasStep {
				hi = f.max // "5/15": from 5 to the end, every 15
			}
		}
		for v := lo; v <= hi; v += step {
			bits |= 1 << uint(v)
		}
	}
	return bits, nil
}

func value(s string, f field) (int, error) {
	if n, ok := f.names[strings.ToLower(s)]; ok {
		return n, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%s %q is not a number%s", f.name, s, nameHint(f))
	}
	if n < f.min || n > f.max {
		return 0, fmt.Errorf("%s %d is out of range %d-%d", f.name, n, f.min, f.max)
	}
	return n, nil
}

func nameHint(f field) string {
	switch f.name {
	case "month":
		return " or a month name (jan-dec)"
	case "day of week":
		return " or a day name (sun-sat)"
	}
	return ""
}

// String is the expression as written.
func (s *Schedule) String() string { return s.expr }

// Location is the time zone fire times are computed in.
func (s *Schedule) Location() *time.Location { return s.loc }

// Next is the first fire time strictly after t, in the schedule's time zone; the zero time if
// there is none within five years (such as "0 0 30 2 *").
func (s *Schedule) Next(t time.Time) time.Time {
	if s.every > 0 {
		if t.Before(s.anchor) {
			return s.anchor.In(s.loc)
		}
		n := t.Sub(s.anchor)/s.every + 1
		return s.anchor.Add(n * s.every).In(s.loc)
	}
	t = t.In(s.loc).Truncate(time.Minute).Add(time.Minute)
	limit := t.AddDate(5, 0, 0)
	for t.Before(limit) {
		switch {
		case s.month&(1<<uint(t.Month())) == 0:
			t = time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, s.loc)
		case !s.dayMatches(t):
			t = time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, s.loc)
		case s.hour&(1<<uint(t.Hour())) == 0:
			next := time.Date(t.Year(), t.Month(), t.Day(), t.Hour()+1, 0, 0, 0, s.loc)
			if !next.After(t) { // a daylight saving change repeated the hour
				next = t.Add(time.Hour).Truncate(time.Hour)
			}
			t = next
		case s.minute&(1<<uint(t.Minute())) == 0:
			t = t.Add(time.Minute)
		default:
			return t
		}
	}
	return time.Time{}
}

// Prev is the latest fire time at or before t (the start of the interval t falls in), or the
// zero time if there is none within five years.
func (s *Schedule) Prev(t time.Time) time.Time {
	if s.every > 0 {
		if t.Before(s.anchor) {
			return time.Time{}
		}
		return s.anchor.Add(t.Sub(s.anchor) / s.every * s.every).In(s.loc)
	}
	// Walk back a day at a time to a day with a fire time before t, then forward.
	for back := t.In(s.loc); back.After(t.AddDate(-5, 0, 0)); back = back.AddDate(0, 0, -1) {
		day := time.Date(back.Year(), back.Month(), back.Day(), 0, 0, 0, 0, s.loc)
		prev := time.Time{}
		for f := s.Next(day.Add(-time.Minute)); !f.IsZero() && !f.After(t); f = s.Next(f) {
			prev = f
		}
		if !prev.IsZero() {
			return prev
		}
	}
	return time.Time{}
}

func (s *Schedule) dayMatches(t time.Time) bool {
	dom := s.dom&(1<<uint(t.Day())) != 0
	dow := s.dow&(1<<uint(t.Weekday())) != 0
	if s.domAny || s.dowAny {
		return dom && dow
	}
	return dom || dow // cron's rule: both restricted, either matches
}

// Location loads a schedule's time zone by its IANA name; "" is UTC. "Local" is refused: it
// would make servers in different zones fire at different times.
func Location(name string) (*time.Location, error) {
	switch name {
	case "", "UTC":
		return time.UTC, nil
	case "Local":
		return nil, fmt.Errorf("time zone %q: name the zone (such as Europe/Paris); Local differs from server to server", name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("time zone %q: not an IANA time zone name (such as Europe/Paris or America/New_York)", name)
	}
	return loc, nil
}

// ParseStart reads a schedule's start: a date (2006-01-02, midnight in loc) or an RFC 3339
// time. "" is the zero time (no start).
func ParseStart(s string, loc *time.Location) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.ParseInLocation(time.DateOnly, s, loc); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("start %q: want a date (2006-01-02) or an RFC 3339 time", s)
	}
	return t, nil
}
