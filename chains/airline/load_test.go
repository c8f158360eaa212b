package airline

import (
	"bytes"
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"nectar/chains/chainstest"
	"nectar/server/history/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// The load on a real PostgreSQL: the table holds exactly the summary, a rerun replaces the
// year without duplicates, and a load that fails midway leaves the previous rows intact.
func TestLoadReplacesTheYearAtomically(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	flights, _ := generate(13)
	ex := chainstest.Run(t, ExtractTask{Year: 2001, Source: "d.csv"}, chainstest.Sources(map[string]string{"d.csv": kaggleCSV(flights)}))
	det := chainstest.Run(t, DetectTask{Year: 2001, Source: "d.csv", MinFlights: 20}, chainstest.InputBytes(ex.Out))
	if ex.Err != nil || det.Err != nil {
		t.Fatal(ex.Err, det.Err)
	}
	want, err := readDays(bytes.NewReader(det.Out))
	if err != nil {
		t.Fatal(err)
	}
	run := func(summary []byte) chainstest.Result {
		return chainstest.Run(t, LoadTask{Year: 2001, Source: "d.csv", MinFlights: 20}, chainstest.InputBytes(summary),
			chainstest.Connections(map[string]string{"warehouse": dsn}))
	}
	for i := range 2 { // the second run replaces the first
		if res := run(det.Out); res.Err != nil {
			t.Fatalf("load %d: %v\n%s", i+1, res.Err, res.Log)
		}
		checkTable(t, dsn, want)
	}
	// A summary with a corrupt row near its end: the COPY fails, the year keeps its rows.
	bad := bytes.Replace(det.Out, []byte("\nORD,2001-03-01,"), []byte("\nORD,2001-03-01,-"), 1)
	if bytes.Equal(bad, det.Out) {
		t.Fatal("the test's corrupt row was not made")
	}
	if res := run(bad); res.Err == nil || !strings.Contains(res.Err.Error(), "COPY") {
		t.Fatalf("a corrupt load = %v, want a COPY error", res.Err)
	}
	checkTable(t, dsn, want)
}

// checkTable compares the year's rows with the summary, value for value.
func checkTable(t *testing.T, dsn string, want []dayStats) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT airport, day, flights, mean_delay, p95_delay, cancelled, z_score, is_anomaly FROM airport_daily_delays WHERE year = 2001 ORDER BY airport, day")
	if err != nil {
		t.Fatal(err)
	}
	var got []dayStats
	for rows.Next() {
		var d dayStats
		if err := rows.Scan(&d.Airport, &d.Day, &d.Flights, &d.MeanDelay, &d.P95Delay, &d.Cancelled, &d.Z, &d.Anomaly); err != nil {
			t.Fatal(err)
		}
		got = append(got, d)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("the table has %d rows of 2001, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Airport != w.Airport || !g.Day.Equal(w.Day.UTC().Truncate(24*time.Hour)) || g.Flights != w.Flights || g.Cancelled != w.Cancelled ||
			g.Anomaly != w.Anomaly || math.Abs(g.MeanDelay-w.MeanDelay) > 1e-12 || math.Abs(g.P95Delay-w.P95Delay) > 1e-12 || math.Abs(g.Z-w.Z) > 1e-12 {
			t.Fatalf("row %d = %+v, want %+v", i, g, w)
		}
	}
}

// The dashboard reads the loaded rows back: airports ranked by anomalous days, each with its
// plot inline, a national chart, and nothing fetched from anywhere.
func TestReportReadsTheLoadedYearBack(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	flights, spike := generate(17)
	conns := chainstest.Connections(map[string]string{"warehouse": dsn})
	ex := chainstest.Run(t, ExtractTask{Year: 2001, Source: "d.csv"}, chainstest.Sources(map[string]string{"d.csv": kaggleCSV(flights)}))
	det := chainstest.Run(t, DetectTask{Year: 2001, Source: "d.csv", MinFlights: 20}, chainstest.InputBytes(ex.Out))
	airports := "iata,name,city,state,country,latitude,longitude\nATL,Hartsfield,Atlanta,GA,USA,0,0\nORD,O'Hare,Chicago,IL,USA,0,0\n"
	plot := chainstest.Run(t, PlotTask{Year: 2001, Source: "d.csv", MinFlights: 20, Airports: "a.csv"}, chainstest.InputBytes(det.Out),
		chainstest.Sources(map[string]string{"a.csv": airports}))
	ld := chainstest.Run(t, LoadTask{Year: 2001, Source: "d.csv", MinFlights: 20}, chainstest.InputBytes(det.Out), conns)
	for _, r := range []chainstest.Result{ex, det, plot, ld} {
		if r.Err != nil {
			t.Fatalf("%v\n%s", r.Err, r.Log)
		}
	}
	pngs := map[string]string{}
	for name, b := range plot.Artifacts {
		pngs[plotPath(2001, strings.TrimSuffix(name, ".png"))] = string(b)
	}
	rep := chainstest.Run(t, ReportTask{Year: 2001, Source: "d.csv", MinFlights: 20, Airports: "a.csv"},
		chainstest.InputBytes(ld.Out, plot.Out), conns, chainstest.Sources(pngs))
	if rep.Err != nil {
		t.Fatalf("report: %v\n%s", rep.Err, rep.Log)
	}
	html := string(rep.Artifacts["dashboard.html"])
	if rep.Published["dashboard.html"] != "reports/airline_delays/year=2001/dashboard.html" {
		t.Errorf("published at %q", rep.Published["dashboard.html"])
	}
	atl, ord := strings.Index(html, `<td><a href="#ATL">ATL</a></td><td>Hartsfield, Atlanta GA</td><td>1</td>`), strings.Index(html, `<td><a href="#ORD">ORD</a></td>`)
	if atl < 0 || ord < 0 || atl > ord {
		t.Errorf("the ranking does not put ATL (1 anomalous day) first, then ORD (0)")
	}
	if !strings.Contains(html, spike.Format("Jan 2")) {
		t.Errorf("ATL's worst day %s is not named", spike.Format("Jan 2"))
	}
	if n := strings.Count(html, `<img src="data:image/png;base64,`); n != 2 {
		t.Errorf("%d inline plots, want 2", n)
	}
	if !strings.Contains(html, `<svg class="national"`) || strings.Count(html, `class="bar"`) != 60 {
		t.Errorf("the national chart is missing or has not one bar per day")
	}
	for _, external := range []string{`src="http`, `href="http`, `url(http`, "<script"} {
		if strings.Contains(html, external) {
			t.Errorf("the dashboard is not self-contained: it has %s", external)
		}
	}
}
