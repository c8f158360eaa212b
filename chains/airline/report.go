package airline

import (
	"context"
	"encoding/base64"
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// airportRow is one airport of the dashboard's ranking, read back from the warehouse.
type airportRow struct {
	Airport   string
	Name      string
	Anomalies int
	Days      int
	Flights   int64
	MeanDelay float64
	Worst     time.Time // the day of the largest |z|
	WorstZ    float64
	Plot      template.URL // data: URI of its PNG ("" if none)
}

// nationalDay is the whole country's day: flights and the flight-weighted mean delay.
type nationalDay struct {
	Day       time.Time
	Flights   int64
	MeanDelay float64
}

// readBack queries the loaded year: airports ranked by anomalous days, and the national days.
func readBack(ctx context.Context, dsn string, year int) ([]airportRow, []nationalDay, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to the warehouse: %w", err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `
		SELECT airport, count(*) FILTER (WHERE is_anomaly), count(*), sum(flights),
		       coalesce(sum(mean_delay * flights) / nullif(sum(flights), 0), 0),
		       (array_agg(day ORDER BY abs(z_score) DESC))[1], max(abs(z_score))
		FROM airport_daily_delays WHERE year = $1
		GROUP BY airport ORDER BY 2 DESC, airport`, year)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the airports back: %w", err)
	}
	aps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (airportRow, error) {
		var a airportRow
		err := r.Scan(&a.Airport, &a.Anomalies, &a.Days, &a.Flights, &a.MeanDelay, &a.Worst, &a.WorstZ)
		return a, err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("reading the airports back: %w", err)
	}
	rows, err = conn.Query(ctx, `
		SELECT day, sum(flights), coalesce(sum(mean_delay * flights) / nullif(sum(flights), 0), 0)
		FROM airport_daily_delays WHERE year = $1 GROUP BY day ORDER BY day`, year)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the days back: %w", err)
	}
	days, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (nationalDay, error) {
		var d nationalDay
		err := r.Scan(&d.Day, &d.Flights, &d.MeanDelay)
		return d, err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("reading the days back: %w", err)
	}
	return aps, days, nil
}

func pngURI(b []byte) template.URL {
	return template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(b))
}

// nationalSVG draws the national days as an inline SVG: flights as bars, mean delay as a line.
func nationalSVG(days []nationalDay) template.HTML {
	const w, h, pad = 1100.0, 260.0, 30.0
	if len(days) == 0 {
		return ""
	}
	var maxF int64
	minD, maxD := math.Inf(1), math.Inf(-1)
	for _, d := range days {
		maxF = max(maxF, d.Flights)
		minD, maxD = math.Min(minD, d.MeanDelay), math.Max(maxD, d.MeanDelay)
	}
	if maxD == minD {
		maxD = minD + 1
	}
	step := (w - 2*pad) / float64(len(days))
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="national" viewBox="0 0 %.0f %.0f" role="img" aria-label="Flights and mean delay per day, all airports">`, w, h)
	for i, d := range days {
		bh := (h - 2*pad) * float64(d.Flights) / float64(max(maxF, 1))
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" class="bar"><title>%s: %d flights, mean delay %.1f min</title></rect>`,
			pad+float64(i)*step, h-pad-bh, math.Max(step-1, 0.5), bh, d.Day.Format("Jan 2"), d.Flights, d.MeanDelay)
	}
	var pts []string
	for i, d := range days {
		y := h - pad - (h-2*pad)*(d.MeanDelay-minD)/(maxD-minD)
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", pad+(float64(i)+0.5)*step, y))
	}
	fmt.Fprintf(&b, `<polyline class="delay" points="%s"/>`, strings.Join(pts, " "))
	fmt.Fprintf(&b, `<text x="%.0f" y="18">bars: flights per day (max %d) · line: flight-weighted mean delay (%.1f to %.1f min)</text></svg>`, pad, maxF, minD, maxD)
	return template.HTML(b.String())
}

var dashboard = template.Must(template.New("dashboard").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Airline delays {{.Year}}: anomalous days per airport</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; color: #1d2330; margin: 1.5rem; max-width: 1200px; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
table { border-collapse: collapse; } th, td { padding: .3rem .6rem; border-bottom: 1px solid #e3e6eb; text-align: right; }
th:first-child, td:first-child, th:nth-child(2), td:nth-child(2) { text-align: left; }
.muted { color: #667085; } svg.national { width: 100%; height: auto; background: #fbfbfc; border: 1px solid #e3e6eb; }
svg .bar { fill: #c9d7ee; } svg .delay { fill: none; stroke: #9a5b00; stroke-width: 1.5; } svg text { font: 12px system-ui; fill: #667085; }
figure { margin: 1.5rem 0; } figure img { max-width: 100%; border: 1px solid #e3e6eb; }
</style></head><body>
<h1>Airline delays {{.Year}}: anomalous days per airport</h1>
<p class="muted">{{.Flights}} flights at {{len .Airports}} airports (averaging at least {{.MinFlights}} flights a day), read back from PostgreSQL (airport_daily_delays). A day is anomalous when its mean departure delay lies more than 3 standard deviations from the airport's usual day. This page works offline.</p>
<h2>All airports, day by day</h2>
{{.National}}
<h2>Airports ranked by anomalous days</h2>
<table><thead><tr><th>Airport</th><th>Name</th><th>Anomalous days</th><th>Days</th><th>Flights</th><th>Mean delay (min)</th><th>Worst day</th><th>z</th></tr></thead><tbody>
{{range .Airports}}<tr><td><a href="#{{.Airport}}">{{.Airport}}</a></td><td>{{.Name}}</td><td>{{.Anomalies}}</td><td>{{.Days}}</td><td>{{.Flights}}</td><td>{{printf "%.1f" .MeanDelay}}</td><td>{{.Worst.Format "Jan 2"}}</td><td>{{printf "%.1f" .WorstZ}}</td></tr>
{{end}}</tbody></table>
<h2>Each airport</h2>
{{range .Airports}}<figure id="{{.Airport}}">{{if .Plot}}<img src="{{.Plot}}" alt="{{.Airport}}: flights and mean delay per day, anomalous days in red" width="1200" height="700" loading="lazy">{{else}}<p class="muted">{{.Airport}}: no plot</p>{{end}}</figure>
{{end}}
</body></html>
`))

type dashboardData struct {
	Year, MinFlights int
	Flights          int64
	Airports         []airportRow
	National         template.HTML
}

func writeDashboard(w io.Writer, d dashboardData) error { return dashboard.Execute(w, d) }
