package airline

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/parquet-go/parquet-go"
)

// flight is one row of either layout, reduced to what the job uses.
type flight struct {
	day       time.Time // midnight UTC of the flight's date
	origin    string
	delay     float64 // departure delay, minutes
	cancelled bool
}

// readParquet aggregates the flights of f (vega-datasets' layout: date, a TIMESTAMP in micro-
// seconds of wall time; delay; origin) for year, its row groups shared among the cores (a row
// group at a time each: memory stays bounded by a few row groups, not the file). The layout has
// no cancellation column: a flight without a delay counts as cancelled.
func readParquet(f *os.File, year int) (*aggregator, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	pf, err := parquet.OpenFile(f, fi.Size())
	if err != nil {
		return nil, fmt.Errorf("not a parquet file: %w", err)
	}
	for _, col := range []string{"date", "delay", "origin"} {
		if _, ok := pf.Schema().Lookup(col); !ok {
			return nil, fmt.Errorf("the parquet file has no %q column (want date, delay, origin)", col)
		}
	}
	groups := pf.RowGroups()
	workers := min(runtime.NumCPU(), len(groups))
	aggs := make([]*aggregator, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		aggs[w] = newAggregator(year)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for g := w; g < len(groups) && errs[w] == nil; g += workers {
				errs[w] = readRowGroup(groups[g], aggs[w].add)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for _, a := range aggs[1:] {
		aggs[0].merge(a)
	}
	return aggs[0], nil
}

// readRowGroup calls each for every flight of one row group. Rows are read raw, in the file's
// own schema (no conversion to a Go struct: three times faster), columns found by name.
func readRowGroup(rg parquet.RowGroup, each func(flight) error) error {
	schema := rg.Schema()
	col := func(name string) int {
		leaf, _ := schema.Lookup(name)
		return leaf.ColumnIndex
	}
	iDate, iDelay, iOrigin := col("date"), col("delay"), col("origin")
	rows := rg.Rows()
	defer rows.Close()
	buf := make([]parquet.Row, 1024)
	names := map[string]string{}
	for {
		n, err := rows.ReadRows(buf)
		for _, row := range buf[:n] {
			var date, delay, origin parquet.Value
			for _, v := range row {
				switch v.Column() {
				case iDate:
					date = v
				case iDelay:
					delay = v
				case iOrigin:
					origin = v
				}
			}
			if date.IsNull() || origin.IsNull() {
				continue
			}
			code, ok := names[string(origin.ByteArray())] // no allocation for a code seen before
			if !ok {
				code = string(origin.ByteArray())
				names[code] = code
			}
			fl := flight{day: time.UnixMicro(date.Int64()).UTC().Truncate(24 * time.Hour), origin: code}
			if delay.IsNull() {
				fl.cancelled = true
			} else {
				fl.delay = float64(delay.Int64())
			}
			if err := each(fl); err != nil {
				return err
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// readKaggleCSV calls each for every flight of a yearly CSV of the Kaggle data set "Airline
// Delay and Cancellation Data, 2009-2018" (FL_DATE, ORIGIN, DEP_DELAY, CANCELLED, ...),
// streaming it. Errors name the line.
func readKaggleCSV(r io.Reader, each func(flight) error) error {
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err != nil {
		return fmt.Errorf("reading the CSV header: %w", err)
	}
	col := map[string]int{}
	for i, h := range header {
		col[strings.TrimSpace(strings.ToUpper(h))] = i
	}
	need := []string{"FL_DATE", "ORIGIN", "DEP_DELAY", "CANCELLED"}
	for _, c := range need {
		if _, ok := col[c]; !ok {
			return fmt.Errorf("the CSV has no %s column (want the Kaggle layout: %s, ...)", c, strings.Join(need, ", "))
		}
	}
	iDate, iOrigin, iDelay, iCancelled := col["FL_DATE"], col["ORIGIN"], col["DEP_DELAY"], col["CANCELLED"]
	for line := 2; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("line %d: %w", line, err)
		}
		day, err := time.Parse(time.DateOnly, rec[iDate])
		if err != nil {
			return fmt.Errorf("line %d: FL_DATE %q is not a date (2006-01-02)", line, rec[iDate])
		}
		fl := flight{day: day, origin: rec[iOrigin]}
		cancelled, err := strconv.ParseFloat(strings.TrimSpace(rec[iCancelled]), 64)
		if err != nil {
			return fmt.Errorf("line %d: CANCELLED %q is not 0 or 1", line, rec[iCancelled])
		}
		fl.cancelled = cancelled != 0
		if !fl.cancelled {
			d := strings.TrimSpace(rec[iDelay])
			if d == "" { // neither cancelled nor timed (a diversion): left out
				continue
			}
			if fl.delay, err = strconv.ParseFloat(d, 64); err != nil {
				return fmt.Errorf("line %d: DEP_DELAY %q is not a number", line, rec[iDelay])
			}
		}
		if err := each(fl); err != nil {
			return err
		}
	}
}
