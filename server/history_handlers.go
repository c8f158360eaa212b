package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"nectar/chains/params"
	"nectar/server/catalog"
	"nectar/server/history"
	"nectar/targets"
)

// ErrHistoryOff is a history request to a server whose run history is turned off.
var ErrHistoryOff = errors.New("the run history is off on this server (NECTAR_DATABASE_URL=off)")

// runItem is one run in a list answer: the index row, with its status URL and its own URL.
type runItem struct {
	history.Entry
	URL       string `json:"url"`
	StatusURL string `json:"status_url"`
}

// historyTimeout bounds one history query: a slow database answers 503, not a hung request.
const historyTimeout = 5 * time.Second

// listRuns answers GET /api/runs: runs newest first, filtered, a page at a time.
func (s *Server) listRuns(c echo.Context) error {
	if s.history == nil {
		return ErrHistoryOff
	}
	q, err := catalog.ParseRawQuery(c.Request().URL.RawQuery) // (a pair it cannot read is not dropped)
	if err != nil {
		return err
	}
	p, withCounts, err := history.ParseQuery(q)
	if err != nil {
		return err
	}
	page, counts, err := s.pageOfRuns(c.Request().Context(), p, withCounts, false)
	if err != nil {
		return err
	}
	items := make([]runItem, len(page.Entries))
	for i, e := range page.Entries {
		items[i] = runItem{Entry: e, URL: "/api/runs/" + e.RunID, StatusURL: s.statusURL(e.Key)}
	}
	data := map[string]any{"runs": items, "next_cursor": page.Next, "rebuilding": s.rebuilding.Load()}
	if withCounts {
		data["counts"] = counts
	}
	return respond(c, http.StatusOK, count(len(items), "run"), data)
}

// pageOfRuns is a page of the history and, with counts, the counts by status for its filter:
// what GET /api/runs and the UI's runs page both show. The page refreshing itself every 2 s
// takes counts a moment old (Index.CountByStatus: they may cost a scan of the history); the
// API counts when asked.
func (s *Server) pageOfRuns(ctx context.Context, p history.ListParams, counts, reuseCounts bool) (history.Page, map[string]int64, error) {
	if s.history == nil {
		return history.Page{}, nil, ErrHistoryOff
	}
	ctx, cancel := context.WithTimeout(ctx, historyTimeout)
	defer cancel()
	if p.Key != "" { // a client asking for the run it just POSTed (trigger, then status)
		s.settleHistory(ctx)
	}
	d := s.history.Driver()
	page, err := history.ListPage(ctx, d, p)
	if err != nil {
		return page, nil, s.historyErr(err)
	}
	if !counts {
		return page, nil, nil
	}
	count := d.CountByStatus
	if reuseCounts {
		count = s.history.CountByStatus
	}
	c, err := count(ctx, p.Filter)
	if err != nil {
		return page, nil, s.historyErr(err)
	}
	return page, c, nil
}

// getRun answers GET /api/runs/<run_id>.
func (s *Server) getRun(c echo.Context) error {
	if s.history == nil {
		return ErrHistoryOff
	}
	id := c.Param("run_id")
	if len(id) > 64 || !history.Text(id) {
		return &params.Error{Param: "run_id", Value: id, Reason: "is not a run id"}
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), historyTimeout)
	defer cancel()
	s.settleHistory(ctx)
	e, err := s.history.Driver().Get(ctx, id)
	if errors.Is(err, history.ErrNotFound) {
		return newError(ErrUnknownRun, fmt.Sprintf("no run %q in the history (see /api/runs)", id))
	}
	if err != nil {
		return s.historyErr(err)
	}
	return respond(c, http.StatusOK, e.Task+" "+e.Status, runItem{Entry: e, URL: "/api/runs/" + e.RunID, StatusURL: s.statusURL(e.Key)})
}

// settleWait bounds how long a read waits for settleHistory.
const settleWait = time.Second

// settleHistory writes what changed since the write loop's last batch, so that a read of one
// run or key finds a run this server reported a moment ago (it is reported once this server
// holds its lease, before its POST is answered). Only such reads do: a list of every run does
// not turn each read into a write. It waits at most settleWait (behind a batch being written,
// or a slow database); a write that fails is the loop's to log and retry, and the read goes on
// with what is stored.
func (s *Server) settleHistory(ctx context.Context) {
	done := make(chan struct{})
	go func() { // not cut short by the read's end: a batch half written is written again
		defer close(done)
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		s.history.Flush(fctx)
	}()
	t := time.NewTimer(settleWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	case <-ctx.Done():
	}
}

// ErrUnknownRun is a run id the history does not hold.
var ErrUnknownRun = errors.New("unknown run")

// historyErr marks a failed history query as the database being unavailable (503).
func (s *Server) historyErr(err error) error {
	s.metrics.HistoryError()
	return fmt.Errorf("run history: %w", targets.Unavailable(err))
}
