package airline

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// tableDDL creates the loaded table. The checks make a corrupt summary fail the load (and the
// transaction leaves the year's previous rows as they were).
const tableDDL = `CREATE TABLE IF NOT EXISTS airport_daily_delays (
	year       integer          NOT NULL,
	airport    text             NOT NULL,
	day        date             NOT NULL,
	flights    integer          NOT NULL CHECK (flights >= 0),
	mean_delay double precision NOT NULL,
	p95_delay  double precision NOT NULL,
	cancelled  integer          NOT NULL CHECK (cancelled >= 0),
	z_score    double precision NOT NULL,
	is_anomaly boolean          NOT NULL,
	PRIMARY KEY (year, airport, day)
)`

var tableColumns = []string{"year", "airport", "day", "flights", "mean_delay", "p95_delay", "cancelled", "z_score", "is_anomaly"}

// load replaces year's rows of airport_daily_delays with days, in one transaction: the old rows
// are deleted and the new ones bulk-loaded with COPY, so readers see the old year or the new
// one, a rerun leaves no duplicates, and a failure leaves the old rows.
func load(ctx context.Context, dsn string, year int, days []dayStats) (int64, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, fmt.Errorf("connecting to the warehouse: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, tableDDL); err != nil {
		return 0, fmt.Errorf("creating airport_daily_delays: %w", err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(context.Background()) // a no-op after Commit
	if _, err := tx.Exec(ctx, "DELETE FROM airport_daily_delays WHERE year = $1", year); err != nil {
		return 0, fmt.Errorf("removing the year's previous rows: %w", err)
	}
	n, err := tx.CopyFrom(ctx, pgx.Identifier{"airport_daily_delays"}, tableColumns, pgx.CopyFromSlice(len(days), func(i int) ([]any, error) {
		d := days[i]
		return []any{year, d.Airport, d.Day, d.Flights, d.MeanDelay, d.P95Delay, d.Cancelled, d.Z, d.Anomaly}, nil
	}))
	if err != nil {
		return 0, fmt.Errorf("loading the rows (COPY): %w", err)
	}
	return n, tx.Commit(ctx)
}
