package cron

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func mustLoc(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatalf("LoadLocation(%q): %v (tzdata missing?)", name, err)
	}
	return loc
}

// next5 is the first five fire times after from, formatted in the schedule's zone.
func next5(s *Schedule, from time.Time) []string {
	var out []string
	for t := from; len(out) < 5; {
		t = s.Next(t)
		if t.IsZero() {
			break
		}
		out = append(out, t.Format(time.RFC3339))
	}
	return out
}

func TestNext(t *testing.T) {
	ny := mustLoc(t, "America/New_York")
	paris := mustLoc(t, "Europe/Paris")
	tests := []struct {
		expr string
		loc  *time.Location
		from string // RFC 3339
		want []string
	}{
		{"@yearly", ny, "2023-06-01T00:00:00Z", []string{"2024-01-01T00:00:00-05:00", "2025-01-01T00:00:00-05:00",
			"2026-01-01T00:00:00-05:00", "2027-01-01T00:00:00-05:00", "2028-01-01T00:00:00-05:00"}},
		{"@yearly", time.UTC, "2024-01-01T00:00:00Z", []string{"2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z",
			"2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z", "2029-01-01T00:00:00Z"}}, // strictly after
		// February 29th: leap years only.
		{"0 12 29 feb *", time.UTC, "2023-03-01T00:00:00Z", []string{"2024-02-29T12:00:00Z", "2028-02-29T12:00:00Z",
			"2032-02-29T12:00:00Z", "2036-02-29T12:00:00Z", "2040-02-29T12:00:00Z"}},
		{"@monthly", paris, "2024-01-15T10:00:00Z", []string{"2024-02-01T00:00:00+01:00", "2024-03-01T00:00:00+01:00",
			"2024-04-01T00:00:00+02:00", "2024-05-01T00:00:00+02:00", "2024-06-01T00:00:00+02:00"}},
		{"*/15 9-10 * * mon-fri", time.UTC, "2024-06-07T10:40:00Z", []string{"2024-06-07T10:45:00Z", // a Friday
			"2024-06-10T09:00:00Z", "2024-06-10T09:15:00Z", "2024-06-10T09:30:00Z", "2024-06-10T09:45:00Z"}},
		// Both day fields restricted: the 13th or a Friday (cron's rule).
		{"0 0 13 * fri", time.UTC, "2024-09-01T00:00:00Z", []string{"2024-09-06T00:00:00Z", "2024-09-13T00:00:00Z",
			"2024-09-20T00:00:00Z", "2024-09-27T00:00:00Z", "2024-10-04T00:00:00Z"}},
		{"30 2 * * *", ny, "2024-03-09T12:00:00Z", []string{"2024-03-11T02:30:00-04:00", "2024-03-12T02:30:00-04:00",
			"2024-03-13T02:30:00-04:00", "2024-03-14T02:30:00-04:00", "2024-03-15T02:30:00-04:00"}}, // 2:30 does not exist on March 10
		{"0 0 * * 7", time.UTC, "2024-06-01T00:00:00Z", []string{"2024-06-02T00:00:00Z", "2024-06-09T00:00:00Z",
			"2024-06-16T00:00:00Z", "2024-06-23T00:00:00Z", "2024-06-30T00:00:00Z"}}, // 7 is Sunday
		{"@every 2s", time.UTC, "2024-01-01T00:00:01Z", []string{"2024-01-01T00:00:02Z", "2024-01-01T00:00:04Z",
			"2024-01-01T00:00:06Z", "2024-01-01T00:00:08Z", "2024-01-01T00:00:10Z"}},
		{"0 0 30 2 *", time.UTC, "2024-01-01T00:00:00Z", nil}, // never
	}
	for _, tt := range tests {
		s, err := Parse(tt.expr, tt.loc)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tt.expr, err)
		}
		from, _ := time.Parse(time.RFC3339, tt.from)
		got := next5(s, from)
		if strings.Join(got, " ") != strings.Join(tt.want, " ") {
			t.Errorf("Parse(%q, %s).Next from %s:\n got %v\nwant %v", tt.expr, tt.loc, tt.from, got, tt.want)
		}
	}
}

func TestPrev(t *testing.T) {
	tests := []struct{ expr, at, want string }{
		{"@yearly", "2024-06-01T00:00:00Z", "2024-01-01T00:00:00Z"},
		{"@yearly", "2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z"}, // at a fire time: that one
		{"@hourly", "2024-06-01T10:59:59Z", "2024-06-01T10:00:00Z"},
		{"@weekly", "2024-06-05T12:00:00Z", "2024-06-02T00:00:00Z"},
		{"@every 2s", "2024-01-01T00:00:05Z", "2024-01-01T00:00:04Z"},
	}
	for _, tt := range tests {
		s, _ := Parse(tt.expr, time.UTC)
		at, _ := time.Parse(time.RFC3339, tt.at)
		if got := s.Prev(at).Format(time.RFC3339); got != tt.want {
			t.Errorf("Parse(%q).Prev(%s) = %s, want %s", tt.expr, tt.at, got, tt.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ expr, want string }{
		{"61 * * * *", "minute 61 is out of range 0-59"},
		{"* * *", "want 5 fields"},
		{"* * * foo *", `month "foo" is not a number or a month name (jan-dec)`},
		{"* * * * 8", "day of week 8 is out of range 0-7"},
		{"5-1 * * * *", "minute range 5-1 runs backwards"},
		{"*/0 * * * *", `minute step "0" is not a whole number`},
		{"@fortnightly", "unknown shorthand"},
		{"@every 10ms", "@every needs a duration of 1s or more"},
		{"@every soon", "@every needs a duration"},
	}
	for _, tt := range tests {
		_, err := Parse(tt.expr, nil)
		if err == nil || !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) = %v, want an error with %q", tt.expr, err, tt.want)
		}
	}
}

func TestEveryIsAnchored(t *testing.T) {
	anchor := time.Date(2024, 1, 1, 0, 0, 1, 0, time.UTC)
	s, _ := ParseAnchored("@every 1h", time.UTC, anchor)
	if got := s.Next(time.Date(2024, 1, 1, 5, 30, 0, 0, time.UTC)); !got.Equal(time.Date(2024, 1, 1, 6, 0, 1, 0, time.UTC)) {
		t.Errorf("Next = %s, want 06:00:01 (anchored at 00:00:01)", got)
	}
	if got := s.Next(time.Date(2023, 1, 1, 0, 0, 0, 0, time.UTC)); !got.Equal(anchor) {
		t.Errorf("Next before the anchor = %s, want the anchor", got)
	}
}

// No start: @every counts from the Unix epoch, so every server computes the same ticks (a zero
// anchor would overflow the arithmetic and give fire times in year 1).
func TestEveryWithoutAnAnchorCountsFromTheEpoch(t *testing.T) {
	s, err := ParseAnchored("@every 2s", time.UTC, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 28, 17, 0, 1, 500, time.UTC)
	if next, prev := s.Next(now), s.Prev(now); !next.Equal(now.Truncate(time.Second).Add(time.Second)) || !prev.Equal(now.Add(-time.Second).Truncate(time.Second)) {
		t.Errorf("Next = %s, Prev = %s around %s: want the even seconds around it", next, prev, now)
	}
}
