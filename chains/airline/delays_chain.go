// Package airline is the ETL of yearly airline-delay anomalies per airport: extract a flight
// data set from the store (vega-datasets' parquet, or the Kaggle "Airline Delay and
// Cancellation" yearly CSVs), detect the days whose delays were out of the ordinary, and (in
// the tasks that follow) plot, load into PostgreSQL and report.
package airline

import (
	"bufio"
	"encoding/csv"
	"fmt"
	"io"
	"path"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

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
		defer f.Close()
		if agg, err = readParquet(f, t.Year); err != nil {
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
	days, err := inputDays(ctx, 0)
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

// PlotTask draws each airport that DetectTask kept: flights per day with the anomalous days
// marked, and the mean delay below, titled with the airport's name from airports.csv. One PNG
// artifact per airport (<IATA>.png, 1200x700), also published at
// reports/airline_delays/year=<year>/airport=<IATA>/daily.png; drawn on every core. Its out
// lists the airports: airport,name,anomalies,artifact.
type PlotTask struct {
	Year       int    `param:"year" default:"2001"`
	Source     string `param:"source" default:"datasets/flights/flights-3m.parquet"`
	MinFlights int    `param:"min_flights" default:"20"`
	// airports.csv (iata, name, city, state, ...) in the store.
	Airports string `param:"airports" default:"datasets/flights/airports.csv"`
}

func (t PlotTask) Requires() []chains.Task {
	return []chains.Task{DetectTask{Year: t.Year, Source: t.Source, MinFlights: t.MinFlights}}
}

func (t PlotTask) Run(ctx *chains.Context) error {
	days, err := inputDays(ctx, 0)
	if err != nil {
		return err
	}
	ar, err := ctx.Source(t.Airports)
	if err != nil {
		return err
	}
	names, err := airportNames(ar)
	ar.Close()
	if err != nil {
		return err
	}
	groups := byAirport(days)
	jobs := make(chan []dayStats)
	results := make(chan plotResult)
	var wg sync.WaitGroup
	for range runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for g := range jobs {
				results <- t.plot(ctx, g, names)
			}
		}()
	}
	go func() {
		for _, g := range groups {
			if ctx.Context().Err() != nil {
				break
			}
			jobs <- g
		}
		close(jobs)
		wg.Wait()
		close(results)
	}()
	done := map[string]int{}
	var firstErr error
	for r := range results {
		if r.err != nil && firstErr == nil {
			firstErr = fmt.Errorf("plotting %s: %w", r.airport, r.err)
		}
		done[r.airport] = r.anomalies
		ctx.Progress(int64(len(done)), int64(len(groups)))
	}
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Context().Err(); err != nil {
		return err
	}
	w := bufio.NewWriter(ctx.Out())
	fmt.Fprintln(w, "airport,name,anomalies,artifact")
	for _, g := range groups {
		ap := g[0].Airport
		fmt.Fprintf(w, "%s,%q,%d,%s.png\n", ap, names[ap], done[ap], ap)
	}
	return w.Flush()
}

// plotResult is what drawing one airport gave.
type plotResult struct {
	airport   string
	anomalies int
	err       error
}

// plot draws one airport's PNG artifact and publishes it.
func (t PlotTask) plot(ctx *chains.Context, days []dayStats, names map[string]string) (r plotResult) {
	ap := days[0].Airport
	r.airport = ap
	for _, d := range days {
		if d.Anomaly {
			r.anomalies++
		}
	}
	title := fmt.Sprintf("%s %s: %d (%d anomalous days)", ap, names[ap], t.Year, r.anomalies)
	if names[ap] == "" {
		title = fmt.Sprintf("%s: %d (%d anomalous days)", ap, t.Year, r.anomalies)
	}
	w, err := ctx.Artifact(ap + ".png")
	if err != nil {
		r.err = err
		return r
	}
	if r.err = drawAirport(w, title, days); r.err != nil {
		w.Close()
		return r
	}
	if r.err = w.Close(); r.err != nil {
		return r
	}
	r.err = ctx.Publish(ap+".png", plotPath(t.Year, ap))
	return r
}

// byAirport splits the (sorted) summary into one slice per airport.
func byAirport(days []dayStats) [][]dayStats {
	var out [][]dayStats
	for i := 0; i < len(days); {
		j := i
		for j < len(days) && days[j].Airport == days[i].Airport {
			j++
		}
		out = append(out, days[i:j])
		i = j
	}
	return out
}

// LoadTask loads DetectTask's summary into PostgreSQL, the connection "warehouse"
// (NECTAR_CONN_WAREHOUSE=postgres://...): table airport_daily_delays (year, airport, day,
// flights, mean_delay, p95_delay, cancelled, z_score, is_anomaly), made if missing. The year is
// replaced in one transaction (DELETE, then COPY): a rerun leaves no duplicates, a failure
// leaves the previous rows.
type LoadTask struct {
	Year       int    `param:"year" default:"2001"`
	Source     string `param:"source" default:"datasets/flights/flights-3m.parquet"`
	MinFlights int    `param:"min_flights" default:"20"`
}

func (LoadTask) Connections() []string { return []string{"warehouse"} }

