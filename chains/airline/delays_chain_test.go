package airline

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"image/png"
	"math"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"nectar/chains/chainstest"
)

// testFlight is one generated flight, written in both layouts.
type testFlight struct {
	day       time.Time
	origin    string
	delay     int64
	cancelled bool
}

// generate makes flights for 2001-01-01 and the 59 days after: ATL (about 60 a day) with one
// day 5 standard deviations late, ORD (about 40 a day), and TINY (3 a day: below min_flights);
// some cancellations, and a few flights of 2000 that extract must ignore. Daily means vary by a
// uniform offset, so no ordinary day can reach |z| > 3.
func generate(seed uint64) (flights []testFlight, spike time.Time) {
	rng := rand.New(rand.NewPCG(seed, 1))
	start := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	spike = start.AddDate(0, 0, 37)
	for _, ap := range []struct {
		name string
		n    int
	}{{"ATL", 60}, {"ORD", 40}, {"TINY", 3}} {
		for d := range 60 {
			day := start.AddDate(0, 0, d)
			offset := (rng.Float64()*2 - 1) * 3 // uniform: sd sqrt(3)
			if ap.name == "ATL" && day.Equal(spike) {
				offset = 5 * math.Sqrt(3) // 5 sigma of the ordinary days
			}
			for range ap.n + rng.IntN(5) {
				f := testFlight{day: day, origin: ap.name, delay: int64(math.Round(10 + offset + rng.NormFloat64()*0.5))}
				f.cancelled = rng.IntN(50) == 0
				flights = append(flights, f)
			}
		}
	}
	for range 20 {
		flights = append(flights, testFlight{day: start.AddDate(0, 0, -1), origin: "ATL", delay: 500})
	}
	return flights, spike
}

func kaggleCSV(flights []testFlight) string {
	var b strings.Builder
	w := csv.NewWriter(&b)
	w.Write([]string{"FL_DATE", "OP_CARRIER", "ORIGIN", "DEST", "DEP_DELAY", "CANCELLED", "DISTANCE"})
	for _, f := range flights {
		delay, cancelled := strconv.FormatInt(f.delay, 10)+".0", "0.0"
		if f.cancelled {
			delay, cancelled = "", "1.0"
		}
		w.Write([]string{f.day.Format(time.DateOnly), "DL", f.origin, "JFK", delay, cancelled, "760.0"})
	}
	w.Flush()
	return b.String()
}

type vegaRow struct {
	Date        *int64  `parquet:"date,optional,timestamp(microsecond)"`
	Delay       *int64  `parquet:"delay,optional"`
	Distance    *int64  `parquet:"distance,optional"`
	Origin      *string `parquet:"origin,optional"`
	Destination *string `parquet:"destination,optional"`
}

