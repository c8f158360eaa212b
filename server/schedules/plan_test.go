package schedules

import (
	"testing"
	"time"

	"nectar/server/catalog"
)

func plan(t *testing.T, cron, tz, start string) *Plan {
	t.Helper()
	p, err := Compile(&catalog.Task{Type: "x", Chain: "y_chain", Name: "ZTask",
		Params:   []catalog.Param{{Name: "day", Kind: "time"}},
		Schedule: &catalog.Schedule{Cron: cron, TimeZone: tz, Start: start, Param: "day"}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func starts(ivs []Interval) []string {
	out := make([]string, len(ivs))
	for i, iv := range ivs {
		out[i] = iv.Start.UTC().Format(time.RFC3339) + "/" + iv.End.Sub(iv.Start).String()
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestDue(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	every := plan(t, "@every 2s", "", t0.Format(time.RFC3339))
	paris := plan(t, "@daily", "Europe/Paris", "")
	at := func(s string) time.Time { tt, _ := time.Parse(time.RFC3339, s); return tt }
	for _, tc := range []struct {
		name      string
		p         *Plan
		now, last time.Time
		base      time.Time
		limit     int
		want      []string
		more      bool
	}{
		{"all missed since start, oldest first", every, t0.Add(10500 * time.Millisecond), time.Time{}, t0, 10,
			[]string{"2026-03-01T12:00:00Z/2s", "2026-03-01T12:00:02Z/2s", "2026-03-01T12:00:04Z/2s", "2026-03-01T12:00:06Z/2s", "2026-03-01T12:00:08Z/2s"}, false},
		{"the cap keeps the latest", every, t0.Add(10500 * time.Millisecond), time.Time{}, t0, 2,
			[]string{"2026-03-01T12:00:06Z/2s", "2026-03-01T12:00:08Z/2s"}, true},
		{"after the last fired", every, t0.Add(10 * time.Second), t0.Add(4 * time.Second), t0, 10,
			[]string{"2026-03-01T12:00:06Z/2s", "2026-03-01T12:00:08Z/2s"}, false},
		{"nothing new", every, t0.Add(11 * time.Second), t0.Add(8 * time.Second), t0, 10, []string{}, false},
		{"not before the start", every, t0.Add(time.Second), time.Time{}, t0, 10, []string{}, false},
		{"not before base", every, t0.Add(10 * time.Second), time.Time{}, t0.Add(5 * time.Second), 10,
			[]string{"2026-03-01T12:00:06Z/2s", "2026-03-01T12:00:08Z/2s"}, false},
		// Paris moves to summer time on 29 March 2026: that day is 23 hours long.
		{"days across DST", paris, at("2026-03-31T12:00:00Z"), at("2026-03-27T23:00:00Z"), time.Time{}, 10,
			[]string{"2026-03-28T23:00:00Z/23h0m0s", "2026-03-29T22:00:00Z/24h0m0s"}, false},
		{"one day late", paris, at("2026-03-02T08:00:00Z"), time.Time{}, time.Time{}, 1,
			[]string{"2026-02-28T23:00:00Z/24h0m0s"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			due, more := tc.p.Due(tc.now, tc.last, tc.base, tc.limit)
			if got := starts(due); !equal(got, tc.want) || more != tc.more {
				t.Errorf("Due = %v, more %v; want %v, more %v", got, more, tc.want, tc.more)
			}
		})
	}
}

func TestNextFiresSkipTheStartItself(t *testing.T) {
	p := plan(t, "@yearly", "Europe/Paris", "2028-01-01")
	got := p.NextFires(time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC), 3)
	want := []string{"2029-01-01T00:00:00+01:00", "2030-01-01T00:00:00+01:00", "2031-01-01T00:00:00+01:00"}
	for i := range want {
		if i >= len(got) || got[i].Format(time.RFC3339) != want[i] {
			t.Fatalf("NextFires = %v, want %v (2028-01-01 starts the first interval; it ends a year later)", got, want)
		}
	}
}

func TestRange(t *testing.T) {
	p := plan(t, "@daily", "Europe/Paris", "")
	paris, _ := time.LoadLocation("Europe/Paris")
	day := func(d int) time.Time { return time.Date(2026, 1, d, 0, 0, 0, 0, paris) }
	now := time.Date(2026, 1, 5, 12, 0, 0, 0, paris)
	for _, tc := range []struct {
		name     string
		from, to time.Time
		limit    int
		want     int
		err      bool
	}{
		{"both ends included", day(1), day(3), 100, 3, false},
		{"unaligned bounds", day(1).Add(time.Hour), day(3).Add(time.Hour), 100, 2, false},
		{"incomplete intervals left out", day(1), day(9), 100, 4, false},
		{"over the limit", day(1), day(4), 3, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := p.Range(tc.from, tc.to, now, tc.limit)
			if (err != nil) != tc.err || len(got) != tc.want {
				t.Fatalf("Range = %v, %v; want %d intervals, error %v", starts(got), err, tc.want, tc.err)
			}
			for i, iv := range got {
				if iv.Start.In(paris).Hour() != 0 || (i > 0 && !iv.Start.Equal(got[i-1].End)) {
					t.Errorf("interval %d = %v: want consecutive Paris days", i, starts(got[i:i+1]))
				}
			}
		})
	}
}
