package history

import (
	"context"
	"sync"
	"time"
)

// countCost is how many times the cost of a count an answer is reused for (see CountByStatus).
const countCost = 20

// maxCountFilters bounds the filters whose counts are kept; the one counted longest ago goes.
const maxCountFilters = 64

// counts keeps CountByStatus answers by filter (its zero value is ready).
type counts struct {
	mu      sync.Mutex
	entries map[Filter]*countEntry
	now     func() time.Time // time.Now; tests replace it
}

type countEntry struct {
	done   chan struct{} // closed once counts and err are set
	counts map[string]int64
	err    error
	at     time.Time // when the count ended
	until  time.Time // it serves until then
}

// CountByStatus counts the runs matching f (its Status ignored) by status, as the driver does,
// reusing an answer for countCost times what it cost: the runs page counts the history at
// every refresh, every 2 s for each open tab, and counting a history of a million runs scans
// it. A count that took 1 ms serves for 20 ms, one that took 200 ms for 4 s: counting takes at
// most a twentieth of the database's time however many pages are open, and a small history's
// counts are as good as exact. Readers asking at once share one count. The map is shared:
// callers must not change it.
func (x *Index) CountByStatus(ctx context.Context, f Filter) (map[string]int64, error) {
	return x.counts.get(ctx, x.d, f)
}

func (c *counts) get(ctx context.Context, d Driver, f Filter) (map[string]int64, error) {
	f.Status = ""
	now := time.Now
	if c.now != nil {
		now = c.now
	}
	c.mu.Lock()
	for { // mu held
		if c.entries == nil {
			c.entries = map[Filter]*countEntry{}
		}
		e := c.entries[f]
		if e == nil {
			break // counted below
		}
		select {
		case <-e.done:
			if e.err == nil && now().Before(e.until) {
				c.mu.Unlock()
				return e.counts, nil
			}
			delete(c.entries, f) // stale, or failed: counted below
			continue
		default:
		}
		c.mu.Unlock()
		select { // another reader is counting: its answer is as fresh
		case <-e.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if e.err == nil {
			return e.counts, nil
		}
		c.mu.Lock() // its count failed (its reader may have gone away): look again
	}
	if len(c.entries) >= maxCountFilters {
		var oldest Filter
		var at time.Time
		found := false
		for k, e := range c.entries {
			select {
			case <-e.done:
				if !found || e.at.Before(at) {
					oldest, at, found = k, e.at, true
				}
			default: // being counted: kept
			}
		}
		if found {
			delete(c.entries, oldest)
		}
	}
	e := &countEntry{done: make(chan struct{})}
	c.entries[f] = e
	c.mu.Unlock()

	start := now()
	res, err := d.CountByStatus(ctx, f)
	end := now()
	c.mu.Lock()
	e.counts, e.err, e.at, e.until = res, err, end, end.Add(countCost*end.Sub(start))
	close(e.done)
	if err != nil && c.entries[f] == e {
		delete(c.entries, f)
	}
	c.mu.Unlock()
	return res, err
}
