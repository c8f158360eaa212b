// Package airline is the ETL of yearly airline-delay anomalies per airport: extract a flight
// data set from the store (vega-datasets' parquet, or the Kaggle "Airline Delay and
// Cancellation" yearly CSVs), detect the days whose delays were out of the ordinary, and (in
// the tasks that follow) plot, load into PostgreSQL and report.
package airline

import (
	"fmt"
	"path"
	"strings"

	"nectar/chains"
)

// DefaultSource is where `make demo-data` puts the real flights.
const DefaultSource = "datasets/flights/flights-3m.parquet"

// ExtractTask streams the year's flights from a source object of the store and aggregates them
// per origin airport and day: flights that departed, cancellations, mean and 95th percentile
// (numpy's linear interpolation) of the departure delay. Its out is the daily summary, CSV.
type ExtractTask struct {
	// The flights' year.
	Year int `param:"year" default:"2001"`
	// The data set: a .parquet (vega-datasets' layout) or a .csv (Kaggle's yearly layout).
	Source string `param:"source" default:"datasets/flights/flights-3m.parquet"`
}

func (t ExtractTask) Run(ctx *chains.Context) error {
	agg := newAggregator(t.Year)
	ctx.Status("reading " + t.Source)
	switch strings.ToLower(path.Ext(t.Source)) {
	case ".parquet":
		f, err := ctx.SourceFile(t.Source)
		if err != nil {
			return err
		}
		if err := readParquet(f, agg.add); err != nil {
			return fmt.Errorf("%s: %w", t.Source, err)
		}
	case ".csv":
		rc, err := ctx.Source(t.Source)
		if err != nil {
			return err
		}
		defer rc.Close()
		if err := readKaggleCSV(rc, agg.add); err != nil {
			return fmt.Errorf("%s: %w", t.Source, err)
		}
	default:
		return fmt.Errorf("source %s: want a .parquet or a .csv file", t.Source)
	}
	if agg.seen == 0 {
		return fmt.Errorf("%s has no flights in %d", t.Source, t.Year)
	}
	days := agg.days()
	ctx.Log().Info("extracted", "year", t.Year, "flights", agg.seen, "airport_days", len(days))
	return writeDays(ctx.Out(), days)
}

// DetectTask flags, per airport over the year's days, the days whose mean delay lies more than
// 3 sample standard deviations from the mean of the airport's daily means (z-score). Airports
// averaging fewer than min_flights flights over their days are left out. Its out is the daily
// summary with z_score and is_anomaly, CSV.
type DetectTask struct {
	Year   int    `param:"year" default:"2001"`
	Source string `param:"source" default:"datasets/flights/flights-3m.parquet"`
	// Airports averaging fewer flights a day are skipped.
	MinFlights int `param:"min_flights" default:"20"`
}

func (t DetectTask) Requires() []chains.Task {
	return []chains.Task{ExtractTask{Year: t.Year, Source: t.Source}}
}

func (t DetectTask) Run(ctx *chains.Context) error {
	in, err := ctx.Input(0)
	if err != nil {
		return err
	}
	defer in.Close()
	days, err := readDays(in)
	if err != nil {
		return err
	}
	flagged := detect(days, t.MinFlights, 3)
	anomalies := 0
	for _, d := range flagged {
		if d.Anomaly {
			anomalies++
		}
	}
	ctx.Log().Info("detected", "airport_days", len(flagged), "anomalies", anomalies)
	return writeDays(ctx.Out(), flagged)
}
