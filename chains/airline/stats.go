package airline

import (
	"bufio"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"time"
)

// dayStats is one airport's day: flights that departed, cancellations, and the mean and 95th
// percentile of the departed flights' delays.
type dayStats struct {
	Airport   string
	Day       time.Time
	Flights   int
	Cancelled int
	MeanDelay float64
	P95Delay  float64
	// Filled by detect:
	Z       float64
	Anomaly bool
}

// aggregator collects the delays of each airport and day of one year.
type aggregator struct {
	year      int
	delays    map[string]map[time.Time][]float64
	cancelled map[string]map[time.Time]int
	seen      int // flights of the year
}

func newAggregator(year int) *aggregator {
	return &aggregator{year: year, delays: map[string]map[time.Time][]float64{}, cancelled: map[string]map[time.Time]int{}}
}

func (a *aggregator) add(f flight) error {
	if f.day.Year() != a.year || f.origin == "" {
		return nil
	}
	a.seen++
	if f.cancelled {
		if a.cancelled[f.origin] == nil {
			a.cancelled[f.origin] = map[time.Time]int{}
		}
		a.cancelled[f.origin][f.day]++
		return nil
	}
	if a.delays[f.origin] == nil {
		a.delays[f.origin] = map[time.Time][]float64{}
	}
	a.delays[f.origin][f.day] = append(a.delays[f.origin][f.day], f.delay)
	return nil
}

// merge adds what o collected (another share of the same data set).
func (a *aggregator) merge(o *aggregator) {
	a.seen += o.seen
	for ap, byDay := range o.delays {
		if a.delays[ap] == nil {
			a.delays[ap] = map[time.Time][]float64{}
		}
		for d, v := range byDay {
			a.delays[ap][d] = append(a.delays[ap][d], v...)
		}
	}
	for ap, byDay := range o.cancelled {
		if a.cancelled[ap] == nil {
			a.cancelled[ap] = map[time.Time]int{}
		}
		for d, n := range byDay {
			a.cancelled[ap][d] += n
		}
	}
}

// days returns every airport-day, sorted by airport then day.
func (a *aggregator) days() []dayStats {
	var out []dayStats
	keys := map[string]map[time.Time]bool{}
	for ap, byDay := range a.delays {
		for d := range byDay {
			if keys[ap] == nil {
				keys[ap] = map[time.Time]bool{}
			}
			keys[ap][d] = true
		}
	}
	for ap, byDay := range a.cancelled {
		for d := range byDay {
			if keys[ap] == nil {
				keys[ap] = map[time.Time]bool{}
			}
			keys[ap][d] = true
		}
	}
	for ap, ds := range keys {
		for d := range ds {
			v := a.delays[ap][d]
			s := dayStats{Airport: ap, Day: d, Flights: len(v), Cancelled: a.cancelled[ap][d]}
			if len(v) > 0 {
				s.MeanDelay, s.P95Delay = mean(v), percentile(v, 95)
			}
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Airport != out[j].Airport {
			return out[i].Airport < out[j].Airport
		}
		return out[i].Day.Before(out[j].Day)
	})
	return out
}

func mean(v []float64) float64 {
	sum := 0.0
	for _, x := range v {
		sum += x
	}
	return sum / float64(len(v))
}

// percentile is numpy's default (linear interpolation between the closest ranks); it sorts v.
func percentile(v []float64, p float64) float64 {
	slices.Sort(v)
	pos := p / 100 * float64(len(v)-1)
	lo := math.Floor(pos)
	hi := math.Ceil(pos)
	return v[int(lo)] + (v[int(hi)]-v[int(lo)])*(pos-lo)
}

// detect flags, per airport, the days whose mean delay is more than threshold sample standard
// deviations from the mean of the airport's daily means. Airports averaging fewer than
// minFlights flights over the days they have flights are dropped (neither plotted nor loaded).
func detect(days []dayStats, minFlights int, threshold float64) []dayStats {
	var out []dayStats
	for i := 0; i < len(days); {
		j := i
		for j < len(days) && days[j].Airport == days[i].Airport {
			j++
		}
		group := days[i:j]
		i = j
		flights, withFlights := 0, 0
		var means []float64
		for _, d := range group {
			if d.Flights > 0 {
				flights += d.Flights
				withFlights++
				means = append(means, d.MeanDelay)
			}
		}
		if withFlights == 0 || float64(flights)/float64(withFlights) < float64(minFlights) {
			continue
		}
		m := mean(means)
		sd := 0.0
		if len(means) > 1 {
			ss := 0.0
			for _, x := range means {
				ss += (x - m) * (x - m)
			}
			sd = math.Sqrt(ss / float64(len(means)-1))
		}
		for _, d := range group {
			if d.Flights > 0 && sd > 0 {
				d.Z = (d.MeanDelay - m) / sd
				d.Anomaly = math.Abs(d.Z) > threshold
			}
			out = append(out, d)
		}
	}
	return out
}

// csvHeader is the columns of the daily summary, as extract writes it and detect adds to it.
var csvHeader = []string{"airport", "day", "flights", "cancelled", "mean_delay", "p95_delay", "z_score", "is_anomaly"}

func num(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// writeDays writes the summary as CSV (floats in their shortest exact form).
func writeDays(w io.Writer, days []dayStats) error {
	bw := bufio.NewWriter(w)
	cw := csv.NewWriter(bw)
	cw.Write(csvHeader)
	for _, d := range days {
		cw.Write([]string{d.Airport, d.Day.Format(time.DateOnly), strconv.Itoa(d.Flights), strconv.Itoa(d.Cancelled),
			num(d.MeanDelay), num(d.P95Delay), num(d.Z), strconv.FormatBool(d.Anomaly)})
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return err
	}
	return bw.Flush()
}

// readDays reads what writeDays wrote.
func readDays(r io.Reader) ([]dayStats, error) {
	cr := csv.NewReader(r)
	recs, err := cr.ReadAll()
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 || !slices.Equal(recs[0], csvHeader) {
		return nil, fmt.Errorf("not a daily summary (want the header %v)", csvHeader)
	}
	out := make([]dayStats, 0, len(recs)-1)
	for i, rec := range recs[1:] {
		var d dayStats
		var errs [7]error
		d.Airport = rec[0]
		d.Day, errs[0] = time.Parse(time.DateOnly, rec[1])
		d.Flights, errs[1] = strconv.Atoi(rec[2])
		d.Cancelled, errs[2] = strconv.Atoi(rec[3])
		d.MeanDelay, errs[3] = strconv.ParseFloat(rec[4], 64)
		d.P95Delay, errs[4] = strconv.ParseFloat(rec[5], 64)
		d.Z, errs[5] = strconv.ParseFloat(rec[6], 64)
		d.Anomaly, errs[6] = strconv.ParseBool(rec[7])
		for _, e := range errs {
			if e != nil {
				return nil, fmt.Errorf("summary line %d: %w", i+2, e)
			}
		}
		out = append(out, d)
	}
	return out, nil
}
