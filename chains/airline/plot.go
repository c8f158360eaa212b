package airline

import (
	"encoding/csv"
	"errors"
	"fmt"
	"image/color"
	"image/png"
	"io"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Plot size: 1200 x 700 pixels at 96 dpi.
const (
	plotWidth  = 12.5 * vg.Inch
	plotHeight = 7.2917 * vg.Inch
	plotDPI    = 96
	// PlotPixels is the size of each airport's PNG.
	PlotWidthPx, PlotHeightPx = 1200, 700
)

// airportNames reads airports.csv (iata, name, city, state, ...) into "Name, City ST" by code.
func airportNames(r io.Reader) (map[string]string, error) {
	cr := csv.NewReader(r)
	recs, err := cr.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("airports: %w", err)
	}
	if len(recs) == 0 || len(recs[0]) < 4 || !strings.EqualFold(recs[0][0], "iata") {
		return nil, errors.New("airports: want the columns iata, name, city, state and more")
	}
	out := make(map[string]string, len(recs))
	for _, rec := range recs[1:] {
		out[rec[0]] = fmt.Sprintf("%s, %s %s", rec[1], rec[2], rec[3])
	}
	return out, nil
}

var (
	red  = color.RGBA{R: 196, G: 39, B: 28, A: 255}
	blue = color.RGBA{R: 11, G: 99, B: 201, A: 255}
	gold = color.RGBA{R: 154, G: 91, A: 255}
)

// drawAirport draws one airport's year: flights per day above, mean delay below, anomalous
// days marked in red on both; PNG.
func drawAirport(w io.Writer, title string, days []dayStats) error {
	flights := make(plotter.XYs, 0, len(days))
	delays := make(plotter.XYs, 0, len(days))
	var odd plotter.XYs
	var oddDelay plotter.XYs
	for _, d := range days {
		x := float64(d.Day.Unix())
		flights = append(flights, plotter.XY{X: x, Y: float64(d.Flights)})
		if d.Flights > 0 {
			delays = append(delays, plotter.XY{X: x, Y: d.MeanDelay})
		}
		if d.Anomaly {
			odd = append(odd, plotter.XY{X: x, Y: float64(d.Flights)})
			oddDelay = append(oddDelay, plotter.XY{X: x, Y: d.MeanDelay})
		}
	}
	top, err := panel(title, "flights per day", flights, odd, blue)
	if err != nil {
		return err
	}
	bottom, err := panel("", "mean departure delay (min)", delays, oddDelay, gold)
	if err != nil {
		return err
	}
	bottom.X.Label.Text = "red: anomalous days, |z| > 3 (z of the day's mean delay among the airport's days)"
	img := vgimg.NewWith(vgimg.UseWH(plotWidth, plotHeight), vgimg.UseDPI(plotDPI))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadTop: vg.Points(4), PadBottom: vg.Points(4), PadX: vg.Points(6), PadY: vg.Points(10)}
	canvases := plot.Align([][]*plot.Plot{{top}, {bottom}}, tiles, dc)
	top.Draw(canvases[0][0])
	bottom.Draw(canvases[1][0])
	// BestSpeed: the default compression takes about half of a plot's time, for files a third
	// smaller; plots are drawn once and read a few times.
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	return enc.Encode(w, img.Image())
}

func panel(title, ylabel string, line, marks plotter.XYs, c color.Color) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = ylabel
	p.X.Tick.Marker = monthTicks{}
	p.Add(plotter.NewGrid())
	l, err := plotter.NewLine(line)
	if err != nil {
		return nil, err
	}
	l.Color = c
	p.Add(l)
	if len(marks) > 0 {
		s, err := plotter.NewScatter(marks)
		if err != nil {
			return nil, err
		}
		s.Color, s.Radius, s.Shape = red, vg.Points(4), draw.CircleGlyph{}
		p.Add(s)
	}
	return p, nil
}

// monthTicks labels the first of each month, with minor ticks a week apart.
type monthTicks struct{}

func (monthTicks) Ticks(min, max float64) []plot.Tick {
	var ticks []plot.Tick
	at := func(t time.Time) float64 { return float64(t.Unix()) }
	lo, hi := time.Unix(int64(min), 0).UTC(), time.Unix(int64(max), 0).UTC()
	for m := time.Date(lo.Year(), lo.Month(), 1, 0, 0, 0, 0, time.UTC); !m.After(hi); m = m.AddDate(0, 1, 0) {
		if !m.Before(lo) {
			ticks = append(ticks, plot.Tick{Value: at(m), Label: m.Format("Jan 2")})
		}
		for d := m.AddDate(0, 0, 7); d.Month() == m.Month() && !d.After(hi); d = d.AddDate(0, 0, 7) {
			if !d.Before(lo) {
				ticks = append(ticks, plot.Tick{Value: at(d)})
			}
		}
	}
	return ticks
}