func vegaParquet(t *testing.T, flights []testFlight) string {
	var buf bytes.Buffer
	w := parquet.NewGenericWriter[vegaRow](&buf, parquet.MaxRowsPerRowGroup(1000))
	for i, f := range flights {
		// Times of day vary; the day is what counts.
		at := f.day.Add(time.Duration(i%1440) * time.Minute).UnixMicro()
		dist, dest, origin := int64(760), "JFK", f.origin
		row := vegaRow{Date: &at, Distance: &dist, Origin: &origin, Destination: &dest}
		if !f.cancelled {
			d := f.delay
			row.Delay = &d
		}
		if _, err := w.Write([]vegaRow{row}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// expected is the daily summary computed here, independently of the package's code.
func expected(flights []testFlight, year int) map[string][4]float64 {
	delays := map[string][]float64{}
	cancelled := map[string]int{}
	for _, f := range flights {
		if f.day.Year() != year {
			continue
		}
		k := f.origin + " " + f.day.Format(time.DateOnly)
		if f.cancelled {
			cancelled[k]++
			delays[k] = append(delays[k], []float64{}...)
			continue
		}
		delays[k] = append(delays[k], float64(f.delay))
	}
	out := map[string][4]float64{}
	for k, v := range delays {
		sort.Float64s(v)
		sum := 0.0
		for _, x := range v {
			sum += x
		}
		rank := 0.95 * float64(len(v)-1)
		lo, frac := math.Floor(rank), rank-math.Floor(rank)
		p95 := v[int(lo)]
		if frac > 0 {
			p95 += (v[int(lo)+1] - v[int(lo)]) * frac
		}
		out[k] = [4]float64{float64(len(v)), float64(cancelled[k]), sum / float64(len(v)), p95}
	}
	return out
}

func TestExtractAggregatesBothLayoutsAlike(t *testing.T) {
	flights, _ := generate(7)
	csvOut := chainstest.Run(t, ExtractTask{Year: 2001, Source: "datasets/f.csv"}, chainstest.Sources(map[string]string{"datasets/f.csv": kaggleCSV(flights)}))
	pqOut := chainstest.Run(t, ExtractTask{Year: 2001, Source: "datasets/f.parquet"}, chainstest.Sources(map[string]string{"datasets/f.parquet": vegaParquet(t, flights)}))
	if csvOut.Err != nil || pqOut.Err != nil {
		t.Fatalf("extract: csv %v, parquet %v\n%s", csvOut.Err, pqOut.Err, pqOut.Log)
	}
	if !bytes.Equal(csvOut.Out, pqOut.Out) {
		t.Errorf("the CSV and parquet layouts of the same flights give different summaries")
	}
	days, err := readDays(bytes.NewReader(pqOut.Out))
	if err != nil {
		t.Fatal(err)
	}
	want := expected(flights, 2001)
	if len(days) != len(want) {
		t.Errorf("%d airport-days, want %d", len(days), len(want))
	}
	for _, d := range days {
		w, ok := want[d.Airport+" "+d.Day.Format(time.DateOnly)]
		got := [4]float64{float64(d.Flights), float64(d.Cancelled), d.MeanDelay, d.P95Delay}
		if !ok || math.Abs(got[2]-w[2]) > 1e-9 || math.Abs(got[3]-w[3]) > 1e-9 || got[0] != w[0] || got[1] != w[1] {
			t.Errorf("%s %s: flights, cancelled, mean, p95 = %v, want %v", d.Airport, d.Day.Format(time.DateOnly), got, w)
		}
	}
}

func TestDetectFlagsTheInjectedDayOnly(t *testing.T) {
	flights, spike := generate(11)
	ex := chainstest.Run(t, ExtractTask{Year: 2001, Source: "datasets/f.csv"}, chainstest.Sources(map[string]string{"datasets/f.csv": kaggleCSV(flights)}))
	if ex.Err != nil {
		t.Fatal(ex.Err)
	}
	res := chainstest.Run(t, DetectTask{Year: 2001, Source: "datasets/f.csv", MinFlights: 20}, chainstest.InputBytes(ex.Out))
	if res.Err != nil {
		t.Fatalf("detect: %v\n%s", res.Err, res.Log)
	}
	days, err := readDays(bytes.NewReader(res.Out))
	if err != nil {
		t.Fatal(err)
	}
	var flagged []string
	airports := map[string]bool{}
	for _, d := range days {
		airports[d.Airport] = true
		if d.Anomaly {
			flagged = append(flagged, fmt.Sprintf("%s %s z=%.2f", d.Airport, d.Day.Format(time.DateOnly), d.Z))
		}
	}
	if want := "ATL " + spike.Format(time.DateOnly); len(flagged) != 1 || !strings.HasPrefix(flagged[0], want) {
		t.Errorf("flagged %v, want only %s", flagged, want)
	}
	if airports["TINY"] || !airports["ATL"] || !airports["ORD"] {
		t.Errorf("airports kept: %v, want ATL and ORD (TINY averages 3 flights a day)", airports)
	}
}

func TestExtractErrorsNameTheProblem(t *testing.T) {
	flights, _ := generate(3)
	for _, tc := range []struct {
		name, source, data, says string
	}{
		{"no flights that year", "datasets/f.csv", kaggleCSV(flights[:10]), "has no flights in 1999"},
		{"bad delay", "datasets/f.csv", "FL_DATE,ORIGIN,DEP_DELAY,CANCELLED\n2001-01-01,ATL,soon,0.0\n", "line 2: DEP_DELAY \"soon\" is not a number"},
		{"missing column", "datasets/f.csv", "FL_DATE,ORIGIN,CANCELLED\n", "no DEP_DELAY column"},
		{"not parquet", "datasets/f.parquet", "FL_DATE,ORIGIN\n", "not a parquet file"},
		{"other format", "datasets/f.json", "{}", "want a .parquet or a .csv"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			year := 2001
			if tc.name == "no flights that year" {
				year = 1999
			}
			res := chainstest.Run(t, ExtractTask{Year: year, Source: tc.source}, chainstest.Sources(map[string]string{tc.source: tc.data}))
			if res.Err == nil || !strings.Contains(res.Err.Error(), tc.says) {
				t.Errorf("err = %v, want it to say %q", res.Err, tc.says)
			}
		})
	}
}

func TestPlotDrawsEveryKeptAirport(t *testing.T) {
	flights, _ := generate(5)
	ex := chainstest.Run(t, ExtractTask{Year: 2001, Source: "d.csv"}, chainstest.Sources(map[string]string{"d.csv": kaggleCSV(flights)}))
	det := chainstest.Run(t, DetectTask{Year: 2001, Source: "d.csv", MinFlights: 20}, chainstest.InputBytes(ex.Out))
	if ex.Err != nil || det.Err != nil {
		t.Fatal(ex.Err, det.Err)
	}
	airports := "iata,name,city,state,country,latitude,longitude\nATL,William B Hartsfield-Atlanta Intl,Atlanta,GA,USA,33.64,-84.42\n"
	res := chainstest.Run(t, PlotTask{Year: 2001, Source: "d.csv", MinFlights: 20, Airports: "datasets/flights/airports.csv"},
		chainstest.InputBytes(det.Out), chainstest.Sources(map[string]string{"datasets/flights/airports.csv": airports}))
	if res.Err != nil {
		t.Fatalf("plot: %v\n%s", res.Err, res.Log)
	}
	if len(res.Artifacts) != 2 {
		t.Fatalf("artifacts %v, want ATL.png and ORD.png", keys(res.Artifacts))
	}
	for _, ap := range []string{"ATL", "ORD"} {
		img, err := png.Decode(bytes.NewReader(res.Artifacts[ap+".png"]))
		if err != nil {
			t.Fatalf("%s.png: %v", ap, err)
		}
		if b := img.Bounds(); b.Dx() != PlotWidthPx || b.Dy() != PlotHeightPx {
			t.Errorf("%s.png is %dx%d, want %dx%d", ap, b.Dx(), b.Dy(), PlotWidthPx, PlotHeightPx)
		}
		if got, want := res.Published[ap+".png"], "reports/airline_delays/year=2001/airport="+ap+"/daily.png"; got != want {
			t.Errorf("%s published at %q, want %q", ap, got, want)
		}
	}
	if !strings.Contains(string(res.Out), `ATL,"William B Hartsfield-Atlanta Intl, Atlanta GA",1,ATL.png`) {
		t.Errorf("index:\n%s", res.Out)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// The yearly task asks for the whole chain of the year its interval starts, from that year's file.
func TestYearlyReportRequiresTheYearsChain(t *testing.T) {
	req := YearlyReportTask{YearStart: time.Date(2009, 1, 1, 0, 0, 0, 0, time.UTC), Source: "datasets/flights/{year}.csv"}.Requires()
	want := ReportTask{Year: 2009, Source: "datasets/flights/2009.csv", MinFlights: 20, Airports: "datasets/flights/airports.csv"}
	if len(req) != 1 || req[0] != want {
		t.Errorf("Requires = %+v, want %+v", req, want)
	}
}