func (t LoadTask) Requires() []chains.Task {
	//lint:ignore S1016 spelled out: the parameters passed on are the point, and LoadTask may grow its own
	return []chains.Task{DetectTask{Year: t.Year, Source: t.Source, MinFlights: t.MinFlights}}
}

func (t LoadTask) Run(ctx *chains.Context) error {
	days, err := inputDays(ctx, 0)
	if err != nil {
		return err
	}
	dsn, err := ctx.Connection("warehouse")
	if err != nil {
		return err
	}
	n, err := load(ctx.Context(), dsn, t.Year, days)
	if err != nil {
		return err
	}
	ctx.Log().Info("loaded", "year", t.Year, "rows", n)
	_, err = fmt.Fprintf(ctx.Out(), "loaded %d rows of %d into airport_daily_delays\n", n, t.Year)
	return err
}

// ReportTask reads the loaded year back from PostgreSQL and writes the dashboard: the airports
// ranked by anomalous days, a national daily chart, and each airport's plot. One self-contained
// HTML artifact (dashboard.html: images inline, no request anywhere, so it works offline),
// published at reports/airline_delays/year=<year>/dashboard.html.
type ReportTask struct {
	Year       int    `param:"year" default:"2001"`
	Source     string `param:"source" default:"datasets/flights/flights-3m.parquet"`
	MinFlights int    `param:"min_flights" default:"20"`
	Airports   string `param:"airports" default:"datasets/flights/airports.csv"`
}

func (ReportTask) Connections() []string { return []string{"warehouse"} }

func (t ReportTask) Requires() []chains.Task {
	return []chains.Task{
		LoadTask{Year: t.Year, Source: t.Source, MinFlights: t.MinFlights},
		//lint:ignore S1016 spelled out, as for LoadTask
		PlotTask{Year: t.Year, Source: t.Source, MinFlights: t.MinFlights, Airports: t.Airports},
	}
}

func (t ReportTask) Run(ctx *chains.Context) error {
	index, err := ctx.Input(1) // PlotTask's list: airport, name, anomalies, artifact
	if err != nil {
		return err
	}
	recs, err := csv.NewReader(index).ReadAll()
	index.Close()
	if err != nil {
		return fmt.Errorf("reading PlotTask's list: %w", err)
	}
	names := map[string]string{}
	for _, rec := range recs[1:] {
		names[rec[0]] = rec[1]
	}
	dsn, err := ctx.Connection("warehouse")
	if err != nil {
		return err
	}
	airports, national, err := readBack(ctx.Context(), dsn, t.Year)
	if err != nil {
		return err
	}
	if len(airports) == 0 {
		return fmt.Errorf("airport_daily_delays has no rows of %d", t.Year)
	}
	data := dashboardData{Year: t.Year, MinFlights: t.MinFlights, National: nationalSVG(national)}
	for i := range airports {
		a := &airports[i]
		a.Name = names[a.Airport]
		data.Flights += a.Flights
		png, err := ctx.Source(plotPath(t.Year, a.Airport))
		if err != nil {
			return fmt.Errorf("the plot of %s: %w", a.Airport, err)
		}
		b, err := io.ReadAll(png)
		png.Close()
		if err != nil {
			return fmt.Errorf("the plot of %s: %w", a.Airport, err)
		}
		a.Plot = pngURI(b)
	}
	data.Airports = airports
	w, err := ctx.Artifact("dashboard.html")
	if err != nil {
		return err
	}
	if err := writeDashboard(w, data); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	if err := ctx.Publish("dashboard.html", fmt.Sprintf("reports/airline_delays/year=%d/dashboard.html", t.Year)); err != nil {
		return err
	}
	_, err = fmt.Fprintf(ctx.Out(), "dashboard of %d: %d airports, %d flights\n", t.Year, len(airports), data.Flights)
	return err
}

// plotPath is where PlotTask publishes an airport's plot.
func plotPath(year int, airport string) string {
	return fmt.Sprintf("reports/airline_delays/year=%d/airport=%s/daily.png", year, airport)
}

// YearlyReportTask is the job on its schedule: every 1 January (UTC) it runs ReportTask, and so
// the whole chain, for the year that just ended. The schedule's interval is a year; its start
// says which. source may name the year as {year}, for a data set with one file per year.
type YearlyReportTask struct {
	// The start of the year (the scheduler fills it in).
	YearStart time.Time `param:"year_start" required:"true"`
	Source    string    `param:"source" default:"datasets/flights/{year}.csv"`
}

func (YearlyReportTask) Schedule() chains.Schedule {
	return chains.Schedule{Cron: "@yearly"}
}

func (t YearlyReportTask) Requires() []chains.Task {
	year := t.YearStart.Year()
	return []chains.Task{ReportTask{Year: year, Source: strings.ReplaceAll(t.Source, "{year}", strconv.Itoa(year)),
		MinFlights: 20, Airports: "datasets/flights/airports.csv"}}
}

func (t YearlyReportTask) Run(ctx *chains.Context) error {
	b, err := ctx.ReadInput(0)
	if err != nil {
		return err
	}
	_, err = ctx.Out().Write(b)
	return err
}

// inputDays reads the daily summary that required task i wrote.
func inputDays(ctx *chains.Context, i int) ([]dayStats, error) {
	in, err := ctx.Input(i)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	return readDays(in)
}
