package airline

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
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

// parquetFlight is a row of vega-datasets' flights-3m.parquet. It has no cancellation column:
// a flight without a delay counts as cancelled.
type parquetFlight struct {
	Date   *int64  `parquet:"date,optional"` // TIMESTAMP(MICROS), wall time
	Delay  *int64  `parquet:"delay,optional"`
	Origin *string `parquet:"origin,optional"`
}

// readParquet calls each for every flight of f, one row group at a time (memory stays bounded
// by a row group, not the file).
func readParquet(f *os.File, each func(flight) error) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	pf, err := parquet.OpenFile(f, fi.Size())
	if err != nil {
		return fmt.Errorf("not a parquet file: %w", err)
	}
	for _, col := range []string{"date", "delay", "origin"} {
		if _, ok := pf.Schema().Lookup(col); !ok {
			return fmt.Errorf("the parquet file has no %q column (want date, delay, origin)", col)
		}
	}
	r := parquet.NewGenericReader[parquetFlight](f)
	defer r.Close()
	buf := make([]parquetFlight, 4096)
	for {
		n, err := r.Read(buf)
		for _, row := range buf[:n] {
			if row.Date == nil || row.Origin == nil {
				continue
			}
			fl := flight{day: time.UnixMicro(*row.Date).UTC().Truncate(24 * time.Hour), origin: *row.Origin}
			if row.Delay == nil {
				fl.cancelled = true
			} else {
				fl.delay = float64(*row.Delay)
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
